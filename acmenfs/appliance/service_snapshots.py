"""The appliance service's snapshot operations: snapshot, list, delete, clone, revert.

Owns ``SnapshotOperations`` (a part of ``ApplianceService``): taking a
snapshot (in place on btrfs, via staging elsewhere), deleting one unless a
clone or revert holds it pinned, cloning a snapshot into a new share (volume
file renamed, grown, chowned in staging) and reverting a share to a snapshot
(one ``RENAME_EXCHANGE`` swap, row updated after, swap undone if the row write
fails).  The crash-safe ordering is the one service.py describes.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Callable

from acmenfs.appliance.errors import Conflict, InvalidRequest, error_for_os_error
from acmenfs.appliance.models import (
    STATE_AVAILABLE,
    STATE_CREATING,
    AccessRule,
    Share,
    Snapshot,
    utc_now_text,
    validate_name,
    validate_owner_id,
    validate_size,
)
from acmenfs.appliance.publishing import (
    publish_snapshot,
    share_model,
    snapshot_model,
)
from acmenfs.appliance.service_base import ServiceBase
from acmenfs.appliance.storage import fsync_path, rename_durably, rename_exchange, set_volume_owner
from acmenfs.appliance.store import ShareRecord, SnapshotRecord
from acmenfs.appliance.volumes import adopt_volume

log = logging.getLogger("acmenfs.appliance.service")


class SnapshotOperations(ServiceBase):
    """Snapshots of a share, clones of a snapshot, reverting a share to one."""

    # -- snapshots --------------------------------------------------------------------------

    def create_snapshot(self, share_id: str, name: str) -> Snapshot:
        """A read-only point-in-time copy of the share, exported at /snapshots/<id>."""
        with self._operation("create_snapshot"), self._share_locked(share_id):
            validate_name(name)
            share = self._require_available_share(share_id)
            self._require_free_space("create snapshot")
            record = SnapshotRecord(
                id=str(uuid.uuid4()), share_id=share_id, name=name, size=share.size, state=STATE_CREATING,
                created_at=utc_now_text(), volume_name=share.volume_name, volume_sparse=share.volume_sparse,
                volume_mode=share.volume_mode,
            )
            self._store.insert_snapshot(record)
            final = self.layout.snapshot_dir(record.id)
            try:
                if self.backend.snapshot_in_place:
                    self.backend.snapshot(self.layout.share_dir(share_id), final)
                    fsync_path(final.parent)
                else:
                    staging = self.layout.staging_dir(record.id)
                    self.backend.snapshot(self.layout.share_dir(share_id), staging)
                    rename_durably(staging, final)
                self._store.set_snapshot_state(record.id, STATE_AVAILABLE)
            except BaseException as exc:
                self._roll_back_snapshot(record)
                if isinstance(exc, OSError):
                    raise error_for_os_error(exc, "create snapshot") from exc
                raise
            publish_snapshot(self.exports, self.layout, record, share.access)
            log.info("created snapshot %s (%s) of share %s", record.id, name, share_id)
            return snapshot_model(record)

    def list_snapshots(self, share_id: str) -> list[Snapshot]:
        self._require_share(share_id)
        return [snapshot_model(record) for record in self._store.list_snapshots(share_id)]

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return snapshot_model(self._require_snapshot(snapshot_id))

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._operation("delete_snapshot"):
            record = self._require_snapshot(snapshot_id)
            with self._share_locked(record.share_id):
                record = self._require_snapshot(snapshot_id)
                if record.state == STATE_CREATING:
                    raise Conflict(f"snapshot {snapshot_id} is still being created", "share_busy")
                with self._mutex:
                    if self._pinned_snapshots[snapshot_id]:
                        raise Conflict(f"snapshot {record.name!r} is being cloned or reverted to", "share_busy")
                    self._store.set_snapshot_state(snapshot_id, "deleting")
                self._remove_snapshot_data_and_row(record)
                log.info("deleted snapshot %s (%s) of share %s", snapshot_id, record.name, record.share_id)

    def clone_snapshot(
        self,
        snapshot_id: str,
        name: str,
        size: int | None = None,
        volume_name: str | None = None,
        access: list[AccessRule] | None = None,
        progress: Callable[[int, int], None] | None = None,
        volume_uid: int | None = None,
        volume_gid: int | None = None,
    ) -> Share:
        """A new share with the snapshot's content; its volume file renamed/grown/chowned on request.

        The volume file keeps the snapshot's owner unless ``volume_uid`` /
        ``volume_gid`` are given (chowned in staging, before the rename into place).
        """
        with self._operation("clone_snapshot"):
            validate_name(name)
            if size is not None:
                validate_size(size)
            if volume_name is not None:
                validate_name(volume_name, "volume_name")
            volume_uid = validate_owner_id(volume_uid, "volume_uid")
            volume_gid = validate_owner_id(volume_gid, "volume_gid")
            with self._pinned(snapshot_id) as snapshot:
                if size is not None and size < snapshot.size:
                    raise InvalidRequest(
                        f"size {size} is smaller than the snapshot's size {snapshot.size}", "invalid_size"
                    )
                if volume_name is not None and snapshot.volume_name is None:
                    raise InvalidRequest("volume_name given but the snapshot holds no volume file", "invalid_request")
                if (volume_uid is not None or volume_gid is not None) and snapshot.volume_name is None:
                    raise InvalidRequest(
                        "volume_uid/volume_gid given but the snapshot holds no volume file", "invalid_request"
                    )
                new_size = size or snapshot.size
                self._require_free_space("clone snapshot")
                record = ShareRecord(
                    id=str(uuid.uuid4()), name=name, size=new_size, state=STATE_CREATING, created_at=utc_now_text(),
                    origin_snapshot_id=snapshot_id, volume_name=volume_name or snapshot.volume_name,
                    volume_sparse=snapshot.volume_sparse, volume_mode=snapshot.volume_mode,
                    access=self._rules_or_default(access),
                )

                def build(staging: Path) -> None:
                    self.backend.clone(self.layout.snapshot_dir(snapshot_id), staging, progress)
                    adopt_volume(staging, snapshot.volume_name, record.volume_name, new_size,
                                       snapshot.volume_sparse)
                    volume_path = staging / record.volume_name if record.volume_name else None
                    if volume_path is not None and volume_path.exists():
                        set_volume_owner(volume_path, volume_uid, volume_gid)

                return self._create_share_from(record, build, "clone snapshot")

    def revert_share(self, share_id: str, snapshot_id: str) -> Share:
        """Replace the share's content with the snapshot's (one atomic directory swap).

        The volume file keeps the share's size (grown if the snapshot's is
        smaller) and takes the snapshot's name. The volume name in the row is
        updated just after the swap: a crash exactly between the two leaves the
        old name in the row, which only matters if the name changed since the
        snapshot (then ``volume`` reads null until ``put_volume`` renames it).
        """
        with self._operation("revert_share"), self._share_locked(share_id):
            share = self._require_available_share(share_id)
            with self._pinned(snapshot_id, missing_code="snapshot_not_found") as snapshot:
                if snapshot.share_id != share_id:
                    raise InvalidRequest(f"snapshot {snapshot_id} belongs to another share", "invalid_request")
                staging = self.layout.staging_dir(str(uuid.uuid4()))
                share_dir = self.layout.share_dir(share_id)
                try:
                    self.backend.clone(self.layout.snapshot_dir(snapshot_id), staging)
                    adopt_volume(staging, snapshot.volume_name, snapshot.volume_name, share.size,
                                       snapshot.volume_sparse)
                    rename_exchange(staging, share_dir)
                except OSError as exc:
                    self._discard(staging, share_id)
                    raise error_for_os_error(exc, "revert share") from exc
                share = share.with_changes(
                    volume_name=snapshot.volume_name, volume_sparse=snapshot.volume_sparse,
                    volume_mode=snapshot.volume_mode,
                )
                try:
                    self._store.update_share(share)
                except BaseException:
                    rename_exchange(staging, share_dir)  # the previous content back in place
                    self._discard(staging, share_id)
                    raise
                self._discard(staging, share_id)  # now holds the share's previous content
            self._publish_share(share)  # a re-add is a reopen (ExportTable): every server drops the old tree
            log.info("reverted share %s to snapshot %s (%s)", share_id, snapshot_id, snapshot.name)
            return share_model(self.layout, share)
