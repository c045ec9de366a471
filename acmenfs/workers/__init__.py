"""Multi-process NFS: a supervisor and N worker processes (``--workers N``).

The parent process (``supervisor``) owns the listening sockets, accepts every
connection, peeks at its first RPC call header and hands the descriptor to one
worker (``routing``, ``acceptor``, ``channel``).  Each worker (``worker``) is a
fresh interpreter running an ``NfsServer`` that listens nowhere and adopts the
connections it is given.  The supervisor also keeps every worker's export table,
write verifier and quota accounting consistent, restarts dead workers and adds
up their statistics (``stats``, ``metrics``).  ``policy`` decides how many
workers a configuration may run.  See docs/workers.md.
"""
