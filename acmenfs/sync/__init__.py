"""Synchronization primitives shared by the NFS server and its helpers.

Owns ``CounterWait`` (wait for a monotonically increasing counter, from threads or
asyncio).  Must not import from the protocol or file-system layers.
"""

from acmenfs.sync.counterwait import CounterWait

__all__ = ["CounterWait"]
