"""Byte-range lock table of NFSv4 (RFC 7530 §9.2, RFC 8881 §18.10-18.12): ranges only.

Owns, per file, the byte ranges each lock owner holds (READ or WRITE), the
conflict test between owners, and the range arithmetic of LOCK (split, merge,
upgrade, downgrade) and LOCKU (split).  An owner is any hashable key chosen by
the caller (``StateManager`` uses its ``LockOwner`` objects).  Ranges are
inclusive ``[start, end]``; a length of all ones means "to the end of file"
(``end = MAX_OFFSET``).  No stateids, no seqids, no leases, no I/O, no locking
of its own: the caller serialises access.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

MAX_OFFSET = 0xFFFFFFFFFFFFFFFF
ALL_ONES = MAX_OFFSET

# nfs_lock_type4
READ_LT = 1
WRITE_LT = 2
READW_LT = 3
WRITEW_LT = 4


class RangeError(ValueError):
    """The (offset, length) pair is invalid: length 0 or past 2**64 - 1 (NFS4ERR_INVAL)."""


def lock_range(offset: int, length: int) -> tuple[int, int]:
    """(offset, length) of the protocol -> inclusive (start, end); RangeError when invalid."""
    if length == 0:
        raise RangeError("lock length 0")
    if length == ALL_ONES:
        return offset, MAX_OFFSET
    end = offset + length - 1
    if end > MAX_OFFSET:
        raise RangeError(f"offset {offset} + length {length} overflows 64 bits")
    return offset, end


def is_write(locktype: int) -> bool:
    return locktype in (WRITE_LT, WRITEW_LT)


@dataclass
class Lock:
    """One range held by one owner; ``write`` false = READ (shared) lock."""

    owner: Hashable
    start: int
    end: int
    write: bool

    @property
    def length(self) -> int:
        """The protocol's length: all ones for a lock that runs to the end of file."""
        return ALL_ONES if self.end == MAX_OFFSET else self.end - self.start + 1

    @property
    def locktype(self) -> int:
        return WRITE_LT if self.write else READ_LT


class FileLocks:
    """All byte-range locks of one file, kept sorted by start."""

    __slots__ = ("locks",)

    def __init__(self) -> None:
        self.locks: list[Lock] = []

    def __bool__(self) -> bool:
        return bool(self.locks)

    def conflict(self, owner: Hashable, start: int, end: int, write: bool) -> Lock | None:
        """The first lock of another owner that the requested range conflicts with."""
        for lock in self.locks:
            if lock.owner is owner or lock.owner == owner:
                continue
            if lock.start <= end and start <= lock.end and (write or lock.write):
                return lock
        return None

    def add(self, owner: Hashable, start: int, end: int, write: bool) -> None:
        """Give ``owner`` [start, end] with this type, replacing what it held there
        (upgrade/downgrade), then merge touching ranges of the same owner and type.
        The caller has checked ``conflict`` first."""
        self._cut(owner, start, end)
        self.locks.append(Lock(owner, start, end, write))
        self._merge(owner)

    def remove(self, owner: Hashable, start: int, end: int) -> None:
        """Release [start, end] of ``owner`` (splitting a range that straddles it)."""
        self._cut(owner, start, end)

    def owned_by(self, owner: Hashable) -> list[Lock]:
        return [lock for lock in self.locks if lock.owner == owner]

    def drop_owner(self, owner: Hashable) -> None:
        self.locks = [lock for lock in self.locks if lock.owner != owner]

    def _cut(self, owner: Hashable, start: int, end: int) -> None:
        kept: list[Lock] = []
        for lock in self.locks:
            if lock.owner != owner or lock.end < start or lock.start > end:
                kept.append(lock)
                continue
            if lock.start < start:
                kept.append(Lock(owner, lock.start, start - 1, lock.write))
            if lock.end > end:
                kept.append(Lock(owner, end + 1, lock.end, lock.write))
        kept.sort(key=lambda lock: (lock.start, lock.end))
        self.locks = kept

    def _merge(self, owner: Hashable) -> None:
        merged: list[Lock] = []
        last: Lock | None = None
        for lock in sorted(self.locks, key=lambda lock: (lock.start, lock.end)):
            if (lock.owner == owner and last is not None and last.owner == owner
                    and last.write == lock.write and last.end != MAX_OFFSET
                    and lock.start <= last.end + 1):
                last.end = max(last.end, lock.end)
                continue
            if lock.owner == owner:
                last = lock
            merged.append(lock)
        self.locks = merged


class LockTable:
    """file key -> FileLocks; empty files are forgotten."""

    def __init__(self) -> None:
        self.files: dict[Hashable, FileLocks] = {}

    def get(self, file_key: Hashable) -> FileLocks:
        return self.files.get(file_key) or FileLocks()

    def test(self, file_key: Hashable, owner: Hashable, start: int, end: int, write: bool) -> Lock | None:
        locks = self.files.get(file_key)
        return locks.conflict(owner, start, end, write) if locks else None

    def lock(self, file_key: Hashable, owner: Hashable, start: int, end: int, write: bool) -> Lock | None:
        """Take the range, or return the conflicting lock (nothing changes then)."""
        locks = self.files.setdefault(file_key, FileLocks())
        conflict = locks.conflict(owner, start, end, write)
        if conflict is None:
            locks.add(owner, start, end, write)
        elif not locks:
            del self.files[file_key]
        return conflict

    def unlock(self, file_key: Hashable, owner: Hashable, start: int, end: int) -> None:
        locks = self.files.get(file_key)
        if locks:
            locks.remove(owner, start, end)
            if not locks:
                del self.files[file_key]

    def holds(self, file_key: Hashable, owner: Hashable) -> bool:
        locks = self.files.get(file_key)
        return bool(locks and locks.owned_by(owner))

    def release(self, file_key: Hashable, owner: Hashable) -> None:
        locks = self.files.get(file_key)
        if locks:
            locks.drop_owner(owner)
            if not locks:
                del self.files[file_key]
