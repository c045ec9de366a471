"""Copying and removing directory trees for the appliance's reflink backend.

Owns ``copy_tree`` (the copy fallback of snapshots and clones: FICLONE where the
file system can, else a sparse-aware copy of the data segments with
``copy_file_range`` or read/write, metadata kept, progress reported) and
``remove_tree``.  It decides nothing about where trees live.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Callable

from acmenfs.appliance.storage_files import fsync_path

log = logging.getLogger("acmenfs.appliance.storage")

Progress = Callable[[int, int], None]
FICLONE = 0x40049409
COPY_CHUNK = 64 * 1024 * 1024
_REFLINK_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS}
_COPY_RANGE_UNSUPPORTED = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

# -- copying trees ----------------------------------------------------------------------


class _ProgressMeter:
    """Counts bytes done against a total and reports them (at most once per chunk)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress

    def advance(self, count: int) -> None:
        self.done += count
        if self._progress is not None:
            self._progress(min(self.done, self.total), self.total)


def tree_logical_bytes(path: Path) -> int:
    """Sum of the apparent sizes of the regular files under ``path``."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def copy_tree(source: Path, target: Path, progress: Progress | None = None) -> dict[str, int]:
    """Copy a directory tree, sharing blocks where the file system can (FICLONE).

    Falls back per file to copy_file_range over the data segments only
    (SEEK_DATA/SEEK_HOLE), then to read/write, so holes stay holes. Keeps modes,
    owners, times, symlinks, subdirectories and FIFOs; other special files are
    skipped with a warning; hard links become separate files. Everything written
    is fsynced before returning. Returns counts of files by copy method.
    """
    meter = _ProgressMeter(tree_logical_bytes(source), progress)
    methods = {"reflink": 0, "copy": 0}
    _copy_directory(source, target, meter, methods)
    if progress is not None:
        progress(meter.total, meter.total)
    return methods


def _copy_directory(source: Path, target: Path, meter: _ProgressMeter, methods: dict[str, int]) -> None:
    info = os.lstat(source)
    os.mkdir(target, 0o700)
    with os.scandir(source) as entries:
        for entry in entries:
            _copy_entry(Path(entry.path), target / entry.name, meter, methods)
    _copy_metadata(target, info)
    fsync_path(target)


def _copy_entry(source: Path, target: Path, meter: _ProgressMeter, methods: dict[str, int]) -> None:
    info = os.lstat(source)
    if stat.S_ISDIR(info.st_mode):
        _copy_directory(source, target, meter, methods)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
        os.lchown(target, info.st_uid, info.st_gid)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
    elif stat.S_ISREG(info.st_mode):
        methods[copy_file(source, target, meter)] += 1
    elif stat.S_ISFIFO(info.st_mode):
        os.mkfifo(target, 0o600)
        _copy_metadata(target, info)
    else:
        log.warning("copy: skipping special file %s (mode %o)", source, info.st_mode)


def _copy_metadata(target: Path, info: os.stat_result) -> None:
    os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


def copy_file(source: Path, target: Path, meter: _ProgressMeter) -> str:
    """Copy one regular file; returns 'reflink' or 'copy' (the method that worked)."""
    source_fd = os.open(source, os.O_RDONLY)
    try:
        info = os.fstat(source_fd)
        target_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            method = "reflink" if _try_reflink(source_fd, target_fd) else "copy"
            if method == "reflink":
                meter.advance(info.st_size)
            else:
                _copy_data_segments(source_fd, target_fd, info.st_size, meter)
            os.fchown(target_fd, info.st_uid, info.st_gid)
            os.fchmod(target_fd, stat.S_IMODE(info.st_mode))
            os.utime(target_fd, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.fsync(target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)
    return method


def _try_reflink(source_fd: int, target_fd: int) -> bool:
    try:
        fcntl.ioctl(target_fd, FICLONE, source_fd)
    except OSError as exc:
        if exc.errno in _REFLINK_UNSUPPORTED:
            return False
        raise
    return True


def data_segments(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data (non-hole) regions of a file."""
    segments = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        segments.append((start, min(end, size) - start))
        offset = end
    return segments


def _copy_data_segments(source_fd: int, target_fd: int, size: int, meter: _ProgressMeter) -> None:
    copied = 0
    use_copy_range = True
    for start, length in data_segments(source_fd, size):
        position = start
        while position < start + length:
            count = min(COPY_CHUNK, start + length - position)
            if use_copy_range:
                try:
                    written = os.copy_file_range(source_fd, target_fd, count, position, position)
                except OSError as exc:
                    if exc.errno not in _COPY_RANGE_UNSUPPORTED:
                        raise
                    use_copy_range = False
                    continue
            else:
                written = _copy_chunk_by_read_write(source_fd, target_fd, count, position)
            if written == 0:
                break
            position += written
            copied += written
            meter.advance(written)
    meter.advance(size - copied)  # the holes count as done
    os.ftruncate(target_fd, size)


def _copy_chunk_by_read_write(source_fd: int, target_fd: int, count: int, position: int) -> int:
    data = os.pread(source_fd, min(count, 4 * 1024 * 1024), position)
    if data and data.count(0) != len(data):  # all-zero chunks stay holes
        os.pwrite(target_fd, data, position)
    return len(data)


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


