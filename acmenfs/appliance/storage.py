"""Storage backends: how share, snapshot and clone directories are made on disk.

Owns the data dir layout (``DataLayout``), the two backends (``reflink``: plain
directories copied with FICLONE or a sparse-aware copy; ``btrfs``: subvolumes and
subvolume snapshots), auto-detection of the backend from the data dir's file
system, and the file helpers the service needs (volume files, atomic renames,
fsync of directories, allocated-bytes walks). It must not touch the store, the
export table or decide policy (names, states, locking): the service does that.

Split by concern: this module owns ``DataLayout`` and re-exports the rest, so
``acmenfs.appliance.storage`` stays the one import path: storage_files.py (renames,
fsync, volume files), storage_copy.py (tree copies and removal),
storage_backends.py (the reflink and btrfs backends, ``choose_backend``).

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

from dataclasses import dataclass
from pathlib import Path

from acmenfs.appliance.storage_backends import (
    BACKENDS,
    BtrfsBackend,
    ReflinkBackend,
    StorageBackend,
    choose_backend,
    discard_via_trash,
)
from acmenfs.appliance.storage_copy import (
    Progress,
    copy_file,
    copy_tree,
    data_segments,
    remove_tree,
    tree_logical_bytes,
)
from acmenfs.appliance.storage_files import (
    PARTIAL_VOLUME_PREFIX,
    allocated_bytes,
    create_volume_file,
    filesystem_type,
    fsync_path,
    grow_volume_file,
    rename_durably,
    rename_exchange,
    rename_no_replace,
    set_volume_owner,
    shrink_volume_file,
)

__all__ = [  # the storage API, whichever module now holds each part
    "BACKENDS", "BtrfsBackend", "DataLayout", "PARTIAL_VOLUME_PREFIX", "Progress", "ReflinkBackend",
    "StorageBackend", "allocated_bytes", "choose_backend", "copy_file", "copy_tree", "create_volume_file",
    "data_segments", "discard_via_trash", "filesystem_type", "fsync_path", "grow_volume_file", "remove_tree",
    "rename_durably", "rename_exchange", "rename_no_replace", "set_volume_owner", "shrink_volume_file",
    "tree_logical_bytes",
]


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
