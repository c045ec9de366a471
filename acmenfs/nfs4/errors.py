"""Errors of the NFSv4 layer: ``Nfs4Error``, ``SlotReplay`` and exception -> nfsstat4.

Owns the mapping of every exception an operation may meet (the v3 ``NfsError``
raised by the shared scope code, backend ``StaleHandle``/``BadHandle``, an
``OSError``'s errno, an ``XdrError``) to an nfsstat4.  No I/O.
"""

from __future__ import annotations

import errno

from acmenfs.fs.backend import BadHandle, StaleHandle
from acmenfs.fs.nonblocking import WouldBlock
from acmenfs.nfs3.errors import NfsError, status_for as status3_for
from acmenfs.nfs4.const import Nfs4Stat
from acmenfs.oncrpc.xdr import XdrError


class Nfs4Error(Exception):
    """An operation failed with ``status``; ``body`` is its resfail body (often empty)."""

    def __init__(self, status: Nfs4Stat, message: str = "", body: bytes = b"") -> None:
        super().__init__(message or Nfs4Stat(status).name)
        self.status = Nfs4Stat(status)
        self.body = body


class SlotReplay(Exception):
    """Raised by SEQUENCE (4.1) for a retry its slot answers: ``reply`` is the cached
    COMPOUND4res, sent as it is."""

    def __init__(self, reply: bytes) -> None:
        super().__init__("slot replay")
        self.reply = reply


# nfsstat3 values that differ in v4 (the rest are the same numbers)
_V3_TO_V4 = {10002: Nfs4Stat.INVAL,  # NOT_SYNC: v4 has no guarded SETATTR on ctime
             10008: Nfs4Stat.DELAY}   # JUKEBOX
_ERRNO_OVERRIDES = {errno.EACCES: Nfs4Stat.ACCESS, errno.ELOOP: Nfs4Stat.SYMLINK,
                    errno.EAGAIN: Nfs4Stat.DELAY, errno.ETXTBSY: Nfs4Stat.FILE_OPEN}


def status_for(exc: BaseException) -> Nfs4Stat:
    """The nfsstat4 for an exception; SERVERFAULT when nothing fits.  ``WouldBlock`` (an op
    tried inline on the event loop would wait for the disk) is not a status: re-raised, so
    the COMPOUND is run again in the thread pool."""
    if isinstance(exc, WouldBlock):
        raise exc
    if isinstance(exc, Nfs4Error):
        return exc.status
    if isinstance(exc, XdrError):
        return Nfs4Stat.BADXDR
    if isinstance(exc, OSError) and exc.errno in _ERRNO_OVERRIDES:
        return _ERRNO_OVERRIDES[exc.errno]
    if isinstance(exc, (NfsError, StaleHandle, BadHandle, OSError)):
        value = int(status3_for(exc))
        if value in _V3_TO_V4:
            return _V3_TO_V4[value]
        try:
            return Nfs4Stat(value)
        except ValueError:
            return Nfs4Stat.SERVERFAULT
    return Nfs4Stat.SERVERFAULT
