"""The appliance: shares, snapshots, clones, store, storage backends, REST API."""
