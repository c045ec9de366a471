"""The SQLite store: migrations, pragmas, constraints (real SQLite files)."""

from __future__ import annotations

import sqlite3

import pytest

from acmenfs.appliance.errors import Conflict
from acmenfs.appliance.models import AccessRule
from acmenfs.appliance.store import MIGRATIONS, SCHEMA_VERSION, ShareRecord, SnapshotRecord, Store, TokenRecord


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "acmenfs.db")
    opened.open()
    yield opened
    opened.close()


def share(share_id: str, name: str, **changes) -> ShareRecord:
    return ShareRecord(id=share_id, name=name, size=100, state="available", created_at="t", **changes)


def test_fresh_database_is_migrated_to_the_latest_schema(tmp_path):
    store = Store(tmp_path / "db")
    lines = store.open()
    assert len(lines) == len(MIGRATIONS) == SCHEMA_VERSION
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    again = Store(tmp_path / "db")
    assert again.open() == []  # nothing left to migrate
    again.close()


def test_pragmas_are_wal_full_and_foreign_keys(store):
    connection = store._conn()
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # exclusive: the WAL index lives in process memory, never in an mmapped -shm file (SIGBUS on a full btrfs)
    assert connection.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
    store.insert_token(TokenRecord("t1", "n", "now"), "hash")
    assert not store.path.with_name(store.path.name + "-shm").exists()
    assert store.reserve.armed()
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(RuntimeError, match="newer than this acmenfs"):
        Store(path).open()


def test_share_round_trip_keeps_access_order(store):
    rules = (AccessRule("10.0.0.9"), AccessRule("10.0.0.0/8", "ro", "all"), AccessRule("*", "ro"))
    record = share("s1", "one", access=rules, volume_name="v", volume_sparse=False, volume_mode=0o666)
    store.insert_share(record)
    assert store.get_share("s1") == record
    store.update_share(record.with_changes(size=200, access=rules[::-1]))
    assert store.get_share("s1").access == rules[::-1] and store.get_share("s1").size == 200


def test_unique_names_and_foreign_keys(store):
    store.insert_share(share("s1", "one"))
    with pytest.raises(Conflict):
        store.insert_share(share("s2", "one"))
    snapshot = SnapshotRecord(id="p1", share_id="s1", name="snap", size=100, state="available", created_at="t")
    store.insert_snapshot(snapshot)
    with pytest.raises(Conflict):
        store.insert_snapshot(SnapshotRecord(id="p2", share_id="s1", name="snap", size=1, state="available",
                                             created_at="t"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_snapshot(SnapshotRecord(id="p3", share_id="nope", name="x", size=1, state="available",
                                             created_at="t"))
    with pytest.raises(sqlite3.IntegrityError):
        store.delete_share("s1")  # its snapshot still refers to it
    store.mark_share_tree_deleting("s1")
    assert store.get_snapshot("p1").state == "deleting" and store.get_share("s1").state == "deleting"
    assert store.provisioned_totals() == (0, 0, 0)


def test_failed_transaction_rolls_back(store):
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as connection:
            connection.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
            1 / 0
    assert store.get_setting("k") is None
