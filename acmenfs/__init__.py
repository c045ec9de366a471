"""acmenfs: an NFS storage appliance in Python and the Cinder driver that uses it.

Subpackages: ``oncrpc`` (XDR, ONC RPC, duplicate request cache, transports),
``sync`` (CounterWait), ``fs`` (file-system backends), ``nfs3`` (NFSv3 and MOUNT
programs), ``appliance`` (shares, snapshots, clones, REST API), ``cinder`` (the
OpenStack Cinder volume driver) and ``cli`` (the ``acmenfs`` command).
"""

__version__ = "0.1.0"
