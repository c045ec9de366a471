"""Manage an existing share and a snapshot taken before, revert, attach: Cinder's real
VolumeManager drives every step, and the file Nova would open is read over NFS after.

The share's file is ``disk.img``; manage_existing renames it to ``volume-<id>``, but
the snapshot (taken before) still holds ``disk.img``, and the appliance's revert
brings the snapshot's name back with its contents. Nova opens the connection
info's ``name`` in the export: it must exist and hold the snapshot's bytes.
"""

from __future__ import annotations

import os
import uuid

import pytest

from cinder import context as cinder_context
from cinder.objects import fields

from conftest import VolumeService, backend_section, db_snapshot, db_volume, require_nfs, volume_file_io

GIB = 1024 ** 3
MIB = 1024 ** 2
QEMU = (64055, 64055)


@pytest.fixture(scope="module")
def manager(cinder_conf, appliance):
    require_nfs(appliance)
    backend_section("manage_revert", appliance, acmenfs_volume_owner="%d:%d" % QEMU)
    service = VolumeService("manage_revert")
    yield service.manager
    service.stop()


def test_revert_to_a_snapshot_taken_before_manage_keeps_the_volume_name(manager, appliance, rest):
    ctxt = cinder_context.get_admin_context()
    legacy = rest.create_share(f"legacy-{uuid.uuid4().hex[:8]}", GIB, volume={"name": "disk.img"})
    before = os.urandom(MIB)
    volume_file_io(appliance, rest, legacy["id"], "disk.img", data=before)
    rest.create_snapshot(legacy["id"], "before-manage")

    volume = db_volume(ctxt, size=1, backend="manage_revert", status="managing")
    manager.manage_existing(ctxt, volume, {"source-id": legacy["id"]})
    volume.refresh()
    assert (volume.status, volume.provider_id) == ("available", legacy["id"])
    volume_file_io(appliance, rest, legacy["id"], volume.name, data=os.urandom(MIB))  # written after manage
    snapshot = db_snapshot(ctxt, volume)
    manager.manage_existing_snapshot(ctxt, snapshot, {"source-name": "before-manage"})
    snapshot.refresh()
    assert snapshot.status == fields.SnapshotStatus.AVAILABLE

    volume.update({"status": "reverting"})
    volume.save()
    snapshot.update({"status": fields.SnapshotStatus.RESTORING})
    snapshot.save()
    manager.revert_to_snapshot(ctxt, volume, snapshot)
    volume.refresh()
    assert volume.status == "available"

    connection = manager.initialize_connection(ctxt, volume, {"ip": "10.4.4.4", "host": "compute-4"})
    assert connection["data"]["name"] == volume.name
    assert rest.get_share(legacy["id"])["volume"]["name"] == volume.name
    contents, owner = volume_file_io(appliance, rest, legacy["id"], connection["data"]["name"], length=MIB)
    assert contents == before
    # The snapshot's file was root's (taken before manage chowned it): owned by qemu again.
    assert owner == QEMU
    manager.terminate_connection(ctxt, volume.id, {"ip": "10.4.4.4", "host": "compute-4"})
