"""File-system backends: the only code that touches files on behalf of NFS clients."""
