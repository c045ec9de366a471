"""Persistent handle table for servers that cannot use kernel file handles (not root).

Owns a SQLite table in the state directory mapping a small object id (the
handle) to the object's path relative to its export root and its inode number.
Ids are handed out on LOOKUP/CREATE/READDIRPLUS, survive restarts, follow
renames done through the server (``renamed``) and disappear on removal
(``removed``).  An id whose path no longer leads to the same inode is stale.
Limitation (documented): renames made behind the server's back make the moved
objects' handles stale.  It never opens the files themselves.

The database is WAL in ``locking_mode=EXCLUSIVE`` (as the appliance store, see
``acmenfs.appliance.store``): the WAL index lives in the process's memory, not in
a memory-mapped ``-shm`` file, which a page fault could turn into SIGBUS on a
full copy-on-write pool.  That is sound because one process holds the table:
without kernel handles the server runs a single process (``acmenfs.workers.policy``
refuses several), and a second opener gets ``PathTableInUse``, not a shared table.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from pathlib import Path

_ID = struct.Struct(">Q")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY,
    export_id BLOB NOT NULL,
    path TEXT NOT NULL,
    ino INTEGER NOT NULL,
    UNIQUE (export_id, path)
);
"""


class PathTableInUse(RuntimeError):
    """Another server (process or instance) holds the state directory's handle table."""


class PathTable:
    def __init__(self, database: str | Path, *, busy_timeout: float = 5.0) -> None:
        self._db = sqlite3.connect(str(database), check_same_thread=False, isolation_level=None,
                                   timeout=busy_timeout)
        try:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: no -shm file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT COUNT(*) FROM objects").fetchone()  # takes the exclusive lock now
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" in str(exc):
                raise PathTableInUse(f"the handle table {database} is in use by another server "
                                     "(one server per state directory)") from exc
            raise
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def handle_for(self, export_id: bytes, path: str, ino: int) -> bytes:
        """The id of the object at ``path`` (created, or renewed if the inode changed)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, ino FROM objects WHERE export_id = ? AND path = ?", (export_id, path)
            ).fetchone()
            if row is not None and row[1] == ino:
                return _ID.pack(row[0])
            if row is not None:
                self._db.execute("DELETE FROM objects WHERE id = ?", (row[0],))
            cursor = self._db.execute(
                "INSERT INTO objects (export_id, path, ino) VALUES (?, ?, ?)", (export_id, path, ino)
            )
            return _ID.pack(cursor.lastrowid)

    def resolve(self, export_id: bytes, handle: bytes) -> tuple[str, int] | None:
        if len(handle) != _ID.size:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT path, ino FROM objects WHERE id = ? AND export_id = ?", (_ID.unpack(handle)[0], export_id)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def removed(self, export_id: bytes, path: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM objects WHERE export_id = ? AND (path = ? OR substr(path, 1, ?) = ?)",
                (export_id, path, len(path) + 1, path + "/"),
            )

    def renamed(self, export_id: bytes, old: str, new: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM objects WHERE export_id = ? AND (path = ? OR substr(path, 1, ?) = ?)",
                (export_id, new, len(new) + 1, new + "/"),
            )
            self._db.execute(
                "UPDATE objects SET path = ? || substr(path, ?) WHERE export_id = ? "
                "AND (path = ? OR substr(path, 1, ?) = ?)",
                (new, len(old) + 1, export_id, old, len(old) + 1, old + "/"),
            )
            self._db.execute("COMMIT")
