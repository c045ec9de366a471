"""The appliance service on real btrfs, XFS-reflink and ext4 (copy fallback) loop file systems."""

from __future__ import annotations

import os
import stat

import pytest

from acmenfs.appliance.errors import Conflict, InvalidRequest, NoSpace, NotFound
from acmenfs.appliance.models import AccessRule, NfsEndpoint
from acmenfs.appliance.service import ApplianceService
from acmenfs.nfs3.exports import ExportTable

MIB = 1 << 20
GIB = 1 << 30
EXPECTED_BACKEND = {"btrfs": "btrfs", "xfs": "reflink", "ext4": "reflink"}


@pytest.fixture
def exports():
    return ExportTable()


@pytest.fixture
def service(fs_kind, service_factory, exports) -> ApplianceService:
    return service_factory(fs_kind, exports=exports)


def volume_path(service: ApplianceService, share) -> str:
    return os.path.join(service.layout.share_dir(share.id), share.volume.name)


def write_at(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def read_at(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def test_backend_is_detected_from_the_file_system(service, fs_kind):
    assert service.backend_name == EXPECTED_BACKEND[fs_kind]
    assert service.pool_stats().backend == EXPECTED_BACKEND[fs_kind]


def test_create_share_with_sparse_volume_file(service, exports):
    share = service.create_share("vol-1", 10 * GIB, volume={"name": "volume-1"},
                                 access=[AccessRule("10.0.0.5/32")])
    assert share.state == "available"
    assert share.export_path == f"/shares/{share.id}"
    assert share.volume.name == "volume-1" and share.volume.size == 10 * GIB
    assert share.volume.sparse and share.volume.allocated_bytes < MIB
    info = os.stat(volume_path(service, share))
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_size == 10 * GIB
    export = exports.get(share.export_path)
    assert export.directory == str(service.layout.share_dir(share.id))
    assert export.quota_bytes == 10 * GIB
    assert [rule.client for rule in export.rules] == ["10.0.0.5/32"]
    assert service.get_share(share.id) == share
    assert service.list_shares(name="vol-1") == [share]
    assert service.list_shares(export_path=share.export_path) == [share]


def test_preallocated_volume_file_is_allocated(service):
    share = service.create_share("thick", 8 * MIB, volume={"name": "v", "sparse": False, "mode": "0666"})
    info = os.stat(volume_path(service, share))
    assert stat.S_IMODE(info.st_mode) == 0o666
    assert info.st_blocks * 512 >= 8 * MIB
    assert share.volume.to_dict()["mode"] == "0666" and share.volume.sparse is False


def test_share_to_dict_matches_the_rest_shape(service):
    share = service.create_share("shape", MIB, volume={"name": "v"})
    body = share.to_dict(NfsEndpoint("192.0.2.1", 2049, 20048))
    assert set(body) == {"id", "name", "size", "state", "export_path", "created_at", "origin_snapshot_id",
                         "used_bytes", "access", "volume", "nfs"}
    assert body["nfs"]["location"] == f"192.0.2.1:/shares/{share.id}"
    assert body["nfs"]["url"] == f"nfs://192.0.2.1/shares/{share.id}?version=3&nfsport=2049&mountport=20048"
    assert body["created_at"].endswith("Z")


@pytest.mark.parametrize("name", ["", ".hidden", "a" * 129, "sp ace", "slash/x", "ü", None, 5])
def test_bad_names_are_refused(service, name):
    with pytest.raises(InvalidRequest) as caught:
        service.create_share(name, MIB)
    assert caught.value.code == "invalid_name"
    assert service.list_shares() == []


@pytest.mark.parametrize("size", [0, -1, 1 << 51, 1.5, "10", True])
def test_bad_sizes_are_refused(service, size):
    with pytest.raises(InvalidRequest) as caught:
        service.create_share("ok", size)
    assert caught.value.code == "invalid_size"


def test_bad_volume_and_access_are_refused(service):
    with pytest.raises(InvalidRequest):
        service.create_share("x", MIB, volume={"name": "v", "mode": "0777"})
    with pytest.raises(InvalidRequest):
        service.create_share("x", MIB, volume={"name": "v", "colour": "red"})
    with pytest.raises(InvalidRequest) as caught:
        AccessRule("not-an-ip")
    assert caught.value.code == "invalid_access"
    with pytest.raises(InvalidRequest):
        AccessRule("10.0.0.1", access="rwx")
    with pytest.raises(InvalidRequest):
        AccessRule("10.0.0.1", squash="some")
    assert service.list_shares() == []


def test_duplicate_share_name_conflicts(service):
    service.create_share("same", MIB)
    with pytest.raises(Conflict) as caught:
        service.create_share("same", MIB)
    assert caught.value.code == "name_conflict" and caught.value.status == 409
    assert len(service.list_shares()) == 1


def test_failed_create_leaves_nothing_behind(service, exports):
    too_big = 64 * GIB  # the pool is a 4 GiB loop device: preallocation must fail
    with pytest.raises(NoSpace):
        service.create_share("huge", too_big, volume={"name": "v", "sparse": False})
    assert service.list_shares() == []
    assert os.listdir(service.layout.shares) == []
    assert os.listdir(service.layout.staging) == []
    assert exports.list() == []
    assert service.operation_counts()["errors"]["create_share"] == {"no_space": 1}
    service.create_share("huge", MIB)  # the name was released


def test_unknown_ids_are_not_found(service):
    for call in (lambda: service.get_share("nope"), lambda: service.get_snapshot("3" * 36),
                 lambda: service.delete_share("00000000-0000-0000-0000-000000000000"),
                 lambda: service.create_snapshot("00000000-0000-0000-0000-000000000000", "s")):
        with pytest.raises(NotFound):
            call()


def test_snapshot_is_a_point_in_time_copy_exported_read_only(service, exports):
    share = service.create_share("src", 100 * MIB, volume={"name": "v"}, access=[AccessRule("10.0.0.0/24")])
    path = volume_path(service, share)
    write_at(path, 5 * MIB, b"before" * 1000)
    snapshot = service.create_snapshot(share.id, "snap-1")
    write_at(path, 5 * MIB, b"AFTER!" * 1000)
    assert snapshot.path == f"/snapshots/{snapshot.id}" and snapshot.size == 100 * MIB
    snapshot_file = os.path.join(service.layout.snapshot_dir(snapshot.id), "v")
    assert read_at(snapshot_file, 5 * MIB, 6) == b"before"
    export = exports.get(snapshot.path)
    assert export.read_only and [(r.client, r.access) for r in export.rules] == [("10.0.0.0/24", "ro")]
    assert service.list_snapshots(share.id) == [snapshot]
    with pytest.raises(Conflict) as caught:
        service.create_snapshot(share.id, "snap-1")
    assert caught.value.code == "name_conflict"


def test_clone_renames_and_grows_the_volume_and_keeps_holes(service, exports):
    share = service.create_share("src", 256 * MIB, volume={"name": "volume-a"})
    write_at(volume_path(service, share), 100 * MIB, b"x" * MIB)
    snapshot = service.create_snapshot(share.id, "s")
    progress = []
    clone = service.clone_snapshot(snapshot.id, "dst", size=512 * MIB, volume_name="volume-b",
                                   access=[AccessRule("*", "ro", "all")], progress=lambda d, t: progress.append((d, t)))
    assert clone.origin_snapshot_id == snapshot.id and clone.size == 512 * MIB
    assert clone.volume.name == "volume-b" and clone.volume.size == 512 * MIB
    assert clone.volume.allocated_bytes < 16 * MIB  # holes stayed holes
    assert read_at(volume_path(service, clone), 100 * MIB, 3) == b"xxx"
    assert not os.path.exists(os.path.join(service.layout.share_dir(clone.id), "volume-a"))
    assert progress and progress[-1][0] == progress[-1][1]
    assert exports.get(clone.export_path).quota_bytes == 512 * MIB
    write_at(volume_path(service, clone), 100 * MIB, b"y")
    assert read_at(volume_path(service, share), 100 * MIB, 1) == b"x"  # independent copies


def test_clone_refuses_smaller_size_and_name_conflicts(service):
    share = service.create_share("src", 64 * MIB, volume={"name": "v"})
    snapshot = service.create_snapshot(share.id, "s")
    with pytest.raises(InvalidRequest) as caught:
        service.clone_snapshot(snapshot.id, "small", size=MIB)
    assert caught.value.code == "invalid_size"
    with pytest.raises(Conflict):
        service.clone_snapshot(snapshot.id, "src")
    assert [s.name for s in service.list_shares()] == ["src"]
    assert os.listdir(service.layout.staging) == []


def test_revert_brings_back_the_snapshot_content(service, exports):
    share = service.create_share("r", 32 * MIB, volume={"name": "v"})
    path = volume_path(service, share)
    write_at(path, 0, b"old")
    snapshot = service.create_snapshot(share.id, "s")
    write_at(path, 0, b"new")
    with open(os.path.join(service.layout.share_dir(share.id), "extra"), "w") as handle:
        handle.write("made after the snapshot")
    reverted = service.revert_share(share.id, snapshot.id)
    assert read_at(path, 0, 3) == b"old"
    assert os.listdir(service.layout.share_dir(share.id)) == ["v"]
    assert reverted.volume.size == 32 * MIB
    assert exports.get(share.export_path) is not None
    assert os.listdir(service.layout.staging) == [] and os.listdir(service.layout.trash) == []


def test_revert_to_another_shares_snapshot_is_refused(service):
    first = service.create_share("a", MIB)
    second = service.create_share("b", MIB)
    snapshot = service.create_snapshot(first.id, "s")
    with pytest.raises(InvalidRequest):
        service.revert_share(second.id, snapshot.id)


def test_extend_grows_quota_and_volume_but_never_shrinks(service, exports):
    share = service.create_share("e", 10 * MIB, volume={"name": "v"})
    grown = service.extend_share(share.id, 20 * MIB)
    assert grown.size == 20 * MIB and grown.volume.size == 20 * MIB
    assert exports.get(share.export_path).quota_bytes == 20 * MIB
    with pytest.raises(InvalidRequest) as caught:
        service.extend_share(share.id, 5 * MIB)
    assert caught.value.code == "invalid_size"
    assert service.pool_stats().provisioned_bytes == 20 * MIB


def test_put_volume_creates_then_renames_and_grows(service):
    share = service.create_share("p", 10 * MIB)
    assert share.volume is None
    created = service.put_volume(share.id, "first")
    assert created.volume.name == "first" and created.volume.size == 10 * MIB
    renamed = service.put_volume(share.id, "second", size=30 * MIB)
    assert renamed.volume.name == "second" and renamed.volume.size == 30 * MIB and renamed.size == 30 * MIB
    assert os.listdir(service.layout.share_dir(share.id)) == ["second"]


def test_delete_share_with_snapshots_needs_cascade(service, exports):
    share = service.create_share("d", MIB, volume={"name": "v"})
    snapshot = service.create_snapshot(share.id, "s")
    with pytest.raises(Conflict) as caught:
        service.delete_share(share.id)
    assert caught.value.code == "share_has_snapshots"
    service.delete_share(share.id, cascade=True)
    assert service.list_shares() == []
    with pytest.raises(NotFound):
        service.get_snapshot(snapshot.id)
    assert os.listdir(service.layout.shares) == [] and os.listdir(service.layout.snapshots) == []
    assert os.listdir(service.layout.trash) == []
    assert exports.list() == []


def test_delete_snapshot_keeps_its_clones(service):
    share = service.create_share("o", MIB, volume={"name": "v"})
    snapshot = service.create_snapshot(share.id, "s")
    clone = service.clone_snapshot(snapshot.id, "c")
    service.delete_snapshot(snapshot.id)
    assert service.list_snapshots(share.id) == []
    assert service.get_share(clone.id).volume.name == "v"
    with pytest.raises(NotFound):
        service.delete_snapshot(snapshot.id)


def test_access_rules_are_added_replaced_and_removed(service, exports):
    share = service.create_share("acl", MIB)
    assert exports.get(share.export_path).rules == ()
    snapshot = service.create_snapshot(share.id, "s")
    service.add_access(share.id, AccessRule("10.0.0.5"))
    service.add_access(share.id, AccessRule("10.1.0.0/16", "ro"))
    updated = service.add_access(share.id, AccessRule("10.0.0.5", "ro", "none"))
    assert updated.access == (AccessRule("10.0.0.5", "ro", "none"), AccessRule("10.1.0.0/16", "ro"))
    rules = exports.get(share.export_path).rules
    assert [(r.client, r.access, r.squash) for r in rules] == [("10.0.0.5", "ro", "none"), ("10.1.0.0/16", "ro", "root")]
    assert len(exports.get(snapshot.path).rules) == 2
    service.remove_access(share.id, "10.0.0.5")
    removed_again = service.remove_access(share.id, "10.0.0.5")
    assert removed_again.access == (AccessRule("10.1.0.0/16", "ro"),)
    assert [r.client for r in exports.get(snapshot.path).rules] == ["10.1.0.0/16"]


def test_pool_stats_sum_the_store(service):
    service.create_share("a", 10 * MIB)
    share = service.create_share("b", 30 * MIB)
    service.create_snapshot(share.id, "s")
    stats = service.pool_stats()
    assert stats.provisioned_bytes == 40 * MIB
    assert (stats.share_count, stats.snapshot_count) == (2, 1)
    assert 0 < stats.free_bytes <= stats.total_bytes and stats.used_bytes > 0


def test_used_bytes_counts_allocated_blocks(service):
    share = service.create_share("u", 64 * MIB, volume={"name": "v"})
    write_at(volume_path(service, share), 0, b"z" * (4 * MIB))
    os.sync()
    assert service.get_share(share.id).used_bytes >= 4 * MIB


def test_restart_republishes_exports(fs_kind, make_data_dir):
    data_dir = make_data_dir(fs_kind)
    first = ApplianceService(data_dir)
    first.open()
    share = first.create_share("keep", MIB, access=[AccessRule("*")])
    snapshot = first.create_snapshot(share.id, "s")
    first.close()
    exports = ExportTable()
    second = ApplianceService(data_dir, exports=exports)
    assert second.open() == []
    try:
        assert {e.path for e in exports.list()} == {share.export_path, snapshot.path}
        assert second.get_share(share.id).name == "keep"
    finally:
        second.close()


def test_btrfs_snapshots_are_read_only_subvolumes(service_factory):
    service = service_factory("btrfs")
    share = service.create_share("b", MIB, volume={"name": "v"})
    snapshot = service.create_snapshot(share.id, "s")
    snapshot_dir = service.layout.snapshot_dir(snapshot.id)
    assert os.stat(snapshot_dir).st_ino == 256 and os.stat(service.layout.share_dir(share.id)).st_ino == 256
    with pytest.raises(OSError) as caught:
        open(snapshot_dir / "new-file", "w")
    assert caught.value.errno == 30  # EROFS
    clone = service.clone_snapshot(snapshot.id, "c")
    with open(service.layout.share_dir(clone.id) / "written", "w") as handle:  # clones are writable
        handle.write("ok")
    service.delete_share(share.id, cascade=True)
    assert os.listdir(service.layout.snapshots) == []


def test_tokens_are_stored_hashed_and_verified(service_factory):
    service = service_factory("ext4")
    token, secret = service.create_token("ci")
    assert service.verify_token(secret) == token
    assert all(service.create_token(f"t{i}")[1].startswith("acmenfs_") for i in range(64))  # never "-..."
    assert service.verify_token(secret + "x") is None and service.verify_token("") is None
    assert token in service.list_tokens()
    with open(service.layout.database, "rb") as database:
        assert secret.encode() not in database.read()
    service.revoke_token(token.id)
    assert service.verify_token(secret) is None
    with pytest.raises(NotFound):
        service.revoke_token(token.id)


def test_admin_token_is_written_once(make_data_dir):
    data_dir = make_data_dir("ext4")
    service = ApplianceService(data_dir)
    service.open()
    secret = service.ensure_admin_token()
    token_file = data_dir / "admin.token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert token_file.read_text().strip() == secret
    assert service.verify_token(secret).name == "admin"
    service.close()
    again = ApplianceService(data_dir)
    again.open()
    assert again.ensure_admin_token() is None
    assert token_file.read_text().strip() == secret
    again.close()


def test_operation_counts_count_successes_and_failures(service_factory):
    service = service_factory("ext4")
    service.create_share("a", MIB)
    with pytest.raises(Conflict):
        service.create_share("a", MIB)
    with pytest.raises(InvalidRequest):
        service.create_share("b", 0)
    counts = service.operation_counts()
    assert counts["operations"]["create_share"] == 3
    assert counts["errors"]["create_share"] == {"name_conflict": 1, "invalid_size": 1}
