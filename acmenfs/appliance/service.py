"""The appliance service: shares, snapshots, clones, access lists, tokens and pool stats.

Owns every management operation and its crash-safe ordering, per-share locking,
publishing shares and snapshots into the live NFS ``ExportTable``, and counting
operations for /metrics. It is synchronous and thread-safe (the REST layer calls
it from worker threads) and the only writer of the store. It must not speak HTTP
or parse JSON, and it leaves file copying to the storage backend.

Crash safety: a row is written in state ``creating`` before any data exists, the
data is made under ``staging/`` and renamed into place only when complete, and
only then is the row marked ``available``. A volume file gets its owner
(``uid``/``gid``) and mode before it is renamed into place: in the share's
staging dir, or under a hidden ``.acmenfs-partial-*`` name inside the share
for ``put_volume``. Deletion marks rows ``deleting``,
renames data into ``trash/``, deletes the rows, then removes the trash. Revert
builds the snapshot's copy in staging and swaps it with the share directory in
one ``renameat2(RENAME_EXCHANGE)``. ``open()`` runs ``reconcile`` to finish or
undo whatever a killed process left (see reconcile.py).

All or nothing on failure too: a change to an existing share (extend,
``put_volume``, revert) claims space first (grow or allocate), renames last,
writes the row after the files, and undoes its finished steps in reverse
(``volumes.Undo``) when any later step fails, the row write included.

NFS publishing (publishing.py): an available share is exported at ``/shares/<share-id>`` with its
access rules and its size as quota; each available snapshot is exported
read-only at ``/snapshots/<snapshot-id>`` with its share's rules forced to
``ro``. A share with an empty access list is exported to nobody.

Locking: a per-share lock serialises operations on one share (a long copy-fallback
snapshot holds only its share's lock); clones and reverts "pin" their source
snapshot so it cannot be deleted under them (deleting a pinned snapshot answers
409 ``share_busy``). The store's own lock covers only short transactions.
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
from acmenfs.appliance.models import (
    STATE_AVAILABLE,
    STATE_CREATING,
    AccessRule,
    NfsEndpoint,
    PoolStats,
    Share,
    Snapshot,
    Token,
    parse_volume_mode,
    utc_now_text,
    validate_name,
    validate_owner_id,
    validate_size,
)
from acmenfs.appliance.publishing import (  # noqa: F401  (export paths re-exported)
    publish_share,
    publish_snapshot,
    share_export_path,
    share_model,
    snapshot_export_path,
    snapshot_model,
    unpublish,
)
from acmenfs.appliance.reconcile import reconcile
from acmenfs.appliance.storage import (
    DataLayout,
    StorageBackend,
    choose_backend,
    create_volume_file,
    fsync_path,
    rename_durably,
    rename_exchange,
    set_volume_owner,
)
from acmenfs.appliance.store import ShareRecord, SnapshotRecord, Store
from acmenfs.appliance.tokens import ADMIN_TOKEN_SETTING, hash_secret, issue_admin_token, new_token
from acmenfs.appliance.volumes import (
    Undo,
    VolumeSpec,
    adopt_volume,
    change_owner,
    create_volume_in_share,
    grow_volume,
    parse_volume_spec,
    rename_volume,
    require_free_name,
)
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


class ApplianceService:
    """Shares, snapshots and clones on a data dir, published live into an ExportTable."""

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

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def backend(self) -> StorageBackend:
        if self._backend is None:
            raise RuntimeError("the appliance service is not open")
        return self._backend

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def open(self) -> list[str]:
        """Create the layout, open/migrate the store, reconcile, publish exports; returns the fix lines."""
        self.layout.create()
        self._backend = choose_backend(self.layout.root, self._requested_backend)
        lines = self._store.open()
        lines += reconcile(self._store, self.layout, self._backend)
        for record in self._store.list_shares():
            if record.state == STATE_AVAILABLE:
                self._publish_share(record)
        log.info("appliance open on %s (backend %s), %d reconcile lines", self.layout.root, self.backend_name,
                 len(lines))
        return lines

    def close(self) -> None:
        self._store.close()

    # -- shares ---------------------------------------------------------------------------

    def create_share(
        self, name: str, size: int, volume: dict | None = None, access: list[AccessRule] | None = None
    ) -> Share:
        """A new empty share (optionally holding a new ``size``-byte volume file)."""
        with self._operation("create_share"):
            validate_name(name)
            validate_size(size)
            spec = parse_volume_spec(volume)
            self._require_free_space("create share")
            record = ShareRecord(
                id=str(uuid.uuid4()), name=name, size=size, state=STATE_CREATING, created_at=utc_now_text(),
                volume_name=spec.name, volume_sparse=spec.sparse, volume_mode=spec.mode,
                access=self._rules_or_default(access),
            )

            def build(staging: Path) -> None:
                self.backend.create_share_dir(staging)
                if spec.name is not None:
                    create_volume_file(staging / spec.name, size, spec.sparse, spec.mode,
                                       spec.uid or 0, spec.gid or 0)
                fsync_path(staging)

            return self._create_share_from(record, build, "create share")

    def list_shares(self, name: str | None = None, export_path: str | None = None) -> list[Share]:
        records = self._store.list_shares(name)
        if export_path is not None:
            records = [record for record in records if share_export_path(record.id) == export_path]
        return [share_model(self.layout, record) for record in records]

    def get_share(self, share_id: str) -> Share:
        return share_model(self.layout, self._require_share(share_id))

    def delete_share(self, share_id: str, cascade: bool = False) -> None:
        """Delete a share; with ``cascade`` its snapshots too (else 409 share_has_snapshots)."""
        with self._operation("delete_share"), self._share_locked(share_id):
            record = self._require_share(share_id)
            if record.state == STATE_CREATING:
                raise Conflict(f"share {share_id} is still being created", "share_busy")
            snapshots = self._store.list_snapshots(share_id)
            if snapshots and not cascade:
                raise Conflict(
                    f"share {record.name!r} has {len(snapshots)} snapshots; delete them or pass cascade=true",
                    "share_has_snapshots",
                )
            with self._mutex:
                pinned = [s.name for s in snapshots if self._pinned_snapshots[s.id]]
                if pinned:
                    raise Conflict(f"snapshots {pinned} of share {record.name!r} are being cloned", "share_busy")
                self._store.mark_share_tree_deleting(share_id)
            for snapshot in snapshots:
                self._remove_snapshot_data_and_row(snapshot)
            unpublish(self.exports, share_export_path(share_id))
            self._discard(self.layout.share_dir(share_id), share_id)
            self._store.delete_share(share_id)
            self._forget_share_lock(share_id)
            log.info("deleted share %s (%s)%s", share_id, record.name,
                     f" with {len(snapshots)} snapshots" if snapshots else "")

    def extend_share(self, share_id: str, size: int) -> Share:
        """Grow a share's quota and its volume file to ``size`` (never shrinks; all or nothing)."""
        with self._operation("extend_share"), self._share_locked(share_id):
            validate_size(size)
            record = self._require_available_share(share_id)
            if size < record.size:
                raise InvalidRequest(
                    f"size {size} is smaller than the share's size {record.size}; shares never shrink", "invalid_size"
                )
            record = record.with_changes(size=size)
            with Undo() as undo:
                volume = self._volume_path(record)
                if volume is not None:
                    self._claim_space("extend share", grow_volume, volume, size, record.volume_sparse, undo)
                self._store.update_share(record)
            self._publish_share(record)
            return share_model(self.layout, record)

    def put_volume(
        self, share_id: str, name: str, size: int | None = None, sparse: bool = True, mode: str = "0660",
        uid: int | None = None, gid: int | None = None,
    ) -> Share:
        """Create the share's volume file, or rename it (and grow it) if one exists.

        A new file gets ``size`` (default: the share's size) and the owner
        ``uid``:``gid`` (default root). An existing file keeps its owner unless
        ``uid``/``gid`` are given. A ``size`` larger than the share grows the
        share too.
        """
        with self._operation("put_volume"), self._share_locked(share_id):
            validate_name(name, "volume name")
            if size is not None:
                validate_size(size)
            file_mode = parse_volume_mode(mode)
            uid, gid = validate_owner_id(uid, "volume uid"), validate_owner_id(gid, "volume gid")
            record = self._require_available_share(share_id)
            directory = self.layout.share_dir(share_id)
            current = self._volume_path(record)
            try:
                with Undo() as undo:
                    if current is not None:
                        # space first, the rename last: a refusal at any step changes nothing
                        if name != record.volume_name:
                            require_free_name(directory, name)
                        grow_volume(current, size or 0, record.volume_sparse, undo)
                        change_owner(current, uid, gid, undo)
                        rename_volume(directory, current.name, name, undo)
                        record = record.with_changes(volume_name=name, size=max(record.size, size or 0))
                    else:
                        require_free_name(directory, name)
                        spec = VolumeSpec(name, sparse, file_mode, uid, gid)
                        create_volume_in_share(directory, spec, size or record.size, undo)
                        record = record.with_changes(
                            volume_name=name, volume_sparse=sparse, volume_mode=file_mode,
                            size=max(record.size, size or 0),
                        )
                    self._store.update_share(record)
            except OSError as exc:
                raise error_for_os_error(exc, "put volume") from exc
            self._publish_share(record)
            return share_model(self.layout, record)

    # -- access -----------------------------------------------------------------------------

    def add_access(self, share_id: str, rule: AccessRule) -> Share:
        """Add ``rule``, or replace the rule for the same client in place."""
        with self._operation("add_access"), self._share_locked(share_id):
            if not isinstance(rule, AccessRule):
                raise InvalidRequest(f"an access rule is needed, not {rule!r}", "invalid_access")
            record = self._require_share(share_id)
            rules = list(record.access)
            positions = [index for index, existing in enumerate(rules) if existing.client == rule.client]
            if positions:
                rules[positions[0]] = rule
            else:
                rules.append(rule)
            return self._set_access(record, tuple(rules))

    def remove_access(self, share_id: str, client: str) -> Share:
        """Remove the rule for ``client`` (no error if there is none)."""
        with self._operation("remove_access"), self._share_locked(share_id):
            normalized = AccessRule(client).client
            record = self._require_share(share_id)
            return self._set_access(record, tuple(rule for rule in record.access if rule.client != normalized))

    def _set_access(self, record: ShareRecord, rules: tuple[AccessRule, ...]) -> Share:
        record = record.with_changes(access=rules)
        self._store.update_share(record)
        if record.state == STATE_AVAILABLE:
            self._publish_share(record)
        return share_model(self.layout, record)

    # -- snapshots --------------------------------------------------------------------------

    def create_snapshot(self, share_id: str, name: str) -> Snapshot:
        """A read-only point-in-time copy of the share, exported at /snapshots/<id>."""
        with self._operation("create_snapshot"), self._share_locked(share_id):
            validate_name(name)
            share = self._require_available_share(share_id)
            self._require_free_space("create snapshot")
            record = SnapshotRecord(
                id=str(uuid.uuid4()), share_id=share_id, name=name, size=share.size, state=STATE_CREATING,
                created_at=utc_now_text(), volume_name=share.volume_name, volume_sparse=share.volume_sparse,
                volume_mode=share.volume_mode,
            )
            self._store.insert_snapshot(record)
            final = self.layout.snapshot_dir(record.id)
            try:
                if self.backend.snapshot_in_place:
                    self.backend.snapshot(self.layout.share_dir(share_id), final)
                    fsync_path(final.parent)
                else:
                    staging = self.layout.staging_dir(record.id)
                    self.backend.snapshot(self.layout.share_dir(share_id), staging)
                    rename_durably(staging, final)
                self._store.set_snapshot_state(record.id, STATE_AVAILABLE)
            except BaseException as exc:
                self._roll_back_snapshot(record)
                if isinstance(exc, OSError):
                    raise error_for_os_error(exc, "create snapshot") from exc
                raise
            publish_snapshot(self.exports, self.layout, record, share.access)
            log.info("created snapshot %s (%s) of share %s", record.id, name, share_id)
            return snapshot_model(record)

    def list_snapshots(self, share_id: str) -> list[Snapshot]:
        self._require_share(share_id)
        return [snapshot_model(record) for record in self._store.list_snapshots(share_id)]

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return snapshot_model(self._require_snapshot(snapshot_id))

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._operation("delete_snapshot"):
            record = self._require_snapshot(snapshot_id)
            with self._share_locked(record.share_id):
                record = self._require_snapshot(snapshot_id)
                if record.state == STATE_CREATING:
                    raise Conflict(f"snapshot {snapshot_id} is still being created", "share_busy")
                with self._mutex:
                    if self._pinned_snapshots[snapshot_id]:
                        raise Conflict(f"snapshot {record.name!r} is being cloned or reverted to", "share_busy")
                    self._store.set_snapshot_state(snapshot_id, "deleting")
                self._remove_snapshot_data_and_row(record)
                log.info("deleted snapshot %s (%s) of share %s", snapshot_id, record.name, record.share_id)

    def clone_snapshot(
        self,
        snapshot_id: str,
        name: str,
        size: int | None = None,
        volume_name: str | None = None,
        access: list[AccessRule] | None = None,
        progress: Callable[[int, int], None] | None = None,
        volume_uid: int | None = None,
        volume_gid: int | None = None,
    ) -> Share:
        """A new share with the snapshot's content; its volume file renamed/grown/chowned on request.

        The volume file keeps the snapshot's owner unless ``volume_uid`` /
        ``volume_gid`` are given (chowned in staging, before the rename into place).
        """
        with self._operation("clone_snapshot"):
            validate_name(name)
            if size is not None:
                validate_size(size)
            if volume_name is not None:
                validate_name(volume_name, "volume_name")
            volume_uid = validate_owner_id(volume_uid, "volume_uid")
            volume_gid = validate_owner_id(volume_gid, "volume_gid")
            with self._pinned(snapshot_id) as snapshot:
                if size is not None and size < snapshot.size:
                    raise InvalidRequest(
                        f"size {size} is smaller than the snapshot's size {snapshot.size}", "invalid_size"
                    )
                if volume_name is not None and snapshot.volume_name is None:
                    raise InvalidRequest("volume_name given but the snapshot holds no volume file", "invalid_request")
                if (volume_uid is not None or volume_gid is not None) and snapshot.volume_name is None:
                    raise InvalidRequest(
                        "volume_uid/volume_gid given but the snapshot holds no volume file", "invalid_request"
                    )
                new_size = size or snapshot.size
                self._require_free_space("clone snapshot")
                record = ShareRecord(
                    id=str(uuid.uuid4()), name=name, size=new_size, state=STATE_CREATING, created_at=utc_now_text(),
                    origin_snapshot_id=snapshot_id, volume_name=volume_name or snapshot.volume_name,
                    volume_sparse=snapshot.volume_sparse, volume_mode=snapshot.volume_mode,
                    access=self._rules_or_default(access),
                )

                def build(staging: Path) -> None:
                    self.backend.clone(self.layout.snapshot_dir(snapshot_id), staging, progress)
                    adopt_volume(staging, snapshot.volume_name, record.volume_name, new_size,
                                       snapshot.volume_sparse)
                    volume_path = staging / record.volume_name if record.volume_name else None
                    if volume_path is not None and volume_path.exists():
                        set_volume_owner(volume_path, volume_uid, volume_gid)

                return self._create_share_from(record, build, "clone snapshot")

    def revert_share(self, share_id: str, snapshot_id: str) -> Share:
        """Replace the share's content with the snapshot's (one atomic directory swap).

        The volume file keeps the share's size (grown if the snapshot's is
        smaller) and takes the snapshot's name. The volume name in the row is
        updated just after the swap: a crash exactly between the two leaves the
        old name in the row, which only matters if the name changed since the
        snapshot (then ``volume`` reads null until ``put_volume`` renames it).
        """
        with self._operation("revert_share"), self._share_locked(share_id):
            share = self._require_available_share(share_id)
            with self._pinned(snapshot_id, missing_code="snapshot_not_found") as snapshot:
                if snapshot.share_id != share_id:
                    raise InvalidRequest(f"snapshot {snapshot_id} belongs to another share", "invalid_request")
                staging = self.layout.staging_dir(str(uuid.uuid4()))
                share_dir = self.layout.share_dir(share_id)
                try:
                    self.backend.clone(self.layout.snapshot_dir(snapshot_id), staging)
                    adopt_volume(staging, snapshot.volume_name, snapshot.volume_name, share.size,
                                       snapshot.volume_sparse)
                    rename_exchange(staging, share_dir)
                except OSError as exc:
                    self._discard(staging, share_id)
                    raise error_for_os_error(exc, "revert share") from exc
                share = share.with_changes(
                    volume_name=snapshot.volume_name, volume_sparse=snapshot.volume_sparse,
                    volume_mode=snapshot.volume_mode,
                )
                try:
                    self._store.update_share(share)
                except BaseException:
                    rename_exchange(staging, share_dir)  # the previous content back in place
                    self._discard(staging, share_id)
                    raise
                self._discard(staging, share_id)  # now holds the share's previous content
            self._publish_share(share)
            log.info("reverted share %s to snapshot %s (%s)", share_id, snapshot_id, snapshot.name)
            return share_model(self.layout, share)

    # -- pool, tokens, metrics --------------------------------------------------------------

    def pool_stats(self) -> PoolStats:
        fs = os.statvfs(self.layout.root)
        provisioned, share_count, snapshot_count = self._store.provisioned_totals()
        return PoolStats(
            backend=self.backend_name,
            total_bytes=fs.f_blocks * fs.f_frsize,
            free_bytes=fs.f_bavail * fs.f_frsize,
            used_bytes=(fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            provisioned_bytes=provisioned,
            share_count=share_count,
            snapshot_count=snapshot_count,
        )

    def create_token(self, name: str) -> tuple[Token, str]:
        """A new API token; the secret is returned once and only its sha256 is kept."""
        with self._operation("create_token"):
            return new_token(self._store, name)

    def list_tokens(self) -> list[Token]:
        return [Token(r.id, r.name, r.created_at) for r in self._store.list_tokens()]

    def revoke_token(self, token_id: str) -> None:
        with self._operation("revoke_token"):
            if not self._store.delete_token(token_id):
                raise NotFound(f"no token {token_id}")

    def verify_token(self, secret: str) -> Token | None:
        if not isinstance(secret, str) or not secret:
            return None
        record = self._store.find_token(hash_secret(secret))
        return Token(record.id, record.name, record.created_at) if record else None

    def ensure_admin_token(self) -> str | None:
        """On the first start only: create token 'admin', write it to <data>/admin.token (0600)."""
        if self._store.get_setting(ADMIN_TOKEN_SETTING) is not None:
            return None
        return issue_admin_token(self._store, self.layout)

    def operation_counts(self) -> dict:
        """``{"operations": {op: count}, "errors": {op: {code: count}}}`` since start."""
        with self._mutex:
            return {
                "operations": dict(self._operations),
                "errors": {operation: dict(codes) for operation, codes in self._errors.items()},
            }

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
