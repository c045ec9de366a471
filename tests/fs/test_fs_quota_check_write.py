"""UsageCounter.check_write: a write that cannot cross the quota is let through without asking
the file system for holes; one that could is measured exactly (holes, past EOF), so a full
share still takes overwrites of allocated data and refuses writes into holes."""

from __future__ import annotations

import os

import pytest

from acmenfs.fs import quota


@pytest.fixture
def sparse(tmp_path):
    """A 1 MiB file: 256 KiB of data, then a 768 KiB hole."""
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.write(b"d" * (256 << 10))
        handle.truncate(1 << 20)
    fd = os.open(path, os.O_RDWR)
    yield tmp_path, fd
    os.close(fd)


def counting_lseeks(monkeypatch) -> list:
    calls = []
    real = os.lseek
    monkeypatch.setattr(quota.os, "lseek", lambda *args: calls.append(args) or real(*args))
    return calls


def test_far_from_the_quota_a_write_into_a_hole_asks_nothing(sparse, monkeypatch):
    directory, fd = sparse
    usage = quota.UsageCounter(str(directory), 1 << 30)
    assert usage.current() == 256 << 10
    lseeks = counting_lseeks(monkeypatch)
    usage.check_write(fd, 512 << 10, 64 << 10, 1 << 20)
    assert lseeks == []


def test_near_a_full_quota_overwrites_pass_and_hole_writes_are_refused(sparse, monkeypatch):
    directory, fd = sparse
    usage = quota.UsageCounter(str(directory), (256 << 10) + 4096)  # one block left
    lseeks = counting_lseeks(monkeypatch)
    usage.check_write(fd, 0, 64 << 10, 1 << 20)  # allocated already: grows nothing
    assert lseeks  # measured, not guessed
    usage.check_write(fd, 300 << 10, 4096, 1 << 20)  # one block of the hole: fits exactly
    with pytest.raises(quota.QuotaExceeded):
        usage.check_write(fd, 300 << 10, 8192, 1 << 20)  # two blocks of the hole
    with pytest.raises(quota.QuotaExceeded):
        usage.check_write(fd, (252 << 10), 12288, 1 << 20)  # 4 KiB of data, then 8 KiB of hole
    with pytest.raises(quota.QuotaExceeded):
        usage.check_write(fd, 1 << 20, 8192, 1 << 20)  # past EOF


def test_an_unknown_usage_is_not_scanned_for_an_overwrite(sparse):
    directory, fd = sparse
    usage = quota.UsageCounter(str(directory), 1 << 30)
    usage.check_write(fd, 0, 4096, 1 << 20, may_scan=False)  # allocated: no usage needed
    assert not usage.scanned
    with pytest.raises(quota.WouldBlock):
        usage.check_write(fd, 512 << 10, 4096, 1 << 20, may_scan=False)  # allocates: needs the usage
    usage.check_write(fd, 512 << 10, 4096, 1 << 20)
    assert usage.scanned
