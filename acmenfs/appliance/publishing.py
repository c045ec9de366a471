"""What the service shows of its rows: the API models, and the live NFS exports.

Owns the export paths (``/shares/<id>``, ``/snapshots/<id>``), building the
``Share``/``Snapshot`` models from rows (the volume file's mode, owner, size
and allocation read from the file itself) and adding or removing exports in
the live ``ExportTable``: a share with its rules and its size as quota, each
available snapshot read-only with its share's rules forced to ``ro``. It
reads files only to stat them and never writes the store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from acmenfs.appliance.models import STATE_AVAILABLE, AccessRule, Share, Snapshot, VolumeFile
from acmenfs.appliance.storage import DataLayout, allocated_bytes
from acmenfs.appliance.store import ShareRecord, SnapshotRecord
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable


def share_export_path(share_id: str) -> str:
    return f"/shares/{share_id}"


def snapshot_export_path(snapshot_id: str) -> str:
    return f"/snapshots/{snapshot_id}"


def share_model(layout: DataLayout, record: ShareRecord) -> Share:
    directory = layout.share_dir(record.id)
    return Share(
        id=record.id, name=record.name, size=record.size, state=record.state,
        export_path=share_export_path(record.id), created_at=record.created_at,
        origin_snapshot_id=record.origin_snapshot_id,
        used_bytes=allocated_bytes(directory) if record.state == STATE_AVAILABLE else 0,
        access=record.access, volume=volume_model(record, directory),
    )


def volume_model(record: ShareRecord, directory: Path) -> VolumeFile | None:
    if record.volume_name is None or record.state != STATE_AVAILABLE:
        return None
    try:
        info = os.lstat(directory / record.volume_name)
    except FileNotFoundError:
        return None
    return VolumeFile(
        name=record.volume_name, size=info.st_size, sparse=record.volume_sparse,
        mode=info.st_mode & 0o7777, allocated_bytes=info.st_blocks * 512, uid=info.st_uid, gid=info.st_gid,
    )


def snapshot_model(record: SnapshotRecord) -> Snapshot:
    return Snapshot(
        id=record.id, share_id=record.share_id, name=record.name, created_at=record.created_at,
        size=record.size, path=snapshot_export_path(record.id),
    )


def publish_share(exports: ExportTable | None, layout: DataLayout, record: ShareRecord,
                  snapshots: Iterable[SnapshotRecord]) -> None:
    """Export the share (and its available snapshots, read-only) with its current rules and quota."""
    if exports is None:
        return
    rules = tuple(ClientRule(rule.client, rule.access, rule.squash) for rule in record.access)
    exports.add(Export(
        path=share_export_path(record.id), directory=str(layout.share_dir(record.id)),
        rules=rules, quota_bytes=record.size,
    ))
    for snapshot in snapshots:
        if snapshot.state == STATE_AVAILABLE:
            publish_snapshot(exports, layout, snapshot, record.access)


def publish_snapshot(exports: ExportTable | None, layout: DataLayout, record: SnapshotRecord,
                     share_rules: tuple[AccessRule, ...]) -> None:
    if exports is None:
        return
    rules = tuple(ClientRule(rule.client, "ro", rule.squash) for rule in share_rules)
    exports.add(Export(
        path=snapshot_export_path(record.id), directory=str(layout.snapshot_dir(record.id)),
        rules=rules, read_only=True,
    ))


def unpublish(exports: ExportTable | None, export_path: str) -> None:
    if exports is not None:
        exports.remove(export_path)
