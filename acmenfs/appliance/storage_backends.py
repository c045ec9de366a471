"""The appliance's storage backends and the choice between them.

Owns the ``StorageBackend`` protocol, ``ReflinkBackend`` (plain directories,
snapshots and clones are tree copies), ``BtrfsBackend`` (subvolumes and
subvolume snapshots through the btrfs ioctls), discarding through the trash,
and ``choose_backend`` (btrfs on btrfs, else reflink, or the one asked for).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from pathlib import Path
from typing import Callable, Protocol

from acmenfs.appliance.storage_copy import Progress, copy_tree, remove_tree
from acmenfs.appliance.storage_files import filesystem_type, rename_durably

BTRFS_SUBVOLUME_ROOT_INODE = 256
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SNAP_DESTROY = 0x5000940F  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_NAME_MAX = 255


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
