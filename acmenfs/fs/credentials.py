"""Per-thread file-system identity: act as an NFS caller for the duration of one call.

Owns ``Identity`` (uid, gid, supplementary gids after squashing), ``squash``
(applies an export's client rule to a wire credential) and ``acting_as``, a
context manager that switches the *calling thread's* fsuid/fsgid and
supplementary groups and restores them afterwards.

Linux keeps credentials per thread at the kernel level; glibc's ``setgroups()``
broadcasts to every thread of the process, so groups are set with the raw
``SYS_setgroups`` system call instead.  ``setfsuid``/``setfsgid`` are per thread
already.  Changing the fsuid away from 0 drops the file-system capabilities
(CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN, ...) for that thread, so the kernel
checks permissions exactly as for the caller, and new files are owned by the
caller.

When the server does not run as root it cannot change identity: ``acting_as``
then does nothing and every file operation runs as the server's own user
(documented in ``docs``/``acmenfs nfsd --help``).  It must not touch files itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass

NOBODY = 65534
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159}.get(os.uname().machine)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setfsuid.argtypes = [ctypes.c_uint]
_libc.setfsgid.argtypes = [ctypes.c_uint]
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a file operation runs as (after squashing)."""

    uid: int
    gid: int
    gids: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.gids


SERVER_IS_ROOT = os.geteuid() == 0
ROOT = Identity(0, 0, ())


def squash(uid: int, gid: int, gids: tuple[int, ...], mode: str, anon_uid: int, anon_gid: int) -> Identity:
    """Apply a squash mode ("root", "all", "none") to a caller's AUTH_SYS identity."""
    if mode == "all" or (mode == "root" and uid == 0):
        return Identity(anon_uid, anon_gid, ())
    if mode == "root" and gid == 0:
        gid = anon_gid
    if mode == "root":
        gids = tuple(anon_gid if g == 0 else g for g in gids)
    if uid == 0 and gid == 0 and not gids:
        return ROOT  # the very object a thread starts as: ``acting_as`` then skips the switch on ``is``
    return Identity(uid, gid, tuple(gids[:16]))


class _ThreadIdentity(threading.local):
    current: Identity = ROOT


_thread_identity = _ThreadIdentity()


def _set_groups(gids: tuple[int, ...]) -> None:
    array = (ctypes.c_uint * max(1, len(gids)))(*gids)
    if _libc.syscall(_SYS_SETGROUPS, len(gids), array) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")


def _switch(identity: Identity) -> None:
    # Order matters: groups and gid while still fsuid 0 is not required by the
    # kernel (the thread keeps CAP_SETGID in its effective set), but restoring
    # uid first on the way back keeps the window with mixed ids minimal.
    _set_groups(identity.gids)
    _libc.setfsgid(identity.gid)
    _libc.setfsuid(identity.uid)
    _thread_identity.current = identity


def current_identity() -> Identity:
    return _thread_identity.current


class _ActingAs:
    """Context manager switching this thread's identity for its body, and back."""

    __slots__ = ("identity", "previous")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.previous = identity

    def __enter__(self) -> None:
        self.previous = _thread_identity.current
        _switch(self.identity)

    def __exit__(self, *exc_info) -> None:
        _switch(self.previous)


_UNCHANGED = nullcontext()
_CAN_SWITCH = SERVER_IS_ROOT and _SYS_SETGROUPS is not None


def acting_as(identity: Identity):
    """Run the body (``with acting_as(who):``) with this thread's file-system identity
    set to ``identity``; no system call at all when the thread already acts as it."""
    if not _CAN_SWITCH or identity is _thread_identity.current or identity == _thread_identity.current:
        return _UNCHANGED
    return _ActingAs(identity)
