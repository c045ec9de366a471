"""The data part of a READ reply (NFSv3 READ, NFSv4 READ), built from what a backend's ``read`` returned.

Owns one translation, shared by ``acmenfs.nfs3.procs_data`` and ``acmenfs.nfs4.ops_io``:
a backend ``read`` answers ``(data, count, eof, attributes)`` where ``data`` is either

- a ``bytearray``: a small read already copied from the page cache on the event loop;
- an object with ``fileno()`` (the node): on the event loop the range is in the page cache
  and goes out as a ``FileRegion`` (sendfile, no copy through Python); in the thread pool
  (cold data) it is read here with ``backend.read_bytes`` so sendfile never waits for the
  disk on the event loop, and a short read (the file shrank) lowers the count and sets eof.

The result is the list of reply parts after the caller's header (data, then XDR padding
to a multiple of 4; no empty part, each costs a write) with the count and eof the header
must carry.  Knows nothing of XDR beyond the padding.
"""

from __future__ import annotations

from acmenfs.oncrpc.dispatch import FileRegion

_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")


def read_parts(backend, data, offset: int, count: int, eof: bool, inline: bool) -> tuple[list, int, bool]:
    """-> (reply parts after the header, count, eof) for a backend read result ``(data, count, eof)``.

    ``inline``: the call runs on the event loop (``acmenfs.fs.nonblocking.inline_active()``)."""
    if type(data) is bytearray:
        parts = [data]
    elif not count:
        return [], 0, eof
    elif inline:
        parts = [FileRegion(data, offset, count)]
    else:
        copied = backend.read_bytes(data, offset, count)
        if len(copied) < count:
            count, eof = len(copied), True
        parts = [copied]
    if count & 3:
        parts.append(_PADDING[count & 3])
    return parts, count, eof
