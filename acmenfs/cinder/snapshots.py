"""Snapshots, clones and reverts of the acmenfs Cinder driver (a mixin of ``AcmeNfsDriver``).

Owns: appliance snapshots for Cinder snapshots (``provider_id`` = snapshot
uuid; a same-named one left by an interrupted attempt is adopted), volumes
from snapshots and clones of volumes (appliance clones: independent of their
snapshot, so ``create_cloned_volume`` drops its temporary snapshot after
success too), and ``revert_to_snapshot`` as one atomic appliance call (so the
manager's backup snapshot would protect nothing:
``snapshot_revert_use_temp_snapshot`` is False).

Must not: mount or copy data (all of it is appliance work). Relies on the
driver for ``_require_client``, ``_share``/``_share_id``/``_find_share``,
``_model_update`` and ``_owner_fields``.
"""

from __future__ import annotations

from typing import Any

from oslo_log import log as logging

from cinder import coordination
from cinder import exception

from acmenfs.cinder.appliance_client import ApplianceConflict, ApplianceError, ApplianceNotFound
from acmenfs.cinder.common import backend_error, gib_to_bytes

LOG = logging.getLogger(__name__)

TEMPORARY_CLONE_SNAPSHOT_PREFIX = "clone-source-"


class SnapshotsMixin:
    """Snapshot, clone and revert calls of the Cinder volume-driver interface."""

    def _create_appliance_snapshot(self, share_id: str, name: str) -> dict:
        """Create, or adopt a same-named snapshot left by an interrupted attempt."""
        client = self._require_client()
        try:
            return client.create_snapshot(share_id, name)
        except ApplianceConflict as error:
            if error.code != "name_conflict":
                raise
            for existing in client.list_snapshots(share_id):
                if existing["name"] == name:
                    return existing
            raise

    def _delete_appliance_snapshot(self, snapshot_id: str) -> None:
        try:
            self._require_client().delete_snapshot(snapshot_id)
        except ApplianceNotFound:
            LOG.info("acmenfs: snapshot %s already gone", snapshot_id)

    @coordination.synchronized("acmenfs-volume-{snapshot.volume_id}")
    def create_snapshot(self, snapshot: Any) -> dict:
        try:
            created = self._create_appliance_snapshot(self._share_id(snapshot.volume), snapshot.name)
        except ApplianceError as error:
            raise backend_error(f"creating snapshot {snapshot.id}", error) from error
        return {"provider_id": created["id"]}

    def _appliance_snapshot_id(self, snapshot: Any) -> str | None:
        if snapshot.provider_id:
            return snapshot.provider_id
        share = self._find_share(snapshot.volume)
        if share is None:
            return None
        for existing in self._require_client().list_snapshots(share["id"]):
            if existing["name"] == snapshot.name:
                return existing["id"]
        return None

    @coordination.synchronized("acmenfs-volume-{snapshot.volume_id}")
    def delete_snapshot(self, snapshot: Any) -> None:
        try:
            snapshot_id = self._appliance_snapshot_id(snapshot)
            if snapshot_id is None:
                LOG.info("acmenfs: snapshot %s not on the appliance; nothing to delete", snapshot.id)
                return
            self._delete_appliance_snapshot(snapshot_id)
        except ApplianceConflict as error:
            raise exception.SnapshotIsBusy(snapshot_name=snapshot.name) from error
        except ApplianceError as error:
            raise backend_error(f"deleting snapshot {snapshot.id}", error) from error

    def _clone(self, snapshot_id: str, volume: Any) -> dict:
        """Appliance clone of a snapshot into the new volume's share (renamed, grown, chowned when configured)."""
        try:
            share = self._require_client().clone_snapshot(
                snapshot_id, volume.name, size=gib_to_bytes(volume.size), volume_name=volume.name,
                **self._owner_fields("volume_"))
        except ApplianceError as error:
            raise backend_error(f"cloning snapshot {snapshot_id} into volume {volume.id}", error) from error
        return self._model_update(share)

    @coordination.synchronized("acmenfs-volume-{snapshot.volume_id}")
    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> dict:
        snapshot_id = self._appliance_snapshot_id(snapshot)
        if snapshot_id is None:
            raise exception.SnapshotNotFound(snapshot_id=snapshot.id)
        return self._clone(snapshot_id, volume)

    @coordination.synchronized("acmenfs-volume-{src_vref.id}")
    def create_cloned_volume(self, volume: Any, src_vref: Any) -> dict:
        """Temporary snapshot of the source, clone it, then drop the snapshot.

        The clone does not depend on its snapshot on this appliance, so the
        snapshot goes away after success as well as after failure.
        """
        try:
            temporary = self._create_appliance_snapshot(
                self._share_id(src_vref), f"{TEMPORARY_CLONE_SNAPSHOT_PREFIX}{volume.id}")
        except ApplianceError as error:
            raise backend_error(f"snapshotting volume {src_vref.id} for a clone", error) from error
        try:
            return self._clone(temporary["id"], volume)
        finally:
            try:
                self._delete_appliance_snapshot(temporary["id"])
            except ApplianceError as error:
                LOG.warning("acmenfs: could not delete temporary snapshot %(snap)s of volume "
                            "%(vol)s: %(error)s", {"snap": temporary["id"], "vol": src_vref.id,
                                                   "error": error})

    def snapshot_revert_use_temp_snapshot(self) -> bool:
        return False

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def revert_to_snapshot(self, context: Any, volume: Any, snapshot: Any) -> None:
        """Appliance revert, then the volume's own file name, owner and size back."""
        client = self._require_client()
        snapshot_id = self._appliance_snapshot_id(snapshot)
        if snapshot_id is None:
            raise exception.SnapshotNotFound(snapshot_id=snapshot.id)
        try:
            share = client.revert_share(self._share_id(volume), snapshot_id)
            share = self._restore_volume_file_name(share, volume)
            wanted = gib_to_bytes(volume.size)
            if (share.get("volume") or {}).get("size", wanted) < wanted or share.get("size", wanted) < wanted:
                client.extend_share(share["id"], wanted)
        except ApplianceError as error:
            raise backend_error(f"reverting volume {volume.id} to snapshot {snapshot.id}", error) from error

    def _restore_volume_file_name(self, share: dict, volume: Any) -> dict:
        """A revert brings back the snapshot's file name (``disk.img`` for a snapshot
        taken before manage_existing renamed it) and owner: rename to the name Nova
        opens, and chown to acmenfs_volume_owner when set."""
        reverted = share.get("volume")
        owner = self._owner_fields()
        if not reverted:
            LOG.warning("acmenfs: snapshot reverted into volume %s holds no volume file", volume.id)
            return share
        if reverted.get("name") == volume.name and all(reverted.get(key) == value for key, value in owner.items()):
            return share
        LOG.info("acmenfs: revert of volume %(id)s brought back file %(old)s; renaming it to %(new)s",
                 {"id": volume.id, "old": reverted.get("name"), "new": volume.name})
        return self._require_client().put_volume(share["id"], volume.name, **owner)
