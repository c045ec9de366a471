"""Per-export space accounting: a used-bytes counter kept up to date by deltas.

Owns ``UsageCounter``: scanned once (lazily, on first use, never on the event
loop: ``may_scan=False`` raises WouldBlock instead) by walking the export,
then adjusted with deltas of ``charged_bytes`` (allocation, st_blocks, capped at a
regular file's length) reported by the backend after every operation that
allocates or frees space; ``invalidate`` forgets the
figure (the export was replaced or changed behind the server's back) so the next
use scans again.  ``check_growth`` raises ``QuotaExceeded`` when an operation
would allocate past the quota.  The quota is on allocated bytes, like XFS/ext4
block quotas: growing a file's length without writing (a sparse extension)
allocates nothing and is never refused; ``unallocated_bytes`` tells how much of
a byte range a write would newly allocate, and ``check_write`` asks it only when a
write could cross the quota (an unknown usage is then scanned in a thread of its
own, so an export whose writes are all overwrites learns it too).  It never walks
the tree per call and knows nothing of NFS.

Several processes (``acmenfs.workers``): after ``share_usage_between_processes(DIR)``
the figure of every export *that has a quota* lives in a small file per export
directory under DIR, mapped by every process (``_SharedCell``: generation, known
flag, used bytes), so two workers writing one share cannot overshoot its quota by
more than the calls in flight.  Reads are plain loads; only a change of allocation
(``add`` with a non-zero delta) takes the cell's fcntl lock.  Exports without a
quota keep the per-process figure and pay nothing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import mmap
import os
import stat
import struct
import threading
from pathlib import Path

from acmenfs.fs.backend import QuotaExceeded
from acmenfs.fs.nonblocking import WouldBlock


BLOCK = 4096

log = logging.getLogger("acmenfs.fs.quota")


def allocated_bytes(st: os.stat_result) -> int:
    return st.st_blocks * 512


def charged_bytes(st: os.stat_result) -> int:
    """What an object counts against the quota: its allocation, for a regular file at most its
    length rounded up to a 4 KiB block.  Extent-tree blocks and speculative preallocation past
    EOF (XFS) are the file system's overhead, not data: a volume file as large as the quota
    can then be written completely."""
    allocated = st.st_blocks * 512
    if stat.S_ISREG(st.st_mode):
        return min(allocated, _whole_blocks(st.st_size))
    return allocated


def _whole_blocks(size: int) -> int:
    """``size`` rounded up to whole 4 KiB blocks."""
    return -(-size // BLOCK) * BLOCK


def _blocks_touched(start: int, stop: int) -> int:
    """Bytes of the 4 KiB blocks that [start, stop) touches."""
    if stop <= start:
        return 0
    return (-(-stop // BLOCK) - start // BLOCK) * BLOCK


def unallocated_bytes(fd: int, offset: int, length: int, size: int, blocks: int | None = None) -> int:
    """Bytes a write of [offset, offset + length) would newly allocate (in whole 4 KiB blocks):
    the blocks it touches in holes and past the end of the file.

    ``size`` is the file's current length, ``blocks`` its ``st_blocks`` if the caller has them.
    A file whose allocation covers its length (a thick volume, a file written in full) is taken
    to have no holes, with no system call.  That is exact unless file-system overhead counted in
    ``st_blocks`` (extent-tree blocks, XFS's speculative preallocation past EOF) hides a hole of
    at most its own size; the write is charged afterwards as always, so the quota is then
    overshot by at most that.  Otherwise the file's extents come from FIEMAP, which counts
    preallocated (unwritten) and delayed-allocation extents as allocated, as they are: a thick
    volume at its quota stays writable.  Where FIEMAP is missing (tmpfs), holes are found with
    SEEK_HOLE / SEEK_DATA, which report unwritten extents whose pages are not cached as holes
    (an over-estimate, as on file systems without hole support; never an under-estimate).
    """
    end = offset + length
    rounded_size = _whole_blocks(size)
    beyond = max(offset, rounded_size)  # the block holding EOF is allocated already
    missing = _blocks_touched(beyond, end)
    limit = min(end, size)
    if offset >= limit:
        return missing
    if blocks is None:
        blocks = os.fstat(fd).st_blocks
    if blocks * 512 >= rounded_size:
        return missing
    try:
        extents = _mapped_extents(fd, offset, limit)
    except OSError:  # no FIEMAP here (EOPNOTSUPP, ENOTTY: tmpfs): ask for holes instead
        return missing + _unallocated_by_seeking(fd, offset, limit)
    position = offset
    for first, stop in extents:
        if first > position:
            missing += _blocks_touched(position, min(first, limit))
        position = max(position, stop)
        if position >= limit:
            break
    return missing + _blocks_touched(position, limit)


_FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
_FIEMAP_HEAD = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, fm_mapped_extents, fm_extent_count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")  # fe_logical, fe_physical, fe_length, fe_flags (56 bytes)
_FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_BATCH = 16


def _mapped_extents(fd: int, start: int, stop: int) -> list[tuple[int, int]]:
    """[(first byte, end)] of the file's extents that overlap [start, stop), in order (FIEMAP,
    without flushing anything: delayed allocations are reported as such).  OSError if the file
    system has no FIEMAP."""
    found: list[tuple[int, int]] = []
    position = start
    while position < stop:
        request = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
        _FIEMAP_HEAD.pack_into(request, 0, position, stop - position, 0, 0, _FIEMAP_BATCH, 0)
        fcntl.ioctl(fd, _FS_IOC_FIEMAP, request)
        mapped = _FIEMAP_HEAD.unpack_from(request, 0)[3]
        if not mapped:
            break
        for index in range(mapped):
            logical, _, length, flags = _FIEMAP_EXTENT.unpack_from(request, _FIEMAP_HEAD.size + index * _FIEMAP_EXTENT.size)
            found.append((logical, logical + length))
            if flags & _FIEMAP_EXTENT_LAST:
                return found
        following = found[-1][1]
        if mapped < _FIEMAP_BATCH or following <= position:
            break
        position = following
    return found


def _unallocated_by_seeking(fd: int, offset: int, limit: int) -> int:
    """Bytes of the 4 KiB blocks of [offset, limit) (inside the file) in holes, by SEEK_HOLE / SEEK_DATA."""
    missing, position = 0, offset
    while position < limit:
        try:
            hole = os.lseek(fd, position, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # position at or past EOF (file shrank meanwhile)
                return missing + _blocks_touched(position, limit)
            raise
        if hole >= limit:
            break
        try:
            data = os.lseek(fd, hole, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            data = limit  # no data after the hole: a hole up to EOF
        missing += _blocks_touched(max(hole, offset), min(data, limit))
        position = data
    return missing


def scan_usage(directory: str) -> int:
    """Charged bytes of everything under ``directory``, not counting the directory itself
    (hard links counted once, no symlink followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for parent, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += charged_bytes(st)
    return total


_shared_directory: Path | None = None


def share_usage_between_processes(directory: str | Path) -> None:
    """From now on, usage of exports with a quota is kept in cells under ``directory``."""
    global _shared_directory
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a full pool: each process counts on its own (UsageCounter says so)
        log.warning("cannot create %s (%s): quota usage is not shared between processes", directory, exc)
    _shared_directory = Path(directory)


def forget_shared_usage(directory: str | Path) -> None:
    """Mark every cell under ``directory`` unknown (rescanned on next use): a worker died
    between a write and its accounting, or the data may have changed while nobody served."""
    for path in Path(directory).glob("*.usage"):
        cell = _SharedCell(path)
        try:
            cell.invalidate()
        finally:
            cell.close()


class _SharedCell:
    """One export's used bytes in a 24-byte file mapped by every process:
    (generation, known, used).  Writers hold ``threading.Lock`` + an fcntl lock."""

    _LAYOUT = struct.Struct("=qqq")

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # allocated, not sparse: a store into an unbacked mapped page on a full file system
            # would end the process with SIGBUS; here a full pool is an OSError (ENOSPC) instead
            os.posix_fallocate(self._fd, 0, self._LAYOUT.size)
            self._map = mmap.mmap(self._fd, self._LAYOUT.size)
        except OSError:
            os.close(self._fd)
            raise
        self._lock = threading.Lock()  # fcntl locks are per process: threads need their own

    @classmethod
    def for_directory(cls, shared: Path, directory: str) -> _SharedCell:
        name = hashlib.blake2b(os.path.realpath(directory).encode(), digest_size=12).hexdigest()
        return cls(shared / f"{name}.usage")

    def read(self) -> tuple[int, bool, int]:
        generation, known, used = self._LAYOUT.unpack_from(self._map)
        return generation, bool(known), used

    def _locked(self, change) -> None:
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                generation, known, used = self._LAYOUT.unpack_from(self._map)
                self._LAYOUT.pack_into(self._map, 0, *change(generation, known, used))
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def add(self, delta: int) -> None:
        self._locked(lambda g, k, u: (g, k, max(0, u + delta) if k else u))

    def store_scan(self, generation: int, used: int) -> None:
        """Keep a scan started at ``generation`` unless the cell was invalidated or known since."""
        self._locked(lambda g, k, u: (g, 1, used) if g == generation and not k else (g, k, u))

    def invalidate(self) -> None:
        self._locked(lambda g, k, u: (g + 1, 0, 0))

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class UsageCounter:
    """Bytes used in one export, and its optional quota."""

    def __init__(self, directory: str, quota_bytes: int | None) -> None:
        self.directory = directory
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._used: int | None = None
        self._generation = 0  # bumped by invalidate: a scan started before must not be kept
        self._cell: _SharedCell | None = None
        self._scanning = False  # a background scan (check_write) is running
        if _shared_directory is not None:
            try:
                self._cell = _SharedCell.for_directory(_shared_directory, directory)
            except OSError as exc:  # e.g. a full pool: count in this process (and say so)
                log.warning("quota usage of %s is not shared with the other workers (%s): each "
                            "worker checks it on its own", directory, exc)

    def _shared(self) -> _SharedCell | None:
        """The cross-process cell, used only while the export has a quota."""
        return self._cell if self.quota_bytes is not None else None

    @property
    def scanned(self) -> bool:
        cell = self._shared()
        if cell is not None:
            return cell.read()[1]
        return self._used is not None

    @property
    def used(self) -> int:
        return self.current()

    def current(self, may_scan: bool = True) -> int:
        """Used bytes; scans the export first if unknown (WouldBlock if ``may_scan`` is false)."""
        cell = self._shared()
        if cell is not None:
            generation, known, used = cell.read()
            if known:
                return used
            if not may_scan:
                raise WouldBlock("the export's usage is not known yet")
            scanned = scan_usage(self.directory)
            cell.store_scan(generation, scanned)
            return scanned
        used = self._used
        if used is not None:
            return used
        if not may_scan:
            raise WouldBlock("the export's usage is not known yet")
        generation = self._generation
        scanned = scan_usage(self.directory)
        with self._lock:
            if self._generation == generation and self._used is None:
                self._used = scanned
        return scanned

    def invalidate(self, quota_bytes: int | None) -> None:
        """New quota; forget the usage figure (rescanned lazily on next use)."""
        with self._lock:
            self.quota_bytes = quota_bytes
            self._used = None
            self._generation += 1
        cell = self._shared()
        if cell is not None:
            cell.invalidate()

    def add(self, delta: int) -> None:
        if not delta:
            return
        cell = self._shared()
        if cell is not None:
            cell.add(delta)
        elif self._used is not None:
            with self._lock:
                self._used = max(0, self._used + delta)

    def check_write(self, fd: int, offset: int, length: int, st: os.stat_result, may_scan: bool = True) -> None:
        """Raise QuotaExceeded if writing [offset, offset + length) of the open file ``fd`` (whose
        attributes are ``st``) would allocate past the quota.

        While the known usage plus every block the write touches fits the quota, nothing more is
        asked of the file system; only a write that could cross the quota (or meets an unknown
        usage) is measured with ``unallocated_bytes`` (no system call for a file allocated in
        full, else a FIEMAP: ~2-4 us).
        """
        quota = self.quota_bytes
        if quota is None:
            return
        try:
            used = self.current(may_scan=False)
        except WouldBlock:  # unknown: an overwrite of allocated data still needs no scan, but
            used = None     # without a figure every write would pay for the exact check
            self._scan_in_background()
        if used is not None and used + _blocks_touched(offset, offset + length) <= quota:
            return
        self.check_growth(unallocated_bytes(fd, offset, length, st.st_size, st.st_blocks), may_scan)

    def _scan_in_background(self) -> None:
        """Learn the usage in a thread of its own (one at a time), never on the caller's."""
        with self._lock:
            if self._scanning:
                return
            self._scanning = True

        def scan() -> None:
            try:
                self.current()
            except Exception:  # noqa: BLE001 - the next check_write tries again
                log.exception("usage scan of %s failed", self.directory)
            finally:
                self._scanning = False

        threading.Thread(target=scan, name="acmenfs-usage-scan", daemon=True).start()

    def check_growth(self, growth: int, may_scan: bool = True) -> None:
        """Raise QuotaExceeded if allocating ``growth`` more bytes would exceed the quota.

        An operation that allocates nothing (``growth <= 0``: an overwrite of allocated
        data, a sparse size extension, a truncation) is never refused.  With ``may_scan``
        false, an unknown usage raises WouldBlock instead of scanning.
        """
        quota = self.quota_bytes
        if quota is None or growth <= 0:
            return
        used = self.current(may_scan)
        if used + growth > quota:
            raise QuotaExceeded(f"quota of {quota} bytes exceeded ({used} used, {growth} more wanted)")
