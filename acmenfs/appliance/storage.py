"""Storage backends: how share, snapshot and clone directories are made on disk.

Owns the data dir layout (``DataLayout``), the two backends (``reflink``: plain
directories copied with FICLONE or a sparse-aware copy; ``btrfs``: subvolumes and
subvolume snapshots), auto-detection of the backend from the data dir's file
system, and the file helpers the service needs (volume files, atomic renames,
fsync of directories, allocated-bytes walks). It must not touch the store, the
export table or decide policy (names, states, locking): the service does that.

Layout of a data dir::

    <data>/acmenfs.db          metadata (SQLite, WAL, exclusive locking: no -shm file)
    <data>/acmenfs.db.reserve  space held back for the database on a full pool (store.DatabaseReserve)
    <data>/shares/<uuid>/      a share's data (a btrfs subvolume on the btrfs backend)
    <data>/snapshots/<uuid>/   a snapshot's data (read-only subvolume on btrfs)
    <data>/staging/<uuid>      work in progress: made here, renamed into place when complete
    <data>/trash/<name>        being deleted: renamed here first, then removed
    <data>/nfs-state/          the NFS server's own state (not written here)
    <data>/admin.token         the first admin token, mode 0600
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger("acmenfs.appliance.storage")

# A volume file being created inside a share is built under this hidden name and
# renamed into place; volume names never start with ".", so these never clash.
PARTIAL_VOLUME_PREFIX = ".acmenfs-partial-"

Progress = Callable[[int, int], None]
FICLONE = 0x40049409
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
COPY_CHUNK = 64 * 1024 * 1024
BTRFS_SUBVOLUME_ROOT_INODE = 256
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SNAP_DESTROY = 0x5000940F  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_NAME_MAX = 255
_REFLINK_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS}
_COPY_RANGE_UNSUPPORTED = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class DataLayout:
    """Where everything lives inside a data dir."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "acmenfs.db"

    @property
    def shares(self) -> Path:
        return self.root / "shares"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    @property
    def nfs_state(self) -> Path:
        return self.root / "nfs-state"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    def share_dir(self, share_id: str) -> Path:
        return self.shares / share_id

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.snapshots / snapshot_id

    def staging_dir(self, item_id: str) -> Path:
        return self.staging / item_id

    def create(self) -> None:
        for directory in (self.root, self.shares, self.snapshots, self.staging, self.trash, self.nfs_state):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)


# -- small file-system helpers --------------------------------------------------------


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


# -- backends -----------------------------------------------------------------------------


class StorageBackend(Protocol):
    """What the service needs from a backend. Targets never exist beforehand.

    ``snapshot_in_place``: snapshots are made directly at their final path
    (because they appear atomically and cannot be moved afterwards); otherwise
    they are made in staging and renamed into place by the service.
    """

    name: str
    snapshot_in_place: bool

    def create_share_dir(self, target: Path) -> None: ...

    def snapshot(self, share_dir: Path, target: Path, progress: Progress | None = None) -> None: ...

    def clone(self, snapshot_dir: Path, target: Path, progress: Progress | None = None) -> None: ...

    def remove(self, path: Path) -> None: ...

    def discard(self, path: Path, trash: Path) -> None: ...


def discard_via_trash(path: Path, trash: Path, remove: Callable[[Path], None]) -> None:
    """Rename ``path`` into the trash durably (one atomic step), then remove it there."""
    if not os.path.lexists(path):
        return
    rename_durably(path, trash)
    remove(trash)


class ReflinkBackend:
    """Plain directories; snapshots and clones are tree copies (FICLONE where possible).

    A snapshot directory is made read-only by how it is exported (read-only
    export, rules forced to 'ro'), not by its file modes: those are kept so a
    clone gets them back.
    """

    name = "reflink"
    snapshot_in_place = False

    def create_share_dir(self, target: Path) -> None:
        os.mkdir(target, 0o755)

    def snapshot(self, share_dir: Path, target: Path, progress: Progress | None = None) -> None:
        copy_tree(share_dir, target, progress)

    def clone(self, snapshot_dir: Path, target: Path, progress: Progress | None = None) -> None:
        copy_tree(snapshot_dir, target, progress)

    def remove(self, path: Path) -> None:
        remove_tree(path)

    def discard(self, path: Path, trash: Path) -> None:
        discard_via_trash(path, trash, self.remove)


class BtrfsBackend:
    """Shares are btrfs subvolumes; snapshots read-only subvolume snapshots; clones writable ones.

    Uses the btrfs ioctls directly (SUBVOL_CREATE, SNAP_CREATE_V2, SNAP_DESTROY:
    a few ms each, no fork). btrfs cannot move a read-only subvolume to another
    directory, so snapshots are made in place (``snapshot_in_place``): a
    subvolume snapshot appears atomically and complete, and its row stays
    ``creating`` until it exists, so reconcile can still roll it back.
    Subvolumes are discarded in place too: SNAP_DESTROY unlinks one atomically.
    """

    name = "btrfs"
    snapshot_in_place = True

    def create_share_dir(self, target: Path) -> None:
        _btrfs_ioctl(target.parent, BTRFS_IOC_SUBVOL_CREATE, _vol_args(target.name))

    def snapshot(self, share_dir: Path, target: Path, progress: Progress | None = None) -> None:
        _btrfs_snapshot(share_dir, target, read_only=True)
        _report_instant(progress)

    def clone(self, snapshot_dir: Path, target: Path, progress: Progress | None = None) -> None:
        _btrfs_snapshot(snapshot_dir, target, read_only=False)
        _report_instant(progress)

    def remove(self, path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if _is_subvolume(info):
            _btrfs_ioctl(path.parent, BTRFS_IOC_SNAP_DESTROY, _vol_args(path.name))
        else:
            remove_tree(path)

    def discard(self, path: Path, trash: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if _is_subvolume(info):
            self.remove(path)
        else:
            discard_via_trash(path, trash, self.remove)


def _is_subvolume(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode) and info.st_ino == BTRFS_SUBVOLUME_ROOT_INODE


def _vol_args(name: str, fd: int = 0) -> bytearray:
    """struct btrfs_ioctl_vol_args: s64 fd; char name[4088]."""
    encoded = os.fsencode(name)
    if len(encoded) > BTRFS_NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, f"subvolume name too long: {name!r}")
    args = bytearray(4096)
    struct.pack_into("<q", args, 0, fd)
    args[8:8 + len(encoded)] = encoded
    return args


def _vol_args_v2(name: str, source_fd: int, flags: int) -> bytearray:
    """struct btrfs_ioctl_vol_args_v2: s64 fd; u64 transid; u64 flags; u64 unused[4]; char name[4040]."""
    encoded = os.fsencode(name)
    if len(encoded) > BTRFS_NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, f"subvolume name too long: {name!r}")
    args = bytearray(4096)
    struct.pack_into("<qQQ", args, 0, source_fd, 0, flags)
    args[56:56 + len(encoded)] = encoded
    return args


def _btrfs_ioctl(directory: Path, request: int, args: bytearray) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, request, args)
    finally:
        os.close(fd)


def _btrfs_snapshot(source: Path, target: Path, read_only: bool) -> None:
    source_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = BTRFS_SUBVOL_RDONLY if read_only else 0
        _btrfs_ioctl(target.parent, BTRFS_IOC_SNAP_CREATE_V2, _vol_args_v2(target.name, source_fd, flags))
    finally:
        os.close(source_fd)


def _report_instant(progress: Progress | None) -> None:
    if progress is not None:
        progress(1, 1)


BACKENDS = {"reflink": ReflinkBackend, "btrfs": BtrfsBackend}


def choose_backend(data_dir: Path, requested: str | None = None) -> StorageBackend:
    """The backend for a data dir: ``requested`` if given, else btrfs on btrfs, else reflink."""
    fs_type = filesystem_type(data_dir)
    name = requested or ("btrfs" if fs_type == "btrfs" else "reflink")
    if name not in BACKENDS:
        raise ValueError(f"unknown storage backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    if name == "btrfs" and fs_type != "btrfs":
        raise ValueError(f"the btrfs backend needs a btrfs data dir; {data_dir} is on {fs_type}")
    return BACKENDS[name]()
