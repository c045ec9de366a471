"""UsageCounter.check_write: a write that cannot cross the quota is let through without asking
the file system for holes; one that could is measured exactly (holes, past EOF), so a full
share still takes overwrites of allocated data and refuses writes into holes."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid

import pytest

from acmenfs.fs import quota


@pytest.fixture(params=["ext4", "xfs", "btrfs", "tmpfs"])
def directory(request, loop_filesystems):
    """An empty directory on a real file system of each kind the data directory may sit on."""
    path = loop_filesystems.get(request.param) / f"quota-{uuid.uuid4().hex}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sparse(directory):
    """A 1 MiB file: 256 KiB of data, then a 768 KiB hole."""
    path = directory / "disk.img"
    with open(path, "wb") as handle:
        handle.write(b"d" * (256 << 10))
        handle.truncate(1 << 20)
    fd = os.open(path, os.O_RDWR)
    os.fsync(fd)
    yield directory, fd
    os.close(fd)


def counting_exact_checks(monkeypatch) -> list:
    """Calls of ``unallocated_bytes`` (FIEMAP or SEEK_HOLE: what a write pays to be measured)."""
    calls = []
    real = quota.unallocated_bytes
    monkeypatch.setattr(quota, "unallocated_bytes", lambda *args: calls.append(args) or real(*args))
    return calls


def test_far_from_the_quota_a_write_into_a_hole_asks_nothing(sparse, monkeypatch):
    directory, fd = sparse
    usage = quota.UsageCounter(str(directory), 1 << 30)
    assert usage.current() == 256 << 10
    exact = counting_exact_checks(monkeypatch)
    usage.check_write(fd, 512 << 10, 64 << 10, os.fstat(fd))
    assert exact == []


def test_near_a_full_quota_overwrites_pass_and_hole_writes_are_refused(sparse, monkeypatch):
    directory, fd = sparse
    usage = quota.UsageCounter(str(directory), (256 << 10) + 4096)  # one block left
    exact = counting_exact_checks(monkeypatch)
    usage.check_write(fd, 0, 64 << 10, os.fstat(fd))  # allocated already: grows nothing
    assert exact  # measured, not guessed
    usage.check_write(fd, 300 << 10, 4096, os.fstat(fd))  # one block of the hole: fits exactly
    with pytest.raises(quota.QuotaExceeded):
        usage.check_write(fd, 300 << 10, 8192, os.fstat(fd))  # two blocks of the hole
    with pytest.raises(quota.QuotaExceeded):
        usage.check_write(fd, (252 << 10), 12288, os.fstat(fd))  # 4 KiB of data, then 8 KiB of hole
    with pytest.raises(quota.QuotaExceeded):
        usage.check_write(fd, 1 << 20, 8192, os.fstat(fd))  # past EOF


def wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_an_unknown_usage_is_never_scanned_on_the_callers_thread(sparse, monkeypatch):
    directory, fd = sparse
    usage = quota.UsageCounter(str(directory), 1 << 30)
    scanners = []
    real_scan = quota.scan_usage
    release = threading.Event()

    def slow_scan(path):
        scanners.append(threading.current_thread())
        release.wait(10)
        return real_scan(path)

    monkeypatch.setattr(quota, "scan_usage", slow_scan)
    usage.check_write(fd, 0, 4096, os.fstat(fd), may_scan=False)  # allocated: passes, and starts a scan
    usage.check_write(fd, 4096, 4096, os.fstat(fd), may_scan=False)  # one scan at a time
    with pytest.raises(quota.WouldBlock):  # allocates: the figure is needed now, and not known yet
        usage.check_write(fd, 512 << 10, 4096, os.fstat(fd), may_scan=False)
    release.set()
    assert wait_until(lambda: usage.scanned)
    assert len(scanners) == 1 and scanners[0] is not threading.current_thread()
    assert usage.current() == 256 << 10
    exact = counting_exact_checks(monkeypatch)
    usage.check_write(fd, 512 << 10, 4096, os.fstat(fd), may_scan=False)  # known now: nothing to ask
    assert exact == []


def test_a_thick_volume_at_its_quota_takes_writes_into_never_written_blocks(directory, monkeypatch):
    """A preallocated (fallocate) volume is allocated in full: writing its unwritten extents
    allocates nothing, even when none of its pages is cached (SEEK_HOLE would call them holes)."""
    path = directory / "thick.img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, 8 << 20)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # nothing of it in the page cache
        usage = quota.UsageCounter(str(directory), 8 << 20)  # full: used == quota
        assert usage.current() == 8 << 20
        exact = counting_exact_checks(monkeypatch)
        usage.check_write(fd, 5 << 20, 64 << 10, os.fstat(fd))
        assert exact  # it was measured (allocated in full: without a system call)
        with pytest.raises(quota.QuotaExceeded):
            usage.check_write(fd, (8 << 20) - 4096, 8192, os.fstat(fd))  # one block past the end
    finally:
        os.close(fd)


def test_fiemap_counts_preallocated_extents_as_allocated(directory, request):
    """Half a volume preallocated, half a hole: FIEMAP tells the preallocated (unwritten, not
    cached) blocks from the hole; without FIEMAP (tmpfs) SEEK_HOLE over-estimates, never under."""
    path = directory / "half.img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, 4 << 20)
        os.ftruncate(fd, 8 << 20)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert quota.unallocated_bytes(fd, 6 << 20, 64 << 10, 8 << 20) == 64 << 10  # the hole
        edge = quota.unallocated_bytes(fd, (4 << 20) - 4096, 8192, 8 << 20)
        preallocated = quota.unallocated_bytes(fd, 1 << 20, 64 << 10, 8 << 20)
        if request.node.callspec.params["directory"] == "tmpfs":
            assert edge in (4096, 8192) and preallocated in (0, 64 << 10)
        else:
            assert edge == 4096 and preallocated == 0
    finally:
        os.close(fd)


def test_without_fiemap_holes_are_found_by_seeking(sparse, monkeypatch):
    directory, fd = sparse
    by_extents = [quota.unallocated_bytes(fd, offset, length, 1 << 20)
                  for offset, length in [(0, 4096), (252 << 10, 12288), (300 << 10, 8192), (1020 << 10, 16384)]]
    assert by_extents == [0, 8192, 8192, 16384]  # the last: one block of hole, three past EOF

    def no_fiemap(*args):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(quota.fcntl, "ioctl", no_fiemap)
    by_seeking = [quota.unallocated_bytes(fd, offset, length, 1 << 20)
                  for offset, length in [(0, 4096), (252 << 10, 12288), (300 << 10, 8192), (1020 << 10, 16384)]]
    assert by_seeking == by_extents
