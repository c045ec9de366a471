"""Errors of the NFS layer and their nfsstat3 values.

Owns ``NfsError`` (raised inside procedures with a status and an optional
pre-encoded failure body) and ``status_for`` (exception -> nfsstat3: errno
mapped precisely; SERVERFAULT only for what nothing else describes, logged by
the caller).  It does no I/O.
"""

from __future__ import annotations

import errno

from acmenfs.fs.backend import BadHandle, StaleHandle
from acmenfs.nfs3.const import NfsStat


class NfsError(Exception):
    def __init__(self, status: NfsStat, message: str = "", body: bytes | None = None) -> None:
        super().__init__(message or status.name)
        self.status = status
        self.body = body


ERRNO_TO_STATUS: dict[int, NfsStat] = {
    errno.EPERM: NfsStat.PERM,
    errno.ENOENT: NfsStat.NOENT,
    errno.EIO: NfsStat.IO,
    errno.ENXIO: NfsStat.NXIO,
    errno.EACCES: NfsStat.ACCES,
    errno.EEXIST: NfsStat.EXIST,
    errno.EXDEV: NfsStat.XDEV,
    errno.ENODEV: NfsStat.NODEV,
    errno.ENOTDIR: NfsStat.NOTDIR,
    errno.EISDIR: NfsStat.ISDIR,
    errno.EINVAL: NfsStat.INVAL,
    errno.EFBIG: NfsStat.FBIG,
    errno.ENOSPC: NfsStat.NOSPC,
    errno.EROFS: NfsStat.ROFS,
    errno.EMLINK: NfsStat.MLINK,
    errno.ENAMETOOLONG: NfsStat.NAMETOOLONG,
    errno.ENOTEMPTY: NfsStat.NOTEMPTY,
    errno.EDQUOT: NfsStat.DQUOT,
    errno.ESTALE: NfsStat.STALE,
    errno.ELOOP: NfsStat.INVAL,
    errno.EBADF: NfsStat.BADHANDLE,
    errno.EOPNOTSUPP: NfsStat.NOTSUPP,
    errno.ENOTSUP: NfsStat.NOTSUPP,
    errno.ETXTBSY: NfsStat.ACCES,
    errno.EAGAIN: NfsStat.JUKEBOX,
    errno.EMFILE: NfsStat.JUKEBOX,
    errno.ENFILE: NfsStat.JUKEBOX,
    errno.EOVERFLOW: NfsStat.FBIG,
    errno.ERANGE: NfsStat.INVAL,
}


def status_for(exc: BaseException) -> NfsStat:
    """The nfsstat3 for an exception; SERVERFAULT when none fits."""
    if isinstance(exc, NfsError):
        return exc.status
    if isinstance(exc, StaleHandle):
        return NfsStat.STALE
    if isinstance(exc, BadHandle):
        return NfsStat.BADHANDLE
    if isinstance(exc, OSError) and exc.errno in ERRNO_TO_STATUS:
        return ERRNO_TO_STATUS[exc.errno]
    return NfsStat.SERVERFAULT
