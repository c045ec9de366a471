"""OpenStack Cinder volume driver for the acmenfs appliance."""
