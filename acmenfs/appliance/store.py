"""The appliance's metadata store: shares, snapshots, access rules and API tokens in SQLite.

Owns the schema, its versioned migrations (``PRAGMA user_version`` and the
``MIGRATIONS`` list) and short transactions over one connection. It does no
file-system work besides the database file and knows nothing of exports; the
service is its only writer.

Durability choices: WAL journal in ``locking_mode=EXCLUSIVE``, foreign keys
on, and ``synchronous=FULL``: a commit is on disk before the service answers.
NORMAL would only risk the last commits on power loss, but those commits are
exactly the ones that say "this share's data is complete" — losing one would
make reconcile roll back a share the client was already told exists. Management
operations are rare, so an fsync per commit costs nothing that matters.

A full pool (the database shares its file system with the shares): WAL in
shared-memory mode mmaps a ``-shm`` file, and a page fault on it when a CoW
file system (btrfs) has no free block kills the process with SIGBUS; a
restart then fails in ``PRAGMA journal_mode=WAL`` ("disk I/O error").
``locking_mode=EXCLUSIVE`` keeps the WAL index in the process's own memory (no
``-shm`` file; the one process holds the database, which it did anyway), so a
full pool turns into SQLITE_FULL, which this module raises as ``NoSpace``
(507). Measured on 320 MiB loop file systems filled to 100% (btrfs, XFS,
ext4): shared-memory WAL crashed (btrfs); exclusive WAL, DELETE and PERSIST
journals never crashed, reopened and read; exclusive WAL committed fastest
(btrfs 910-1488, XFS ~1950, ext4 1234-1675 commits/s vs DELETE 47-262 on
btrfs). No mode can write on a full CoW file system, so the store keeps a
``DatabaseReserve``: a preallocated file released only by the writes that
free space (marking and deleting rows), so an operator can always delete a
share on a full pool; it is re-armed when space allows.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from acmenfs.appliance.errors import Conflict, NoSpace
from acmenfs.appliance.models import AccessRule

log = logging.getLogger("acmenfs.appliance.store")
T = TypeVar("T")
RESERVE_BYTES = 8 << 20  # many thousands of small commits; one is a few pages
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """A share row plus its access rules (volume_* are None when it holds no volume file)."""

    id: str
    name: str
    size: int
    state: str
    created_at: str
    origin_snapshot_id: str | None = None
    volume_name: str | None = None
    volume_sparse: bool = True
    volume_mode: int = 0o660
    access: tuple[AccessRule, ...] = ()

    def with_changes(self, **changes) -> "ShareRecord":
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A snapshot row; volume_* record the share's volume file at snapshot time."""

    id: str
    share_id: str
    name: str
    size: int
    state: str
    created_at: str
    volume_name: str | None = None
    volume_sparse: bool = True
    volume_mode: int = 0o660


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    created_at: str


def _migration_1_initial_schema(connection: sqlite3.Connection) -> None:
    connection.execute(
        """CREATE TABLE shares (
               id TEXT PRIMARY KEY,
               name TEXT NOT NULL UNIQUE,
               size INTEGER NOT NULL CHECK (size > 0),
               state TEXT NOT NULL CHECK (state IN ('creating', 'available', 'deleting', 'error')),
               created_at TEXT NOT NULL,
               origin_snapshot_id TEXT,
               volume_name TEXT,
               volume_sparse INTEGER NOT NULL DEFAULT 1,
               volume_mode INTEGER NOT NULL DEFAULT 432)"""
    )
    connection.execute(
        """CREATE TABLE access_rules (
               share_id TEXT NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
               position INTEGER NOT NULL,
               client TEXT NOT NULL,
               access TEXT NOT NULL,
               squash TEXT NOT NULL,
               PRIMARY KEY (share_id, client))"""
    )
    connection.execute(
        """CREATE TABLE snapshots (
               id TEXT PRIMARY KEY,
               share_id TEXT NOT NULL REFERENCES shares(id),
               name TEXT NOT NULL,
               size INTEGER NOT NULL,
               state TEXT NOT NULL CHECK (state IN ('creating', 'available', 'deleting', 'error')),
               created_at TEXT NOT NULL,
               volume_name TEXT,
               volume_sparse INTEGER NOT NULL DEFAULT 1,
               volume_mode INTEGER NOT NULL DEFAULT 432,
               UNIQUE (share_id, name))"""
    )
    connection.execute(
        """CREATE TABLE tokens (
               id TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               secret_sha256 TEXT NOT NULL UNIQUE,
               created_at TEXT NOT NULL)"""
    )
    connection.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migration_1_initial_schema,
]
SCHEMA_VERSION = len(MIGRATIONS)

_SHARE_COLUMNS = "id, name, size, state, created_at, origin_snapshot_id, volume_name, volume_sparse, volume_mode"
_SNAPSHOT_COLUMNS = "id, share_id, name, size, state, created_at, volume_name, volume_sparse, volume_mode"


class DatabaseReserve:
    """A preallocated file that holds back space for the database on a full pool.

    ``release()`` frees it (and syncs the file system so btrfs really has the
    blocks back); ``arm()`` makes it again, best effort: on a full pool it
    stays released until space comes back.
    """

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self._warned = False  # "cannot arm" is said once per full-pool episode, not per request

    def armed(self) -> bool:
        try:
            return self.path.stat().st_blocks * 512 >= self.size
        except FileNotFoundError:
            return False

    def arm(self) -> bool:
        if self.armed():
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("store: cannot make the database reserve %s: %s", self.path, exc.strerror)
            return False
        try:
            os.posix_fallocate(fd, 0, self.size)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(self.path)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if not self._warned:
                log.warning("store: the pool is full: the database reserve (%d bytes) waits for free space; "
                            "delete shares or snapshots", self.size)
                self._warned = True
            return False
        os.close(fd)
        self._warned = False
        log.info("store: database reserve of %d bytes armed at %s", self.size, self.path)
        return True

    def release(self) -> bool:
        """Free the reserved space; False if there was none to free."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _libc.syncfs(fd)
        finally:
            os.close(fd)
        log.warning("store: the pool is full; released the database reserve %s to free space", self.path)
        return True


def _is_disk_full(exc: sqlite3.Error, database: Path) -> bool:
    """SQLITE_FULL, or an I/O or open error while the database's file system has no space left."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    if code is None or code & 0xFF not in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return False
    try:
        fs = os.statvfs(database.parent)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < RESERVE_BYTES


class DatabaseInUse(RuntimeError):
    """Another process (a running appliance) holds the database."""


class Store:
    """Thread-safe access to the SQLite database (one connection, one lock, short transactions)."""

    def __init__(self, path: str | Path, reserve_bytes: int = RESERVE_BYTES, busy_timeout: float = 30) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.reserve = DatabaseReserve(self.path.with_name(self.path.name + ".reserve"), reserve_bytes)
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> list[str]:
        """Open the database, apply pending migrations; returns a line per migration applied.

        On a full pool, opening may need a block (the ``-wal`` file is made
        again): the reserve is spent for that, and re-armed when space allows.
        """
        try:
            try:
                connection = self._connect()
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc, self.path) or not self.reserve.release():
                    raise
                connection = self._connect()
        except sqlite3.OperationalError as exc:
            if _is_disk_full(exc, self.path):
                raise NoSpace(f"cannot open {self.path}: the pool is full and its database reserve is spent; "
                              f"free some space in {self.path.parent} ({exc})") from exc
            raise
        self._connection = connection
        lines = self._migrate()
        self.reserve.arm()
        return lines

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=self.busy_timeout)
        try:
            connection.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: no -shm file (see above)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # takes the lock now
        except sqlite3.OperationalError as exc:
            connection.close()
            if "locked" in str(exc):
                raise DatabaseInUse(f"{self.path} is in use by another process (is the appliance running?)") from exc
            raise
        return connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def schema_version(self) -> int:
        with self._lock:
            return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> list[str]:
        applied = []
        while (version := self.schema_version()) < SCHEMA_VERSION:
            migration = MIGRATIONS[version]
            with self.transaction() as connection:
                migration(connection)
                connection.execute(f"PRAGMA user_version = {version + 1}")
            applied.append(f"store: migrated schema {version} -> {version + 1} ({migration.__name__})")
            log.info("%s", applied[-1])
        if self.schema_version() > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {self.schema_version()}, newer than this acmenfs ({SCHEMA_VERSION})"
            )
        return applied

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("store is not open")
        return self._connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on success, rolled back on any exception.

        A full file system raises ``NoSpace`` (and leaves no transaction open).
        """
        with self._lock:
            connection = self._conn()
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:  # SQLite may have rolled back already
                        connection.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if _is_disk_full(exc, self.path):
                    raise NoSpace(f"no space left in the pool for the appliance's database ({exc})") from exc
                raise

    def _transact(self, work: Callable[[sqlite3.Connection], T], frees_space: bool = False) -> T:
        """Run ``work`` in one transaction; a write that frees space may spend the reserve to run."""
        try:
            with self.transaction() as connection:
                result = work(connection)
        except NoSpace:
            if not frees_space or not self.reserve.release():
                raise
            with self.transaction() as connection:
                result = work(connection)
        if frees_space and not self.reserve.armed():
            self.reserve.arm()
        return result

    def _write(self, sql: str, parameters: tuple = (), frees_space: bool = False) -> int:
        """One statement in its own transaction; returns the number of rows changed."""
        return self._transact(lambda connection: connection.execute(sql, parameters).rowcount, frees_space)

    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, parameters).fetchall()

    # -- shares ------------------------------------------------------------------

    def insert_share(self, record: ShareRecord) -> None:
        """Insert a share row (the unique name is reserved from here on)."""
        try:
            with self.transaction() as connection:
                connection.execute(
                    f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, record.name, record.size, record.state, record.created_at,
                     record.origin_snapshot_id, record.volume_name, int(record.volume_sparse), record.volume_mode),
                )
                _write_access(connection, record.id, record.access)
        except sqlite3.IntegrityError as exc:
            if "shares.name" in str(exc):
                raise Conflict(f"a share named {record.name!r} already exists", "name_conflict") from exc
            raise

    def get_share(self, share_id: str) -> ShareRecord | None:
        rows = self._query(f"SELECT {_SHARE_COLUMNS} FROM shares WHERE id = ?", (share_id,))
        return self._share_from_row(rows[0]) if rows else None

    def list_shares(self, name: str | None = None) -> list[ShareRecord]:
        if name is None:
            rows = self._query(f"SELECT {_SHARE_COLUMNS} FROM shares ORDER BY created_at, id")
        else:
            rows = self._query(f"SELECT {_SHARE_COLUMNS} FROM shares WHERE name = ?", (name,))
        return [self._share_from_row(row) for row in rows]

    def _share_from_row(self, row: tuple) -> ShareRecord:
        access = tuple(
            AccessRule(client, access, squash)
            for client, access, squash in self._query(
                "SELECT client, access, squash FROM access_rules WHERE share_id = ? ORDER BY position", (row[0],)
            )
        )
        return ShareRecord(
            id=row[0], name=row[1], size=row[2], state=row[3], created_at=row[4], origin_snapshot_id=row[5],
            volume_name=row[6], volume_sparse=bool(row[7]), volume_mode=row[8], access=access,
        )

    def update_share(self, record: ShareRecord) -> None:
        """Write every field of an existing share (name excepted) and its access list."""
        with self.transaction() as connection:
            connection.execute(
                "UPDATE shares SET size = ?, state = ?, volume_name = ?, volume_sparse = ?, volume_mode = ? "
                "WHERE id = ?",
                (record.size, record.state, record.volume_name, int(record.volume_sparse), record.volume_mode,
                 record.id),
            )
            _write_access(connection, record.id, record.access)

    def set_share_state(self, share_id: str, state: str) -> None:
        self._write("UPDATE shares SET state = ? WHERE id = ?", (state, share_id), frees_space=state != "available")

    def mark_share_tree_deleting(self, share_id: str) -> None:
        """Mark a share and all its snapshots 'deleting' in one transaction (may spend the reserve)."""

        def mark(connection: sqlite3.Connection) -> None:
            connection.execute("UPDATE snapshots SET state = 'deleting' WHERE share_id = ?", (share_id,))
            connection.execute("UPDATE shares SET state = 'deleting' WHERE id = ?", (share_id,))

        self._transact(mark, frees_space=True)

    def delete_share(self, share_id: str) -> None:
        self._write("DELETE FROM shares WHERE id = ?", (share_id,), frees_space=True)

    # -- snapshots ---------------------------------------------------------------

    def insert_snapshot(self, record: SnapshotRecord) -> None:
        try:
            with self.transaction() as connection:
                connection.execute(
                    f"INSERT INTO snapshots ({_SNAPSHOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, record.share_id, record.name, record.size, record.state, record.created_at,
                     record.volume_name, int(record.volume_sparse), record.volume_mode),
                )
        except sqlite3.IntegrityError as exc:
            if "snapshots.share_id, snapshots.name" in str(exc):
                raise Conflict(f"the share already has a snapshot named {record.name!r}", "name_conflict") from exc
            raise

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        rows = self._query(f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?", (snapshot_id,))
        return _snapshot_from_row(rows[0]) if rows else None

    def list_snapshots(self, share_id: str | None = None) -> list[SnapshotRecord]:
        if share_id is None:
            rows = self._query(f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots ORDER BY created_at, id")
        else:
            rows = self._query(
                f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE share_id = ? ORDER BY created_at, id", (share_id,)
            )
        return [_snapshot_from_row(row) for row in rows]

    def set_snapshot_state(self, snapshot_id: str, state: str) -> None:
        self._write("UPDATE snapshots SET state = ? WHERE id = ?", (state, snapshot_id),
                    frees_space=state != "available")

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._write("DELETE FROM snapshots WHERE id = ?", (snapshot_id,), frees_space=True)

    # -- pool sums ---------------------------------------------------------------

    def provisioned_totals(self) -> tuple[int, int, int]:
        """(sum of share sizes, share count, snapshot count), rows being deleted excluded."""
        size_sum, share_count = self._query(
            "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM shares WHERE state != 'deleting'"
        )[0]
        snapshot_count = self._query("SELECT COUNT(*) FROM snapshots WHERE state != 'deleting'")[0][0]
        return size_sum, share_count, snapshot_count

    # -- tokens and settings -----------------------------------------------------

    def insert_token(self, record: TokenRecord, secret_sha256: str) -> None:
        with self.transaction() as connection:
            connection.execute(
                "INSERT INTO tokens (id, name, secret_sha256, created_at) VALUES (?, ?, ?, ?)",
                (record.id, record.name, secret_sha256, record.created_at),
            )

    def list_tokens(self) -> list[TokenRecord]:
        return [TokenRecord(*row) for row in self._query("SELECT id, name, created_at FROM tokens ORDER BY created_at")]

    def find_token(self, secret_sha256: str) -> TokenRecord | None:
        rows = self._query("SELECT id, name, created_at FROM tokens WHERE secret_sha256 = ?", (secret_sha256,))
        return TokenRecord(*rows[0]) if rows else None

    def delete_token(self, token_id: str) -> bool:
        """Delete a token unless it is the last one (409 ``last_admin_token``); False if there is none."""

        def delete(connection: sqlite3.Connection) -> bool:
            if connection.execute("SELECT 1 FROM tokens WHERE id = ?", (token_id,)).fetchone() is None:
                return False
            if connection.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] <= 1:
                raise Conflict(
                    "this is the last API token (every token is an admin token); create another one first, "
                    "or recover offline with 'acmenfs token reset --data-dir DIR'", "last_admin_token",
                )
            connection.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            return True

        return self._transact(delete)

    def get_setting(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))


def _write_access(connection: sqlite3.Connection, share_id: str, rules: tuple[AccessRule, ...]) -> None:
    connection.execute("DELETE FROM access_rules WHERE share_id = ?", (share_id,))
    connection.executemany(
        "INSERT INTO access_rules (share_id, position, client, access, squash) VALUES (?, ?, ?, ?, ?)",
        [(share_id, position, rule.client, rule.access, rule.squash) for position, rule in enumerate(rules)],
    )


def _snapshot_from_row(row: tuple) -> SnapshotRecord:
    return SnapshotRecord(
        id=row[0], share_id=row[1], name=row[2], size=row[3], state=row[4], created_at=row[5],
        volume_name=row[6], volume_sparse=bool(row[7]), volume_mode=row[8],
    )
