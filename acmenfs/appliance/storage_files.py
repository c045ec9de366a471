"""Small file-system helpers of the appliance storage: what a rename or a volume file needs.

Owns the file-system type of a path, fsync by path, durable renames (plain,
no-replace and exchange via ``renameat2``), allocated-bytes walks, and volume
files: creating one with its owner and mode, chowning, growing (sparse or
allocated) and shrinking back.  It knows nothing of shares, the store or backends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from pathlib import Path

# A volume file being created inside a share is built under this hidden name and
# renamed into place; volume names never start with ".", so these never clash.
PARTIAL_VOLUME_PREFIX = ".acmenfs-partial-"

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2



def filesystem_type(path: str | Path) -> str:
    """The file-system type (e.g. 'btrfs', 'xfs', 'ext4') of the mount holding ``path``."""
    target = os.path.realpath(path)
    best_mount, best_type = "", "unknown"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            mount_point = fields[4].encode().decode("unicode_escape")
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best_mount):
                best_mount, best_type = mount_point, fields[separator + 1]
    return best_type


def fsync_path(path: str | Path) -> None:
    """fsync a file or directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_durably(source: Path, target: Path) -> None:
    """Rename (never replacing an existing target dir's content) and fsync both parents."""
    os.rename(source, target)
    fsync_path(target.parent)
    if source.parent != target.parent:
        fsync_path(source.parent)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _renameat2(first: Path, second: Path, flags: int, flag_name: str) -> None:
    AT_FDCWD = -100
    result = _libc.renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"renameat2({flag_name}) {first} -> {second}: {os.strerror(code)}")


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` only if ``target`` does not exist (EEXIST otherwise); fsync the parent."""
    _renameat2(source, target, RENAME_NOREPLACE, "RENAME_NOREPLACE")
    fsync_path(target.parent)


def rename_exchange(first: Path, second: Path) -> None:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE) and fsync their parents."""
    _renameat2(first, second, RENAME_EXCHANGE, "RENAME_EXCHANGE")
    fsync_path(first.parent)
    if first.parent != second.parent:
        fsync_path(second.parent)


def allocated_bytes(path: str | Path) -> int:
    """Bytes allocated to everything under ``path`` (st_blocks * 512, symlinks not followed)."""
    total = 0
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    total += top.st_blocks * 512
    if not stat.S_ISDIR(top.st_mode):
        return total
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def create_volume_file(path: Path, size: int, sparse: bool, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Create a new volume file of ``size`` bytes owned by ``uid``:``gid``.

    Sparse (ftruncate) or preallocated (fallocate). The owner is set before the
    mode (chown clears set-id bits) and before any data, then all is fsynced.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        _set_length(fd, 0, size, sparse)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def set_volume_owner(path: Path, uid: int | None, gid: int | None) -> None:
    """chown an existing volume file (None keeps that id) and fsync it; the mode bits are kept."""
    if uid is None and gid is None:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def grow_volume_file(path: Path, size: int, sparse: bool) -> int:
    """Grow an existing volume file to ``size`` bytes (never shrinks); returns its previous size.

    All or nothing: if growing fails (ENOSPC halfway through a thick
    fallocate, EFBIG), the file is cut back to its previous size and the
    blocks the attempt allocated are freed before the error is raised.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        current = os.fstat(fd).st_size
        if size > current:
            try:
                _set_length(fd, current, size, sparse)
                os.fsync(fd)
            except BaseException:
                _cut_back(fd, current, size)
                raise
        return current
    finally:
        os.close(fd)


def shrink_volume_file(path: Path, size: int) -> None:
    """Undo a grow: cut the file back to ``size`` and free every block past it."""
    fd = os.open(path, os.O_WRONLY)
    try:
        _cut_back(fd, size, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _cut_back(fd: int, size: int, attempted: int) -> None:
    os.ftruncate(fd, size)
    if attempted > size:  # a failed fallocate may keep blocks past the end of the file
        _punch_hole(fd, size, attempted - size)
    os.fsync(fd)


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _punch_hole(fd: int, offset: int, length: int) -> None:
    result = _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             ctypes.c_int64(offset), ctypes.c_int64(length))
    if result != 0:
        code = ctypes.get_errno()
        if code not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(code, f"fallocate(PUNCH_HOLE): {os.strerror(code)}")


def _set_length(fd: int, current: int, size: int, sparse: bool) -> None:
    if sparse:
        os.ftruncate(fd, size)
    else:
        os.posix_fallocate(fd, current, size - current)


