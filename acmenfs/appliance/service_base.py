"""The appliance service's shared state and internals, below every public operation.

Owns ``ServiceBase``: the service's state (layout, store, backend, export table,
locks, operation counters), the per-share locks and snapshot pins, counting an
operation and its failure by error code, lookups that answer 404/409, the
free-space floor (``MIN_FREE_BYTES``), building a new share in staging and
renaming it into place, discarding data through the trash, and publishing a
share into the export table.  The public operations live in service.py (shares,
access, pool, tokens) and service_snapshots.py (snapshots, clones, revert).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from acmenfs.appliance.errors import ApplianceError, Conflict, InvalidRequest, NoSpace, NotFound, error_for_os_error
from acmenfs.appliance.models import STATE_AVAILABLE, AccessRule, NfsEndpoint, Share
from acmenfs.appliance.publishing import (
    publish_share,
    share_model,
    snapshot_export_path,
    unpublish,
)
from acmenfs.appliance.storage import DataLayout, StorageBackend, rename_durably
from acmenfs.appliance.store import ShareRecord, SnapshotRecord, Store
from acmenfs.nfs3.exports import ExportTable

log = logging.getLogger("acmenfs.appliance.service")
# Operations that make data refuse to start below this much free space (507 no_space), so a
# nearly full pool is never filled further by the appliance itself, and the database reserve
# (store.DatabaseReserve) is re-armed first whenever space came back.
MIN_FREE_BYTES = 16 << 20


def _is_uuid(text: object) -> bool:
    try:
        return isinstance(text, str) and str(uuid.UUID(text)) == text
    except ValueError:
        return False


class ServiceBase:
    """State and internals shared by the appliance service's operations."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        exports: ExportTable | None = None,
        backend: str | None = None,
        nfs: NfsEndpoint = NfsEndpoint("127.0.0.1", 2049, 20048),
        default_access: Iterable[AccessRule] = (),
    ) -> None:
        self.layout = DataLayout(Path(data_dir).resolve())
        self.exports = exports
        self.nfs = nfs
        self.default_access = tuple(default_access)
        self._requested_backend = backend
        self._backend: StorageBackend | None = None
        self._store = Store(self.layout.database)
        self._mutex = threading.Lock()
        self._share_locks: dict[str, threading.Lock] = {}
        self._pinned_snapshots: Counter[str] = Counter()
        self._operations: Counter[str] = Counter()
        self._errors: defaultdict[str, Counter[str]] = defaultdict(Counter)

    # -- the storage backend (chosen by open()) ---------------------------------------------

    @property
    def backend(self) -> StorageBackend:
        if self._backend is None:
            raise RuntimeError("the appliance service is not open")
        return self._backend

    @property
    def backend_name(self) -> str:
        return self.backend.name

    # -- internals: creation, deletion --------------------------------------------------------

    def _create_share_from(self, record: ShareRecord, build: Callable[[Path], None], action: str) -> Share:
        """Insert the row 'creating', build data in staging, rename into place, mark available."""
        self._store.insert_share(record)
        staging = self.layout.staging_dir(record.id)
        share_dir = self.layout.share_dir(record.id)
        try:
            build(staging)
            rename_durably(staging, share_dir)
            self._store.set_share_state(record.id, STATE_AVAILABLE)
        except BaseException as exc:
            self._discard(staging, record.id)
            self._discard(share_dir, record.id)
            self._store.delete_share(record.id)
            if isinstance(exc, OSError):
                raise error_for_os_error(exc, action) from exc
            raise
        record = record.with_changes(state=STATE_AVAILABLE)
        self._publish_share(record)
        log.info("%s: share %s (%s) available", action, record.id, record.name)
        return share_model(self.layout, record)

    def _require_free_space(self, action: str) -> None:
        """NoSpace (507) when the pool has less than MIN_FREE_BYTES left for new data."""
        self._store.reserve.arm()
        fs = os.statvfs(self.layout.root)
        free = fs.f_bavail * fs.f_frsize
        if free < MIN_FREE_BYTES:
            raise NoSpace(f"{action}: the pool is full ({free} bytes free); delete shares or snapshots first")

    def _volume_path(self, record: ShareRecord) -> Path | None:
        """The share's volume file if it has one on disk."""
        if record.volume_name is None:
            return None
        path = self.layout.share_dir(record.id) / record.volume_name
        return path if path.exists() else None

    @staticmethod
    def _claim_space(action: str, step: Callable, *arguments) -> None:
        try:
            step(*arguments)
        except OSError as exc:
            raise error_for_os_error(exc, action) from exc

    def _roll_back_snapshot(self, record: SnapshotRecord) -> None:
        self._discard(self.layout.staging_dir(record.id), record.id)
        self._discard(self.layout.snapshot_dir(record.id), record.id)
        self._store.delete_snapshot(record.id)

    def _remove_snapshot_data_and_row(self, record: SnapshotRecord) -> None:
        unpublish(self.exports, snapshot_export_path(record.id))
        self._discard(self.layout.snapshot_dir(record.id), record.id)
        self._store.delete_snapshot(record.id)

    def _discard(self, path: Path, item_id: str) -> None:
        """Remove ``path`` in one atomic step (via trash); reconcile finishes if we die."""
        self.backend.discard(path, self.layout.trash / f"{item_id}-{uuid.uuid4().hex[:8]}")

    # -- internals: lookups and locks -----------------------------------------------------------

    def _require_share(self, share_id: str) -> ShareRecord:
        record = self._store.get_share(share_id) if _is_uuid(share_id) else None
        if record is None:
            raise NotFound(f"no share {share_id}")
        return record

    def _require_available_share(self, share_id: str) -> ShareRecord:
        record = self._require_share(share_id)
        if record.state != STATE_AVAILABLE:
            raise Conflict(f"share {record.name!r} is {record.state}, not available", "share_busy")
        return record

    def _require_snapshot(self, snapshot_id: str, missing_code: str = "not_found") -> SnapshotRecord:
        record = self._store.get_snapshot(snapshot_id) if _is_uuid(snapshot_id) else None
        if record is None:
            raise NotFound(f"no snapshot {snapshot_id}", missing_code)
        return record

    @contextmanager
    def _pinned(self, snapshot_id: str, missing_code: str = "not_found") -> Iterator[SnapshotRecord]:
        """Hold an available snapshot so it cannot be deleted while it is copied from.

        ``missing_code``: the 404 code when it does not exist (``snapshot_not_found`` when the
        request's path names another object, so the caller can tell which one is missing).
        """
        with self._mutex:
            record = self._require_snapshot(snapshot_id, missing_code)
            if record.state != STATE_AVAILABLE:
                raise Conflict(f"snapshot {record.name!r} is {record.state}, not available", "share_busy")
            self._pinned_snapshots[snapshot_id] += 1
        try:
            yield record
        finally:
            with self._mutex:
                self._pinned_snapshots[snapshot_id] -= 1
                if not self._pinned_snapshots[snapshot_id]:
                    del self._pinned_snapshots[snapshot_id]

    @contextmanager
    def _share_locked(self, share_id: str) -> Iterator[None]:
        with self._mutex:
            lock = self._share_locks.setdefault(share_id, threading.Lock())
        with lock:
            yield

    def _forget_share_lock(self, share_id: str) -> None:
        with self._mutex:
            self._share_locks.pop(share_id, None)

    @contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """Count an operation; count its failure by error code and re-raise."""
        with self._mutex:
            self._operations[name] += 1
        try:
            yield
        except ApplianceError as exc:
            self._count_error(name, exc.code)
            raise
        except OSError as exc:
            self._count_error(name, "storage_error")
            raise error_for_os_error(exc, name.replace("_", " ")) from exc
        except Exception:
            self._count_error(name, "internal_error")
            raise

    def _count_error(self, operation: str, code: str) -> None:
        with self._mutex:
            self._errors[operation][code] += 1

    def _rules_or_default(self, access: list[AccessRule] | None) -> tuple[AccessRule, ...]:
        if access is None:
            return self.default_access
        rules: dict[str, AccessRule] = {}
        for rule in access:
            if not isinstance(rule, AccessRule):
                raise InvalidRequest(f"access entries must be access rules, not {rule!r}", "invalid_access")
            rules[rule.client] = rule  # a later rule for the same client replaces an earlier one
        return tuple(rules.values())

    def _publish_share(self, record: ShareRecord) -> None:
        publish_share(self.exports, self.layout, record, self._store.list_snapshots(record.id))
