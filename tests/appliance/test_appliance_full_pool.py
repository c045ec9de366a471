"""A pool filled to 100%: the appliance keeps running, reading and serving NFS, answers 507.

Each test makes its own small loop-mounted btrfs, XFS or ext4 file system
(``small_filesystem``), puts a data dir on it and fills the file system to
the last byte. Before the fix, btrfs killed ``acmenfs serve`` with SIGBUS
(SQLite's WAL shared-memory file, mmapped, cannot get blocks on a full CoW
file system) and a restart failed in ``PRAGMA journal_mode=WAL``; XFS and
ext4 answered 500 ``internal_error`` for "database or disk is full".
"""

from __future__ import annotations

import logging
import os

import httpx
import pytest

from acmenfs.appliance.service import ApplianceService
from acmenfs.nfs3.client import NfsClient, NfsError
from acmenfs.nfs3.const import NfsStat, StableHow
from api_fixtures import LiveApi, ServeProcess, nfs_server_available
from pool_fill import fill_filesystem

MiB = 1 << 20
PROBLEM = "application/problem+json"


def assert_no_space(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert answer.json()["code"] == "no_space" and answer.json()["status"] == 507


@pytest.mark.skipif(not nfs_server_available(), reason="acmenfs.nfs3.server is not there yet")
@pytest.mark.parametrize("kind", ["btrfs", "xfs", "ext4"])
def test_serve_on_a_full_pool_keeps_serving_and_restarts(kind, small_filesystem, serve_processes):
    mount_point = small_filesystem(kind)
    data_dir = mount_point / "data"
    serve = ServeProcess(data_dir)
    serve_processes.append(serve)
    serve.start()
    headers = {"Authorization": f"Bearer {serve.token}"}
    with httpx.Client(base_url=serve.url, headers=headers, timeout=60) as api:
        kept = api.post("/v1/shares", json={"name": "kept", "size": 8 * MiB, "volume": {"name": "volume-1"},
                                            "access": [{"client": "127.0.0.1"}]}).json()
        victim = api.post("/v1/shares", json={"name": "victim", "size": 8 * MiB,
                                              "volume": {"name": "v", "sparse": False}}).json()
        (data_dir / "shares" / kept["id"] / "note.txt").write_bytes(b"still readable\n")

        fill_filesystem(mount_point)
        for attempt in range(3):  # each would have crashed or answered 500 before
            assert_no_space(api.post("/v1/shares", json={"name": f"new-{attempt}", "size": MiB}))
            # a tiny write may still fit in pages the database already has; never a 500
            token = api.post("/v1/tokens", json={"name": f"t-{attempt}"})
            assert token.status_code == 201 or token.json()["code"] == "no_space", token.text
        assert serve.process.poll() is None, serve.stderr_text()
        assert api.get(f"/v1/shares/{kept['id']}").json()["volume"]["name"] == "volume-1"
        assert api.get("/v1/pool").status_code == 200
        with NfsClient("127.0.0.1", serve.nfs_port, serve.mount_port, timeout=30) as nfs:
            root = nfs.mount(kept["export_path"])
            assert nfs.read(nfs.lookup(root, "note.txt"), 0, 100)[0] == b"still readable\n"
            assert nfs.getattr(nfs.lookup(root, "volume-1")).size == 8 * MiB
        # Deleting is how an operator frees space: it must work on a full pool.
        assert api.delete(f"/v1/shares/{victim['id']}").status_code == 204
    assert serve.stop() == 0, serve.stderr_text()
    assert "Traceback" not in serve.stderr_text()

    fill_filesystem(mount_point)  # the delete freed space (the reserve took it back first): full again
    again = ServeProcess(data_dir)
    serve_processes.append(again)
    again.start()
    with httpx.Client(base_url=again.url, headers=headers, timeout=60) as api:
        assert [share["name"] for share in api.get("/v1/shares").json()["shares"]] == ["kept"]
        assert_no_space(api.post("/v1/shares", json={"name": "after-restart", "size": MiB}))
    assert again.stop() == 0, again.stderr_text()


@pytest.mark.parametrize("kind", ["xfs", "ext4"])
def test_every_write_on_a_full_pool_answers_507_problem_json(kind, small_filesystem, caplog):
    """SQLite's "database or disk is full" is a 507 for every endpoint that writes, never a 500."""
    mount_point = small_filesystem(kind)
    live = LiveApi(mount_point / "data").start()
    try:
        with live.client() as api:
            share = api.post("/v1/shares", json={"name": "s", "size": MiB}).json()
            snapshot = api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "p"}).json()
            fill_filesystem(mount_point)
            with caplog.at_level(logging.ERROR):
                assert_no_space(api.post("/v1/shares", json={"name": "t", "size": MiB}))
                assert_no_space(api.post("/v1/tokens", json={"name": "t"}))
                assert_no_space(api.post(f"/v1/shares/{share['id']}/access", json={"client": "10.0.0.1"}))
                assert_no_space(api.post(f"/v1/snapshots/{snapshot['id']}/clone", json={"name": "c"}))
                assert api.get(f"/v1/shares/{share['id']}").status_code == 200
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    finally:
        live.stop()


@pytest.mark.parametrize("kind", ["btrfs", "xfs", "ext4"])
def test_service_opens_on_a_full_pool_and_can_delete(kind, small_filesystem):
    mount_point = small_filesystem(kind)
    service = ApplianceService(mount_point / "data")
    service.open()
    share = service.create_share("s", 4 * MiB, volume={"name": "v", "sparse": False})
    service.create_snapshot(share.id, "p")
    service.close()
    fill_filesystem(mount_point)
    reopened = ApplianceService(mount_point / "data")
    reopened.open()
    try:
        assert [s.name for s in reopened.list_shares()] == ["s"]
        reopened.delete_share(share.id, cascade=True)
        assert reopened.list_shares() == []
    finally:
        reopened.close()


@pytest.mark.skipif(not nfs_server_available(), reason="acmenfs.nfs3.server is not there yet")
def test_an_nfs_client_filling_btrfs_does_not_take_the_appliance_down(small_filesystem, serve_processes):
    """The issue's scenario: an NFS client writes into its share until ENOSPC, then the API is used."""
    mount_point = small_filesystem("btrfs")
    serve = ServeProcess(mount_point / "data")
    serve_processes.append(serve)
    serve.start()
    headers = {"Authorization": f"Bearer {serve.token}"}
    with httpx.Client(base_url=serve.url, headers=headers, timeout=60) as api:
        share = api.post("/v1/shares", json={"name": "big", "size": 1 << 30,
                                             "access": [{"client": "127.0.0.1", "squash": "none"}]}).json()
        chunk = os.urandom(MiB)
        with NfsClient("127.0.0.1", serve.nfs_port, serve.mount_port, timeout=60) as nfs:
            root = nfs.mount(share["export_path"])
            fh = nfs.create(root, "fill")
            offset = 0
            with pytest.raises(NfsError) as full:
                while offset < 1 << 30:
                    nfs.write(fh, offset, chunk, stable=StableHow.FILE_SYNC)
                    offset += len(chunk)
            assert full.value.status in (NfsStat.NOSPC, NfsStat.DQUOT), full.value
            assert offset > 100 * MiB  # the pool really filled up
            for attempt in range(3):
                assert_no_space(api.post("/v1/shares", json={"name": f"after-{attempt}", "size": MiB}))
                assert_no_space(api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": f"s-{attempt}"}))
            assert serve.process.poll() is None, serve.stderr_text()
            assert nfs.read(fh, 0, 16)[0] == chunk[:16]  # NFS still reads
        assert api.get(f"/v1/shares/{share['id']}").status_code == 200
        assert api.delete(f"/v1/shares/{share['id']}").status_code == 204  # and frees the pool
    assert serve.stop() == 0, serve.stderr_text()


def test_only_space_freeing_writes_spend_the_database_reserve(small_filesystem):
    """On a full btrfs, an insert answers NoSpace and leaves the reserve; a delete spends it and works."""
    from acmenfs.appliance.errors import NoSpace
    from acmenfs.appliance.store import ShareRecord, Store

    mount_point = small_filesystem("btrfs")
    store = Store(mount_point / "acmenfs.db")
    store.open()
    try:
        assert store.reserve.armed()
        for index in range(3):
            store.insert_share(ShareRecord(f"id-{index}", f"s{index}", MiB, "available", "now"))
        fill_filesystem(mount_point)
        with pytest.raises(NoSpace):
            store.insert_share(ShareRecord("id-new", "new", MiB, "available", "now"))
        assert store.reserve.armed()  # a write that makes things never spends it
        store.delete_share("id-0")  # would be NoSpace without the reserve
        assert [share.id for share in store.list_shares()] == ["id-1", "id-2"]
        assert not store.reserve.armed()
    finally:
        store.close()
