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

Split by concern: this module holds ``ApplianceService`` with lifecycle, shares,
access lists, pool stats, tokens and metrics; service_snapshots.py the snapshot,
clone and revert operations; service_base.py the shared state, locks and internals.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from acmenfs.appliance.errors import Conflict, InvalidRequest, NotFound, error_for_os_error
from acmenfs.appliance.models import (
    STATE_AVAILABLE,
    STATE_CREATING,
    AccessRule,
    PoolStats,
    Share,
    Token,
    parse_volume_mode,
    utc_now_text,
    validate_name,
    validate_owner_id,
    validate_size,
)
from acmenfs.appliance.publishing import share_export_path, share_model, unpublish
from acmenfs.appliance.reconcile import reconcile
from acmenfs.appliance.storage import choose_backend, create_volume_file, fsync_path
from acmenfs.appliance.store import ShareRecord
from acmenfs.appliance.tokens import ADMIN_TOKEN_SETTING, hash_secret, issue_admin_token, new_token
from acmenfs.appliance.volumes import (
    Undo,
    VolumeSpec,
    change_owner,
    create_volume_in_share,
    grow_volume,
    parse_volume_spec,
    rename_volume,
    require_free_name,
)
from acmenfs.appliance.service_snapshots import SnapshotOperations

log = logging.getLogger("acmenfs.appliance.service")


class ApplianceService(SnapshotOperations):
    """Shares, snapshots and clones on a data dir, published live into an ExportTable."""

    # -- lifecycle ------------------------------------------------------------------------

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
