"""NFSv4.0/4.1/4.2 (program 100003 version 4) on the NFSv3 server's port: see docs/nfs4-design.md."""
