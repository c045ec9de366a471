"""NFSv3 (RFC 1813) and MOUNT v3 programs: procedures, attributes, handles, errors."""
