"""A long clone (copy fallback) holds no global lock: other calls proceed while it copies."""

from __future__ import annotations

import threading

import pytest

from acmenfs.appliance.errors import Conflict

MIB = 1 << 20


def test_calls_proceed_while_a_clone_is_copying(service_factory):
    service = service_factory("ext4")
    source = service.create_share("source", 64 * MIB, volume={"name": "v"})
    with open(service.layout.share_dir(source.id) / "v", "r+b") as handle:
        handle.write(b"d" * (8 * MIB))
    snapshot = service.create_snapshot(source.id, "s")
    copying, release = threading.Event(), threading.Event()

    def hold_copy(done: int, total: int) -> None:
        copying.set()
        assert release.wait(60), "the test never released the copy"

    results = {}

    def clone() -> None:
        results["clone"] = service.clone_snapshot(snapshot.id, "clone", progress=hold_copy)

    worker = threading.Thread(target=clone)
    worker.start()
    try:
        assert copying.wait(60)
        other = service.create_share("other", MIB, volume={"name": "v"})
        service.create_snapshot(other.id, "other-snap")
        service.create_snapshot(source.id, "second")  # the source share is not locked by the clone
        assert {s.name for s in service.list_shares()} == {"source", "clone", "other"}
        assert service.pool_stats().share_count == 3
        with pytest.raises(Conflict) as caught:
            service.delete_snapshot(snapshot.id)
        assert caught.value.code == "share_busy"
        with pytest.raises(Conflict):
            service.delete_share(source.id, cascade=True)
        clone_row = service.list_shares(name="clone")[0]
        assert clone_row.state == "creating" and clone_row.volume is None
    finally:
        release.set()
        worker.join(60)
    assert results["clone"].state == "available" and results["clone"].volume.allocated_bytes >= 8 * MIB
    service.delete_snapshot(snapshot.id)  # no longer pinned


def test_concurrent_creates_of_one_name_make_one_share(service_factory):
    service = service_factory("xfs")
    outcomes = []

    def create() -> None:
        try:
            outcomes.append(service.create_share("race", MIB, volume={"name": "v"}).id)
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes.count("name_conflict") == 7
    assert len(service.list_shares()) == 1
