"""Byte-range lock table (acmenfs/nfs4/locks.py): ranges, conflicts, split, merge, up/downgrade."""

from __future__ import annotations

import pytest

from acmenfs.nfs4.locks import ALL_ONES, MAX_OFFSET, FileLocks, LockTable, RangeError, lock_range


def ranges(locks: FileLocks, owner):
    return [(lock.start, lock.end, lock.write) for lock in locks.owned_by(owner)]


def test_lock_range_to_eof_and_overflow():
    assert lock_range(10, ALL_ONES) == (10, MAX_OFFSET)
    assert lock_range(0, 1) == (0, 0)
    assert lock_range(MAX_OFFSET, 1) == (MAX_OFFSET, MAX_OFFSET)
    with pytest.raises(RangeError):
        lock_range(0, 0)
    with pytest.raises(RangeError):
        lock_range(3, MAX_OFFSET - 1)        # ends at 2**64: past the last offset
    assert lock_range(2, MAX_OFFSET - 1) == (2, MAX_OFFSET)


def test_read_locks_share_write_locks_exclude():
    table = LockTable()
    a, b = object(), object()
    assert table.lock("f", a, 0, 99, False) is None
    assert table.lock("f", b, 50, 149, False) is None          # READ + READ overlap
    conflict = table.lock("f", b, 90, 90, True)                # WRITE over a's READ
    assert conflict is not None and conflict.owner is a and (conflict.start, conflict.end) == (0, 99)
    assert conflict.length == 100 and conflict.locktype == 1
    assert table.test("f", a, 200, 300, True) is None          # no overlap
    assert table.test("g", b, 0, 10, True) is None             # another file


def test_same_owner_never_conflicts_and_upgrade_splits():
    locks = FileLocks()
    a = object()
    locks.add(a, 0, 99, False)
    locks.add(a, 40, 59, True)                                  # upgrade the middle
    assert ranges(locks, a) == [(0, 39, False), (40, 59, True), (60, 99, False)]
    locks.add(a, 40, 59, False)                                 # downgrade back: merged
    assert ranges(locks, a) == [(0, 99, False)]


def test_unlock_splits_and_merge_of_adjacent():
    locks = FileLocks()
    a = object()
    locks.add(a, 0, 9, True)
    locks.add(a, 10, 19, True)                                  # adjacent: one range
    assert ranges(locks, a) == [(0, 19, True)]
    locks.remove(a, 5, 14)
    assert ranges(locks, a) == [(0, 4, True), (15, 19, True)]
    locks.remove(a, 100, 200)                                   # nothing there: no change
    assert ranges(locks, a) == [(0, 4, True), (15, 19, True)]


def test_to_eof_lock_length_all_ones():
    table = LockTable()
    a, b = object(), object()
    table.lock("f", a, 100, MAX_OFFSET, True)
    conflict = table.test("f", b, 10**15, 10**15, False)
    assert conflict.length == ALL_ONES
    table.unlock("f", a, 100, MAX_OFFSET)
    assert table.test("f", b, 0, MAX_OFFSET, True) is None
    assert not table.files                                      # empty files forgotten


def test_release_owner():
    table = LockTable()
    a, b = object(), object()
    table.lock("f", a, 0, 0, True)
    table.lock("f", b, 1, 1, True)
    assert table.holds("f", a)
    table.release("f", a)
    assert not table.holds("f", a) and table.holds("f", b)
