"""Manage and unmanage: adopting shares and snapshots Cinder did not create.

Owns: finding a share by a Cinder reference (``source-name``: share name or
export path; ``source-id``: share uuid), finding a snapshot of a volume's share
by reference, adopting a share's volume file (renamed to the volume's name,
grown to whole GiB, chowned to ``acmenfs_volume_owner`` when set), and the
lists of manageable volumes and snapshots.

Must not: change anything on unmanage (the share stays as it is), or rename a
snapshot's file: a snapshot taken before manage keeps the old file name, which
is why ``revert_to_snapshot`` renames after reverting.
"""

from __future__ import annotations

from typing import Any

from cinder import exception
from cinder.i18n import _

from acmenfs.cinder.appliance_client import ApplianceClient, ApplianceError, ApplianceNotFound
from acmenfs.cinder.common import backend_error, bytes_to_gib_rounded_up, gib_to_bytes


def _lookup_share(client: ApplianceClient, reference: dict) -> dict | None:
    if reference.get("source-id"):
        return client.get_share(reference["source-id"])
    name = reference.get("source-name")
    if not name:
        return None
    matches = client.list_shares(export_path=name) if name.startswith("/") else client.list_shares(name=name)
    return matches[0] if matches else None


def share_by_reference(client: ApplianceClient, existing_ref: dict) -> dict:
    """The share ``existing_ref`` names, or ManageExistingInvalidReference saying why not."""
    reference = existing_ref or {}
    try:
        share = _lookup_share(client, reference)
    except ApplianceNotFound:
        share = None
    except ApplianceError as error:
        raise backend_error("looking up a share to manage", error) from error
    if share is not None:
        return share
    if not (reference.get("source-id") or reference.get("source-name")):
        reason = _("give 'source-name' (share name or export path) or 'source-id' (share uuid)")
    else:
        reason = _("no such share on the appliance")
    raise exception.ManageExistingInvalidReference(existing_ref=existing_ref, reason=reason)


def managed_volume_file(client: ApplianceClient, existing_ref: dict) -> tuple[dict, dict]:
    share = share_by_reference(client, existing_ref)
    if not share.get("volume"):
        raise exception.ManageExistingInvalidReference(
            existing_ref=existing_ref, reason=_("share %s holds no volume file") % share["id"])
    return share, share["volume"]


def adopt(client: ApplianceClient, volume: Any, existing_ref: dict, owner: dict[str, int]) -> dict:
    """Rename, grow and (when configured) chown the share's volume file; returns the share."""
    share, volume_file = managed_volume_file(client, existing_ref)
    size = gib_to_bytes(bytes_to_gib_rounded_up(volume_file["size"]))
    try:
        share = client.put_volume(share["id"], volume.name, size=size, **owner)
        if share.get("size", size) < size:
            share = client.extend_share(share["id"], size)
    except ApplianceError as error:
        raise backend_error(f"managing share {share['id']} as volume {volume.id}", error) from error
    return share


def _reason_not_safe(share: dict, cinder_id: str | None) -> str | None:
    if cinder_id:
        return _("already managed")
    if not share.get("volume"):
        return _("share holds no volume file")
    if share.get("state") != "available":
        return _("share is %s") % share.get("state")
    return None


def manageable_volumes(client: ApplianceClient, cinder_volumes: list) -> list[dict]:
    """Every share, marked safe to manage or not (and why)."""
    managed = {volume.provider_id: volume.id for volume in cinder_volumes if volume.provider_id}
    try:
        shares = client.list_shares()
    except ApplianceError as error:
        raise backend_error("listing shares", error) from error
    entries = []
    for share in shares:
        cinder_id = managed.get(share["id"])
        reason = _reason_not_safe(share, cinder_id)
        entries.append({
            "reference": {"source-id": share["id"]},
            "size": bytes_to_gib_rounded_up((share.get("volume") or {}).get("size", share["size"])),
            "safe_to_manage": reason is None,
            "reason_not_safe": reason,
            "cinder_id": cinder_id,
            "extra_info": {"name": share["name"], "export_path": share["export_path"]},
        })
    return entries


def snapshot_by_reference(client: ApplianceClient, share_id: str, existing_ref: dict) -> dict:
    """The snapshot of share ``share_id`` that ``existing_ref`` names (by name or uuid)."""
    reference = existing_ref or {}
    try:
        candidates = client.list_snapshots(share_id)
    except ApplianceError as error:
        raise backend_error("listing snapshots", error) from error
    for candidate in candidates:
        if candidate["id"] == reference.get("source-id") or candidate["name"] == reference.get("source-name"):
            return candidate
    raise exception.ManageExistingInvalidReference(
        existing_ref=existing_ref,
        reason=_("no snapshot with that 'source-name' or 'source-id' on the volume's share"))


def manageable_snapshots(client: ApplianceClient, cinder_snapshots: list) -> list[dict]:
    """Every snapshot of every share, marked safe to manage unless Cinder has it."""
    managed = {snapshot.provider_id: snapshot.id for snapshot in cinder_snapshots if snapshot.provider_id}
    entries = []
    try:
        for share in client.list_shares():
            for found in client.list_snapshots(share["id"]):
                cinder_id = managed.get(found["id"])
                entries.append({
                    "reference": {"source-id": found["id"]},
                    "size": bytes_to_gib_rounded_up(found.get("size") or share["size"]),
                    "safe_to_manage": cinder_id is None,
                    "reason_not_safe": _("already managed") if cinder_id else None,
                    "cinder_id": cinder_id,
                    "source_reference": {"source-id": share["id"]},
                    "extra_info": {"name": found["name"]},
                })
    except ApplianceError as error:
        raise backend_error("listing snapshots", error) from error
    return entries
