"""Volume file ownership (uid/gid): service, REST API and CLI, checked on real file systems.

The volume file's owner is what root-squashed NFS clients (Nova hosts running
qemu as e.g. 64055:64055) need to open a mode-0660 file. These tests check the
file on disk with os.stat, the ``volume.uid``/``volume.gid`` the Share JSON
reports, that clones and reverts keep the source's owner unless told
otherwise, that refused owners answer 422 ``invalid_request``, and that a data
dir made before owners existed (schema and files untouched) reports its files'
real owners.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import uuid

import pytest

from acmenfs.appliance.api_models import VolumeOut
from acmenfs.appliance.errors import InvalidRequest
from acmenfs.appliance.models import MAX_OWNER_ID, validate_owner_id
from acmenfs.appliance.service import ApplianceService
from acmenfs.appliance.storage import PARTIAL_VOLUME_PREFIX
from acmenfs.appliance.store import SCHEMA_VERSION
from acmenfs.cli.manage import parse_owner
from acmenfs.nfs3.exports import ExportTable
from api_fixtures import ACMENFS, ServeProcess

MiB = 1 << 20
QEMU = (64055, 64055)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def volume_stat(service: ApplianceService, share) -> os.stat_result:
    return os.stat(service.layout.share_dir(share.id) / share.volume.name)


@pytest.fixture
def service(fs_kind, service_factory) -> ApplianceService:
    return service_factory(fs_kind, exports=ExportTable())


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("value", [0, 1, 64055, MAX_OWNER_ID])
def test_owner_ids_in_range_are_accepted(value):
    assert validate_owner_id(value, "uid") == value


@pytest.mark.parametrize("value", [-1, MAX_OWNER_ID + 1, 1 << 40, True, False, "64055", 64055.0, [1]])
def test_owner_ids_out_of_range_or_not_integers_are_refused(value):
    with pytest.raises(InvalidRequest) as refused:
        validate_owner_id(value, "volume uid")
    assert refused.value.code == "invalid_request"
    assert "volume uid" in str(refused.value)


@pytest.mark.parametrize("text, owner", [("64055:64055", QEMU), ("0:0", (0, 0)), ("107:112", (107, 112)),
                                          (f"{MAX_OWNER_ID}:1", (MAX_OWNER_ID, 1))])
def test_cli_parses_owner(text, owner):
    assert parse_owner(text) == owner


@pytest.mark.parametrize("text", ["", "64055", "qemu:kvm", "-1:0", "1:-1", "1:2:3", f"{MAX_OWNER_ID + 1}:0", "1 :2"])
def test_cli_refuses_bad_owner(text):
    with pytest.raises(Exception) as refused:
        parse_owner(text)
    assert "UID:GID" in str(refused.value)


# --------------------------------------------------------------------------- service, on btrfs / xfs / ext4


def test_create_share_chowns_the_volume_file_and_reports_it(service):
    share = service.create_share(unique("owned"), 4 * MiB,
                                 volume={"name": "volume-1", "mode": "0660", "uid": QEMU[0], "gid": 112})
    info = volume_stat(service, share)
    assert (info.st_uid, info.st_gid) == (QEMU[0], 112)
    assert info.st_mode & 0o7777 == 0o660
    assert (share.volume.uid, share.volume.gid) == (QEMU[0], 112)
    assert share.volume.to_dict()["uid"] == QEMU[0] and share.volume.to_dict()["gid"] == 112
    assert not list(service.layout.staging.iterdir())


def test_create_share_without_owner_is_root(service):
    share = service.create_share(unique("root"), 4 * MiB, volume={"name": "volume-1", "uid": None})
    info = volume_stat(service, share)
    assert (info.st_uid, info.st_gid) == (0, 0)
    assert (share.volume.uid, share.volume.gid) == (0, 0)


@pytest.mark.parametrize("volume", [{"name": "v", "uid": -1}, {"name": "v", "gid": 1 << 32},
                                    {"name": "v", "uid": "64055"}, {"name": "v", "uid": True}])
def test_create_share_refuses_bad_owner_and_leaves_nothing(service, volume):
    name = unique("bad")
    with pytest.raises(InvalidRequest) as refused:
        service.create_share(name, 4 * MiB, volume=volume)
    assert refused.value.code == "invalid_request"
    assert service.list_shares(name) == []
    assert not list(service.layout.staging.iterdir())


def test_put_volume_creates_with_owner_and_leaves_no_partial_file(service):
    share = service.create_share(unique("put"), 4 * MiB)
    share = service.put_volume(share.id, "volume-2", mode="0660", uid=QEMU[0], gid=QEMU[1])
    info = volume_stat(service, share)
    assert (info.st_uid, info.st_gid, info.st_size) == (*QEMU, 4 * MiB)
    assert (share.volume.uid, share.volume.gid) == QEMU
    names = os.listdir(service.layout.share_dir(share.id))
    assert names == ["volume-2"], names
    assert not any(name.startswith(PARTIAL_VOLUME_PREFIX) for name in names)


def test_put_volume_rename_keeps_owner_unless_given(service):
    share = service.create_share(unique("rename"), 4 * MiB, volume={"name": "a", "uid": 1000, "gid": 1001})
    share = service.put_volume(share.id, "b")
    assert (volume_stat(service, share).st_uid, volume_stat(service, share).st_gid) == (1000, 1001)
    share = service.put_volume(share.id, "c", uid=QEMU[0])
    info = volume_stat(service, share)
    assert (info.st_uid, info.st_gid) == (QEMU[0], 1001)
    assert info.st_mode & 0o7777 == 0o660
    share = service.put_volume(share.id, "c", gid=QEMU[1])
    assert (share.volume.uid, share.volume.gid) == QEMU
    assert sorted(os.listdir(service.layout.share_dir(share.id))) == ["c"]


def test_put_volume_refuses_bad_owner_without_touching_the_file(service):
    share = service.create_share(unique("putbad"), 4 * MiB, volume={"name": "a", "uid": 7, "gid": 8})
    with pytest.raises(InvalidRequest):
        service.put_volume(share.id, "b", uid=MAX_OWNER_ID + 1)
    share = service.get_share(share.id)
    assert share.volume.name == "a" and (share.volume.uid, share.volume.gid) == (7, 8)


def test_clone_keeps_the_snapshot_owner_or_takes_a_new_one(service):
    share = service.create_share(unique("src"), 4 * MiB, volume={"name": "v", "uid": 1000, "gid": 1000})
    snapshot = service.create_snapshot(share.id, "s1")
    kept = service.clone_snapshot(snapshot.id, unique("kept"), volume_name="v2")
    assert (volume_stat(service, kept).st_uid, volume_stat(service, kept).st_gid) == (1000, 1000)
    assert (kept.volume.uid, kept.volume.gid) == (1000, 1000)
    changed = service.clone_snapshot(snapshot.id, unique("changed"), volume_name="v3", size=8 * MiB,
                                     volume_uid=QEMU[0], volume_gid=QEMU[1])
    info = volume_stat(service, changed)
    assert (info.st_uid, info.st_gid, info.st_size) == (*QEMU, 8 * MiB)
    assert (changed.volume.uid, changed.volume.gid) == QEMU
    assert info.st_mode & 0o7777 == 0o660
    # the snapshot and its share are untouched by the clone's chown
    assert os.stat(service.layout.snapshot_dir(snapshot.id) / "v").st_uid == 1000
    assert volume_stat(service, service.get_share(share.id)).st_uid == 1000


def test_clone_refuses_owner_for_a_snapshot_without_volume(service):
    share = service.create_share(unique("novol"), 4 * MiB)
    snapshot = service.create_snapshot(share.id, "s1")
    name = unique("clone")
    with pytest.raises(InvalidRequest) as refused:
        service.clone_snapshot(snapshot.id, name, volume_uid=QEMU[0])
    assert "no volume file" in str(refused.value)
    with pytest.raises(InvalidRequest):
        service.clone_snapshot(snapshot.id, name, volume_gid=-5)
    assert service.list_shares(name) == []


def test_revert_brings_back_the_snapshot_owner(service):
    share = service.create_share(unique("revert"), 4 * MiB, volume={"name": "v", "uid": 1000, "gid": 1000})
    snapshot = service.create_snapshot(share.id, "s1")
    service.put_volume(share.id, "v", uid=QEMU[0], gid=QEMU[1])
    reverted = service.revert_share(share.id, snapshot.id)
    assert (reverted.volume.uid, reverted.volume.gid) == (1000, 1000)
    assert volume_stat(service, reverted).st_uid == 1000


# --------------------------------------------------------------------------- data dirs from before owners


def test_existing_data_dir_reports_real_owners_without_a_schema_change(make_data_dir):
    """Owners are read from the file (like allocated_bytes), so no column and no migration exist.

    A data dir written before this feature (schema version unchanged, rows with
    no owner anywhere) reopens as is; its volume files report their real owner,
    including one an administrator chowned by hand before upgrading.
    """
    data_dir = make_data_dir("xfs")
    old = ApplianceService(data_dir)
    old.open()
    share = old.create_share(unique("old"), 4 * MiB, volume={"name": "v"})
    untouched = old.create_share(unique("old"), 4 * MiB, volume={"name": "w"})
    old.close()
    os.chown(data_dir / "shares" / share.id / "v", *QEMU)
    # closed before reopening: the appliance holds its database exclusively (store.py)
    with contextlib.closing(sqlite3.connect(data_dir / "acmenfs.db")) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in connection.execute("PRAGMA table_info(shares)")}
    assert not {"volume_uid", "volume_gid", "uid", "gid"} & columns
    reopened = ApplianceService(data_dir)
    assert not any("migrated" in line for line in reopened.open())
    try:
        assert (reopened.get_share(share.id).volume.uid, reopened.get_share(share.id).volume.gid) == QEMU
        assert (reopened.get_share(untouched.id).volume.uid, reopened.get_share(untouched.id).volume.gid) == (0, 0)
    finally:
        reopened.close()


# --------------------------------------------------------------------------- REST API


def assert_invalid_request(response, field: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert any(error["field"] == field for error in problem["errors"]), problem


def test_api_create_put_and_clone_with_owners(module_api, module_live_api):
    service = module_live_api.service
    response = module_api.post("/v1/shares", json={
        "name": unique("api"), "size": 4 * MiB, "volume": {"name": "volume-1", "uid": QEMU[0], "gid": QEMU[1]}})
    assert response.status_code == 201, response.text
    share = response.json()
    VolumeOut.model_validate(share["volume"])
    assert (share["volume"]["uid"], share["volume"]["gid"]) == QEMU
    on_disk = os.stat(service.layout.share_dir(share["id"]) / "volume-1")
    assert (on_disk.st_uid, on_disk.st_gid) == QEMU

    response = module_api.put(f"/v1/shares/{share['id']}/volume", json={"name": "volume-2", "uid": 107})
    assert response.status_code == 200, response.text
    assert (response.json()["volume"]["uid"], response.json()["volume"]["gid"]) == (107, QEMU[1])
    assert os.stat(service.layout.share_dir(share["id"]) / "volume-2").st_uid == 107

    snapshot = module_api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s1"}).json()
    kept = module_api.post(f"/v1/snapshots/{snapshot['id']}/clone", json={"name": unique("kept")})
    assert kept.status_code == 201, kept.text
    assert (kept.json()["volume"]["uid"], kept.json()["volume"]["gid"]) == (107, QEMU[1])
    changed = module_api.post(f"/v1/snapshots/{snapshot['id']}/clone", json={
        "name": unique("changed"), "volume_name": "volume-3", "volume_uid": 0, "volume_gid": 0})
    assert changed.status_code == 201, changed.text
    assert (changed.json()["volume"]["uid"], changed.json()["volume"]["gid"]) == (0, 0)
    on_disk = os.stat(service.layout.share_dir(changed.json()["id"]) / "volume-3")
    assert (on_disk.st_uid, on_disk.st_gid) == (0, 0)


@pytest.mark.parametrize("uid", [-1, MAX_OWNER_ID + 1, "64055", 1.5, True, None])
def test_api_refuses_bad_uid_on_create(module_api, uid):
    name = unique("bad")
    body = {"name": name, "size": 4 * MiB, "volume": {"name": "v", "uid": uid, "gid": 0}}
    if uid is None:  # JSON null means "not given": accepted, root
        response = module_api.post("/v1/shares", json=body)
        assert response.status_code == 201 and response.json()["volume"]["uid"] == 0
        return
    assert_invalid_request(module_api.post("/v1/shares", json=body), "volume.uid")
    assert module_api.get("/v1/shares", params={"name": name}).json()["shares"] == []


def test_api_refuses_bad_owner_on_put_volume_and_clone(module_api):
    share = module_api.post("/v1/shares", json={
        "name": unique("bad"), "size": 4 * MiB, "volume": {"name": "v"}}).json()
    assert_invalid_request(module_api.put(f"/v1/shares/{share['id']}/volume", json={"name": "v", "gid": -3}), "gid")
    snapshot = module_api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s1"}).json()
    name = unique("clone")
    assert_invalid_request(module_api.post(f"/v1/snapshots/{snapshot['id']}/clone", json={
        "name": name, "volume_uid": 1 << 32}), "volume_uid")
    assert_invalid_request(module_api.post(f"/v1/snapshots/{snapshot['id']}/clone", json={
        "name": name, "uid": 5}), "uid")  # the clone body names them volume_uid / volume_gid
    assert module_api.get("/v1/shares", params={"name": name}).json()["shares"] == []


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    serve = ServeProcess(tmp_path_factory.mktemp("owner-cli") / "data", nfs=False).start()
    try:
        yield serve
    finally:
        serve.stop()


def run_cli(appliance, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACMENFS_")}
    env.update(ACMENFS_URL=appliance.url, ACMENFS_TOKEN=appliance.token)
    result = subprocess.run([ACMENFS, *args], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli_json(appliance, *args: str) -> dict:
    result = run_cli(appliance, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_owner_on_create_volume_and_clone(appliance):
    name = unique("cli")
    share = cli_json(appliance, "share", "create", name, "--size", "4M", "--volume", "v", "--owner", "64055:64055")
    assert (share["volume"]["uid"], share["volume"]["gid"]) == QEMU
    volume_file = appliance.data_dir / "shares" / share["id"] / "v"
    assert (os.stat(volume_file).st_uid, os.stat(volume_file).st_gid) == QEMU
    shown = run_cli(appliance, "share", "show", name)
    assert shown.returncode == 0 and "owner 64055:64055" in shown.stdout

    share = cli_json(appliance, "share", "volume", name, "v2", "--owner", "107:112")
    assert (share["volume"]["uid"], share["volume"]["gid"]) == (107, 112)
    cli_json(appliance, "snapshot", "create", name, "s1")
    clone = cli_json(appliance, "snapshot", "clone", f"{name}@s1", unique("clone"), "--owner", "0:0")
    assert (clone["volume"]["uid"], clone["volume"]["gid"]) == (0, 0)
    kept = cli_json(appliance, "snapshot", "clone", f"{name}@s1", unique("clone"))
    assert (kept["volume"]["uid"], kept["volume"]["gid"]) == (107, 112)


def test_cli_refuses_bad_owner_and_owner_without_volume(appliance):
    bad = run_cli(appliance, "share", "create", unique("cli"), "--size", "4M", "--volume", "v", "--owner", "qemu")
    assert bad.returncode != 0 and "UID:GID" in bad.stderr
    no_volume = run_cli(appliance, "share", "create", unique("cli"), "--size", "4M", "--owner", "1:1")
    assert no_volume.returncode != 0 and "--owner needs --volume" in no_volume.stderr


def test_put_volume_rename_onto_a_taken_name_changes_no_owner(service):
    share = service.create_share(unique("taken"), 4 * MiB, volume={"name": "a", "uid": 7, "gid": 8})
    other = service.layout.share_dir(share.id) / "b"
    other.write_bytes(b"someone's file")
    with pytest.raises(Exception) as refused:
        service.put_volume(share.id, "b", uid=QEMU[0], gid=QEMU[1])
    assert getattr(refused.value, "code", None) == "name_conflict"
    share = service.get_share(share.id)
    assert share.volume.name == "a" and (share.volume.uid, share.volume.gid) == (7, 8)
