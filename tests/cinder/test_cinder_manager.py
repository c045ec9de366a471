"""End to end: Cinder's real VolumeManager drives AcmeNfsDriver against a live appliance.

The manager runs in-process on a sqlite database with the fake RPC transport
and the file coordination backend (see conftest). Each step must reach the
right Cinder status, and the appliance's shares, snapshots and access rules
must match afterwards (read back through its REST API).
"""

from __future__ import annotations

import pytest

from cinder import context as cinder_context
from cinder import objects
from cinder.objects import fields

from acmenfs.cinder.appliance_client import ApplianceNotFound
from conftest import BACKEND, db_snapshot, db_volume, start_volume_manager

GIB = 1024 ** 3


@pytest.fixture(scope="module")
def manager(cinder_conf):
    return start_volume_manager()


@pytest.fixture
def project_context():
    return cinder_context.RequestContext(user_id="user-1", project_id="project-1", is_admin=True)


def complete_attachment(attachment, volume):
    attachment.refresh()
    attachment.update({"attach_status": fields.VolumeAttachStatus.ATTACHED})
    attachment.save()
    volume.update({"status": "in-use", "attach_status": "attached"})
    volume.save()


def test_volume_lifecycle_through_the_volume_manager(manager, project_context, rest, appliance):
    ctxt = project_context

    # create
    volume = db_volume(ctxt, size=1)
    manager.create_volume(ctxt, volume)
    volume.refresh()
    assert volume.status == "available"
    share = rest.get_share(volume.provider_id)
    assert share["volume"]["name"] == volume.name
    assert volume.provider_location == f"127.0.0.1:{share['export_path']}"

    # snapshot
    snapshot = db_snapshot(ctxt, volume)
    manager.create_snapshot(ctxt, snapshot)
    snapshot.refresh()
    assert snapshot.status == fields.SnapshotStatus.AVAILABLE
    assert rest.get_snapshot(snapshot.provider_id)["share_id"] == volume.provider_id

    # volume from snapshot (larger)
    from_snapshot = db_volume(ctxt, size=2, snapshot_id=snapshot.id)
    manager.create_volume(ctxt, from_snapshot, request_spec=objects.RequestSpec(snapshot_id=snapshot.id))
    from_snapshot.refresh()
    assert from_snapshot.status == "available"
    cloned_share = rest.get_share(from_snapshot.provider_id)
    assert cloned_share["origin_snapshot_id"] == snapshot.provider_id
    assert cloned_share["volume"] == {**cloned_share["volume"], "name": from_snapshot.name, "size": 2 * GIB}

    # clone of a volume
    clone = db_volume(ctxt, size=1, source_volid=volume.id)
    manager.create_volume(ctxt, clone, request_spec=objects.RequestSpec(source_volid=volume.id))
    clone.refresh()
    assert clone.status == "available"
    assert rest.get_share(clone.provider_id)["volume"]["name"] == clone.name
    assert [found["id"] for found in rest.list_snapshots(volume.provider_id)] == [snapshot.provider_id]

    # attach (host attachment: no Nova involved) and extend while attached
    attachment = objects.VolumeAttachment(context=ctxt, volume_id=volume.id, attach_mode="rw",
                                          attach_status=fields.VolumeAttachStatus.RESERVED)
    attachment.create()
    connector = {"ip": "10.1.2.3", "host": "compute-9", "initiator": "unused"}
    info = manager.attachment_update(ctxt, volume, connector, attachment.id)
    volume.refresh()
    assert volume.status == "attaching"
    complete_attachment(attachment, volume)  # what POST /attachments/{id}/action complete does
    assert volume.status == "in-use"
    assert info["driver_volume_type"] == "nfs"
    assert info["export"] == volume.provider_location  # the manager flattens "data"
    assert info["name"] == volume.name and info["format"] == "raw"
    assert [rule["client"] for rule in rest.get_share(volume.provider_id)["access"]] == ["10.1.2.3"]

    volume.status = "extending"
    volume.save()
    manager.extend_volume(ctxt, volume, 3, [])
    volume.refresh()
    assert (volume.status, volume.size) == ("in-use", 3)
    assert rest.get_share(volume.provider_id)["volume"]["size"] == 3 * GIB

    # detach
    manager.attachment_delete(ctxt, attachment.id, volume)
    assert rest.get_share(volume.provider_id)["access"] == []
    volume.refresh()
    volume.finish_detach(attachment.id)  # what the API does after the manager's detach
    volume.refresh()
    assert volume.status == "available"

    # revert to the (smaller) snapshot: the volume keeps its size, no backup snapshot
    volume.status = "reverting"
    volume.save()
    snapshot.status = fields.SnapshotStatus.RESTORING
    snapshot.save()
    manager.revert_to_snapshot(ctxt, volume, snapshot)
    volume.refresh()
    snapshot.refresh()
    assert volume.status == "available"
    assert snapshot.status == fields.SnapshotStatus.AVAILABLE
    assert rest.get_share(volume.provider_id)["volume"]["size"] == 3 * GIB
    assert [found["id"] for found in rest.list_snapshots(volume.provider_id)] == [snapshot.provider_id]

    # delete everything
    snapshot.status = fields.SnapshotStatus.DELETING
    snapshot.save()
    manager.delete_snapshot(ctxt, snapshot)
    with pytest.raises(ApplianceNotFound):
        rest.get_snapshot(snapshot.provider_id)
    for doomed in (volume, from_snapshot, clone):
        doomed.status = "deleting"
        doomed.save()
        manager.delete_volume(ctxt, doomed)
        with pytest.raises(ApplianceNotFound):
            rest.get_share(doomed.provider_id)
    remaining = {share["id"] for share in rest.list_shares()}
    assert not remaining & {volume.provider_id, from_snapshot.provider_id, clone.provider_id}
    deleted = objects.Volume.get_by_id(cinder_context.get_admin_context(read_deleted="yes"), volume.id)
    assert deleted.status == "deleted"


def test_manager_reports_driver_stats(manager):
    manager.publish_service_capabilities(cinder_context.get_admin_context())
    stats = manager.driver.get_volume_stats(refresh=True)
    assert stats["storage_protocol"] == "NFS"
    assert stats["pools"][0]["pool_name"] == BACKEND

