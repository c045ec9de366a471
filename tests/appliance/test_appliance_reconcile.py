"""Reconcile on hand-made crash states: each leftover a killed process can leave is fixed."""

from __future__ import annotations

import os

import pytest

from acmenfs.appliance.models import AccessRule
from acmenfs.appliance.service import ApplianceService
from acmenfs.appliance.store import ShareRecord, SnapshotRecord
from acmenfs.nfs3.exports import ExportTable

MIB = 1 << 20


@pytest.fixture(params=["ext4", "btrfs"])
def data_dir(request, make_data_dir):
    return make_data_dir(request.param)


def reopen(data_dir) -> tuple[ApplianceService, list[str], ExportTable]:
    exports = ExportTable()
    service = ApplianceService(data_dir, exports=exports)
    lines = service.open()
    return service, lines, exports


def test_clean_data_dir_needs_no_fixes(data_dir):
    service, lines, _ = reopen(data_dir)
    service.create_share("a", MIB, volume={"name": "v"})
    service.close()
    service, lines, _ = reopen(data_dir)
    assert lines == []
    service.close()


def test_every_kind_of_leftover_is_fixed(data_dir):
    service, _, _ = reopen(data_dir)
    layout, backend, store = service.layout, service.backend, service._store
    kept = service.create_share("kept", MIB, volume={"name": "v"}, access=[AccessRule("*")])
    kept_snapshot = service.create_snapshot(kept.id, "kept-snap")
    doomed = service.create_share("doomed", MIB)
    doomed_snapshot = service.create_snapshot(doomed.id, "doomed-snap")
    vanished = service.create_share("vanished", MIB)
    # a creation that died after the rename into place, before 'available'
    store.insert_share(ShareRecord(id="11111111-1111-1111-1111-111111111111", name="half", size=MIB,
                                   state="creating", created_at="t"))
    backend.create_share_dir(layout.share_dir("11111111-1111-1111-1111-111111111111"))
    # a snapshot that died in staging
    store.insert_snapshot(SnapshotRecord(id="22222222-2222-2222-2222-222222222222", share_id=kept.id,
                                         name="half-snap", size=MIB, state="creating", created_at="t"))
    backend.snapshot(layout.share_dir(kept.id), layout.staging_dir("22222222-2222-2222-2222-222222222222"))
    # a cascade delete that died after marking
    store.mark_share_tree_deleting(doomed.id)
    # data that vanished, an orphan directory, trash
    backend.remove(layout.share_dir(vanished.id))
    backend.create_share_dir(layout.share_dir("33333333-3333-3333-3333-333333333333"))
    (layout.trash / "old-thing").mkdir()
    service.close()

    service, lines, exports = reopen(data_dir)
    text = "\n".join(lines)
    assert "removed unfinished work" in text and "removed half-deleted data" in text
    assert "rolled back unfinished snapshot 22222222" in text
    assert "rolled back unfinished share 11111111" in text
    assert f"finished deleting share {doomed.id}" in text and doomed_snapshot.id in text
    assert f"share {vanished.id} (vanished) has no data directory: marked error" in text
    assert "removed orphan share directory" in text and "33333333" in text
    assert {s.name: s.state for s in service.list_shares()} == {"kept": "available", "vanished": "error"}
    assert [s.name for s in service.list_snapshots(kept.id)] == ["kept-snap"]
    assert sorted(os.listdir(layout.shares)) == [kept.id]
    assert os.listdir(layout.snapshots) == [kept_snapshot.id]
    assert os.listdir(layout.staging) == [] and os.listdir(layout.trash) == []
    assert {e.path for e in exports.list()} == {kept.export_path, kept_snapshot.path}
    service.delete_share(vanished.id)  # an error share can be deleted
    service.close()
    service, lines, _ = reopen(data_dir)
    assert lines == []
    service.close()


def test_reconcile_removes_unfinished_volume_files_left_in_a_share(tmp_path):
    from acmenfs.appliance.service import ApplianceService
    from acmenfs.appliance.storage import PARTIAL_VOLUME_PREFIX

    service = ApplianceService(tmp_path / "data")
    service.open()
    share = service.create_share("partial-left", 1 << 20)
    share_dir = service.layout.share_dir(share.id)
    leftover = share_dir / f"{PARTIAL_VOLUME_PREFIX}deadbeef"
    leftover.write_bytes(b"half a volume")
    (share_dir / "user-file").write_bytes(b"keep me")
    service.close()

    reopened = ApplianceService(tmp_path / "data")
    fixes = reopened.open()
    try:
        assert not leftover.exists()
        assert (share_dir / "user-file").read_bytes() == b"keep me"
        assert any("unfinished volume file" in line for line in fixes)
    finally:
        reopened.close()
