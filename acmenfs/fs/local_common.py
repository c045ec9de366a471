"""What the local backend's modules share: handle kinds, open flags, the inline-pause policy,
client name checks, READDIR cookies, mode-bit permission checks and utimensat.

Small helpers (no backend state but an ``InlinePause`` each backend holds): ``acmenfs.fs.local`` and its mixins
(``local_data``, ``local_namespace``, ``local_listing``) import them from here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import resource
import stat
import time

from acmenfs.fs.backend import SetAttributes
from acmenfs.fs.credentials import Identity
from acmenfs.fs.nonblocking import WouldBlock
from acmenfs.fs.setid import SETID_BITS

log = logging.getLogger("acmenfs.fs.local")

NAME_MAX = 255
KERNEL_KIND = b"K"
PATH_KIND = b"P"
COOKIE_FLAG = 1 << 63
# Namespace changes and writes run on the event loop when they can; one that blocked (slept in the
# kernel: disk, journal) and took longer than this pauses that for the export (``next_pause``).
# Being preempted (a busy machine) does not count.
INLINE_CHANGE_MAX_BLOCKED_SECONDS = 0.001
INLINE_PAUSE_FIRST_SECONDS = 0.1
INLINE_CHANGE_PAUSE_SECONDS = 2.0  # the longest pause
INLINE_WATCH_SECONDS = 10.0  # after a slow call, count the voluntary switches of calls for this long (InlinePause)
O_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC



def next_pause(previous: float, paused_until: float, now: float) -> float:
    """Seconds to pause inline work of one kind after a call of it blocked at ``now``.

    ``previous`` is the length of the last pause (0 if none), ``paused_until`` when it ended.
    An isolated block (a journal commit, one burst of dirty-page throttling) costs a short
    pause, INLINE_PAUSE_FIRST_SECONDS: a long one would send seconds of calls to the
    thread pool, each paying a thread hand-off, for one wait.  A block within
    INLINE_CHANGE_PAUSE_SECONDS of the end of the last pause doubles it, up to
    INLINE_CHANGE_PAUSE_SECONDS, so a disk that keeps blocking stalls the event loop at
    most about once per longest pause."""
    if previous > 0 and now - paused_until < INLINE_CHANGE_PAUSE_SECONDS:
        return min(INLINE_CHANGE_PAUSE_SECONDS, previous * 2)
    return INLINE_PAUSE_FIRST_SECONDS


class InlinePause:
    """Whether one kind of inline work (an export's writes, or its namespace changes) may run
    on the event loop now, and the pause that follows one that blocked.

    ``start`` raises WouldBlock while paused, else returns what ``finish`` needs: the start time
    and this thread's voluntary context switches, or -1 (not counted) when nothing was slow lately.
    ``finish`` counts a call that slept in the kernel (a voluntary switch: disk, journal) and took
    over INLINE_CHANGE_MAX_BLOCKED_SECONDS as ``slow`` and pauses the kind for ``next_pause``
    seconds; being preempted on a busy machine does not count.

    Counting switches costs a getrusage per call (as much as an fstat), so it is only done while
    *watching*: a slow call that was not counted starts a watch of INLINE_WATCH_SECONDS, and the
    next slow call within it is judged by its switches.  A disk that keeps blocking therefore
    stalls the loop once more before the first pause than if every call were counted; calls
    that never take a millisecond (the page-cache writes of a VM disk) never pay for the count."""

    __slots__ = ("what", "paused_until", "last_pause", "slow", "watch_until")

    def __init__(self, what: str) -> None:
        self.what = what  # "writes" or "changes", for messages
        self.paused_until = 0.0
        self.last_pause = 0.0  # length of the last pause (next_pause)
        self.slow = 0
        self.watch_until = 0.0  # count voluntary switches of calls started before this

    def start(self) -> tuple[float, int]:
        now = time.monotonic()
        if now < self.paused_until:
            raise WouldBlock(f"inline {self.what} paused after one waited")
        if now < self.watch_until:
            return now, resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
        return now, -1

    def finish(self, started: tuple[float, int], directory: str) -> None:
        now = time.monotonic()
        elapsed = now - started[0]
        if elapsed <= INLINE_CHANGE_MAX_BLOCKED_SECONDS:
            return
        if started[1] < 0:  # not counted: watch the next calls
            self.watch_until = now + INLINE_WATCH_SECONDS
            return
        if resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw == started[1]:
            return  # preempted, not blocked
        self.slow += 1
        self.last_pause = next_pause(self.last_pause, self.paused_until, now)
        self.paused_until = now + self.last_pause
        self.watch_until = self.paused_until + INLINE_WATCH_SECONDS  # so a block after the pause is judged at once
        log.info("export %s: an inline %s blocked and took %.1f ms; %s go to the thread pool for %.1f s",
                 directory, self.what[:-1], elapsed * 1000, self.what, self.last_pause)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD = -100
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _timespec(setting) -> _Timespec:
    if setting is None:
        return _Timespec(0, _UTIME_OMIT)
    if setting == "server":
        return _Timespec(0, _UTIME_NOW)
    return _Timespec(setting // 1_000_000_000, setting % 1_000_000_000)


def set_times(path: str, atime, mtime) -> None:
    """utimensat with per-field OMIT/NOW/explicit (os.utime cannot leave one time alone)."""
    times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
    if _libc.utimensat(_AT_FDCWD, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"utimensat: {os.strerror(err)}")


def check_name(name: str) -> None:
    """Refuse names a client must not use as one path component."""
    if not name:
        raise OSError(errno.EACCES, "empty file name")
    if "/" in name or "\0" in name:
        raise OSError(errno.EACCES, f"file name contains '/' or NUL: {name!r}")
    if len(name) > NAME_MAX // 4 and len(os.fsencode(name)) > NAME_MAX:  # at most 4 bytes a character
        raise OSError(errno.ENAMETOOLONG, f"file name longer than {NAME_MAX} bytes")


def check_new_name(name: str) -> None:
    check_name(name)
    if name in (".", ".."):
        raise OSError(errno.EEXIST, f"cannot create {name!r}")


def name_cookie(name: str) -> int:
    """A READDIR cookie from the name alone: stable across directory changes and restarts."""
    digest = hashlib.blake2b(os.fsencode(name), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) | COOKIE_FLAG


def permitted(st: os.stat_result, who: Identity, want: int, owner_override: bool = False) -> bool:
    """Mode-bit check of ``want`` (r=4, w=2, x=1) for ``who``."""
    if who.is_root:
        return not (want & 1) or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if owner_override and st.st_uid == who.uid and not (want & 1):
        return True
    if st.st_uid == who.uid:
        bits = st.st_mode >> 6
    elif who.in_group(st.st_gid):
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return (bits & want & 7) == want


def require(st: os.stat_result, who: Identity, want: int, owner_override: bool = False) -> None:
    if not permitted(st, who, want, owner_override):
        raise OSError(errno.EACCES, "permission denied")


def is_noop_change(changes: SetAttributes, st: os.stat_result) -> bool:
    """True when SETATTR would change nothing (e.g. truncating an empty new file to 0)."""
    return (
        (changes.size is None or (changes.size == st.st_size and stat.S_ISREG(st.st_mode)
                                  and not st.st_mode & SETID_BITS))  # truncate(2) to the same size clears them
        and changes.mode is None
        and changes.uid is None
        and changes.gid is None
        and changes.atime is None
        and changes.mtime is None
    )

