"""The path table's SQLite database: WAL without a shared-memory ``-shm`` file (exclusive
locking, as the appliance store), one holder at a time, older databases still readable."""

from __future__ import annotations

import sqlite3
import time

import pytest

from acmenfs.fs.pathtable import PathTable, PathTableInUse

EXPORT = b"E" * 8


def test_handles_persist_across_reopen_and_no_shm_file_is_made(tmp_path):
    database = tmp_path / "handles.sqlite3"
    table = PathTable(database)
    try:
        first = table.handle_for(EXPORT, "a/b", 11)
        assert table.handle_for(EXPORT, "a/b", 11) == first
        table.renamed(EXPORT, "a", "c")
        assert table.resolve(EXPORT, first) == ("c/b", 11)
        assert not (tmp_path / "handles.sqlite3-shm").exists()
        assert table._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        table.close()
    reopened = PathTable(database)
    try:
        assert reopened.resolve(EXPORT, first) == ("c/b", 11)
        reopened.removed(EXPORT, "c")
        assert reopened.resolve(EXPORT, first) is None
    finally:
        reopened.close()
    assert not (tmp_path / "handles.sqlite3-shm").exists()


def test_a_second_holder_is_refused_with_a_clear_error_until_the_first_closes(tmp_path):
    database = tmp_path / "handles.sqlite3"
    table = PathTable(database)
    handle = table.handle_for(EXPORT, "x", 5)
    started = time.monotonic()
    with pytest.raises(PathTableInUse, match="in use by another server"):
        PathTable(database, busy_timeout=0.2)
    assert time.monotonic() - started < 10
    assert table.resolve(EXPORT, handle) == ("x", 5)   # the holder is unaffected
    table.close()
    second = PathTable(database, busy_timeout=0.2)
    try:
        assert second.resolve(EXPORT, handle) == ("x", 5)
    finally:
        second.close()


def test_a_table_written_in_shared_memory_wal_mode_opens_with_its_handles(tmp_path):
    database = tmp_path / "handles.sqlite3"
    old = sqlite3.connect(database, isolation_level=None)   # as earlier versions wrote it
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE objects (id INTEGER PRIMARY KEY, export_id BLOB NOT NULL, path TEXT NOT NULL, "
                "ino INTEGER NOT NULL, UNIQUE (export_id, path))")
    old.execute("INSERT INTO objects (id, export_id, path, ino) VALUES (7, ?, 'kept', 3)", (EXPORT,))
    old.close()
    table = PathTable(database)
    try:
        assert table.resolve(EXPORT, (7).to_bytes(8, "big")) == ("kept", 3)
        assert table.handle_for(EXPORT, "kept", 3) == (7).to_bytes(8, "big")
    finally:
        table.close()
