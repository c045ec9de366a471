"""File-system backends: the only code that touches files on behalf of NFS clients.

``backend``: the interface and its vocabulary; ``local``: the local-directory
backend; ``nodes``: open objects and the fd cache; ``kernel_handles`` /
``pathtable``: persistent handles (root / not root); ``credentials``: acting
as the caller per thread; ``quota``: per-export usage; ``commit``: group
commit and early write-back; ``nonblocking``: what may run on the event loop.
Nothing here knows about XDR, RPC or sockets.
"""
