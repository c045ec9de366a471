"""Running file operations on the event loop thread only when they cannot block.

Owns the per-thread "inline" flag, the ``WouldBlock`` exception and the two
system calls that let the backend *ask* instead of wait: ``openat2`` with
RESOLVE_CACHED (path resolution served from the dentry cache or EAGAIN) and
``preadv2`` with RWF_NOWAIT (is this byte in the page cache?).  The NFS server
first runs a cheap procedure inline; whenever the backend would need the disk
(an uncached handle, an uncached name, file data not in the page cache, a first
quota scan) it raises ``WouldBlock`` and the procedure is re-run in the thread
pool.  It decides nothing about NFS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
import threading

RESOLVE_CACHED = 0x20
_SYS_OPENAT2 = 437  # same number on x86_64 and aarch64
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class WouldBlock(Exception):
    """The operation might wait for the disk: run it in the thread pool instead."""


class _Inline(threading.local):
    active = False


_inline = _Inline()
# The flag itself, for the NFS server's per-call wrapper, which sets and restores ``active``
# directly around each inline call (``with inline():`` costs a few tenths of a microsecond more).
inline_state = _inline


def inline_active() -> bool:
    return _inline.active


class _InlineSection:
    """``with inline():`` body runs with this thread marked as the event loop."""

    __slots__ = ("previous",)

    def __enter__(self) -> None:
        self.previous, _inline.active = _inline.active, True

    def __exit__(self, *exc_info) -> None:
        _inline.active = self.previous


def inline() -> _InlineSection:
    """Mark this thread as the event loop: backend calls that could block raise WouldBlock."""
    return _InlineSection()


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works = True
_open_hows: dict[int, tuple[_OpenHow, object]] = {}  # flags -> (struct, pointer): never changed once built
_OPEN_HOW_SIZE = ctypes.sizeof(_OpenHow)


def _open_how(flags: int) -> object:
    built = _open_hows.get(flags)
    if built is None:
        how = _OpenHow(flags, 0, RESOLVE_CACHED)
        built = _open_hows[flags] = (how, ctypes.byref(how))
    return built[1]


# What os.fsencode does, without its Python-level call (open_cached runs on every LOOKUP).
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_syscall = _libc.syscall


def open_cached(dir_fd: int, name: str, flags: int) -> int:
    """openat() that fails with WouldBlock instead of reading the disk to resolve ``name``."""
    global _openat2_works
    if not _openat2_works:
        raise WouldBlock("openat2 unavailable")
    built = _open_hows.get(flags)
    how = built[1] if built is not None else _open_how(flags)
    fd = _syscall(_SYS_OPENAT2, dir_fd, name.encode(_FS_ENCODING, _FS_ERRORS), how, _OPEN_HOW_SIZE)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.EAGAIN:
        raise WouldBlock(f"{name!r} not in the dentry cache")
    if err in (errno.ENOSYS, errno.EINVAL, errno.E2BIG):
        _openat2_works = False
        raise WouldBlock("openat2 unavailable")
    raise OSError(err, os.strerror(err), name)


_PROBE = bytearray(1)


def data_cached(fd: int, offset: int, count: int) -> bool:
    """Whether the first and last byte of a range are in the page cache (a sequential-read heuristic)."""
    if count <= 0:
        return True
    probe = memoryview(bytearray(1))
    for position in (offset, offset + count - 1):
        try:
            os.preadv(fd, [probe], position, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                return False
            raise
    return True
