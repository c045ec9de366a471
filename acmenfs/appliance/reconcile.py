"""Reconcile: bring the data dir and the store back into agreement after a crash.

Owns the recovery rules, run once by ``ApplianceService.open()`` before anything
is exported and before any request is served. It must not run concurrently with
service operations, and it never invents data: it only finishes or undoes what
a dead process left half-done, and reports every fix as a line (also logged).

Rules (every multi-step operation writes its row state before touching disk):
- ``staging/*`` and ``trash/*``: work in progress or half-deleted data -> removed.
- rows ``creating`` (share or snapshot): the creation never completed -> its data
  (if it was already renamed into place) and the row are removed (rolled back).
- rows ``deleting``: the deletion was promised -> data and row are removed
  (a share's snapshots first).
- rows ``available`` whose directory vanished -> marked ``error`` (kept, so an
  admin sees what was lost; deleting an ``error`` row works).
- directories under ``shares/`` or ``snapshots/`` with no row -> removed.
- hidden ``.acmenfs-partial-*`` volume files left in a share by an unfinished
  ``PUT /volume`` -> removed (volume names never start with ".").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from acmenfs.appliance.models import STATE_AVAILABLE, STATE_CREATING, STATE_DELETING, STATE_ERROR
from acmenfs.appliance.storage import PARTIAL_VOLUME_PREFIX, DataLayout, StorageBackend
from acmenfs.appliance.store import Store

log = logging.getLogger("acmenfs.appliance.reconcile")


class Reconciler:
    """One reconcile pass over a data dir; ``run()`` returns the fixes made."""

    def __init__(self, store: Store, layout: DataLayout, backend: StorageBackend) -> None:
        self.store = store
        self.layout = layout
        self.backend = backend
        self.fixes: list[str] = []

    def run(self) -> list[str]:
        self._empty_directory(self.layout.staging, "unfinished work")
        self._empty_directory(self.layout.trash, "half-deleted data")
        self._settle_snapshots()
        self._settle_shares()
        self._mark_missing_data()
        self._remove_orphans(self.layout.snapshots, {s.id for s in self.store.list_snapshots()}, "snapshot")
        self._remove_orphans(self.layout.shares, {s.id for s in self.store.list_shares()}, "share")
        self._remove_partial_volume_files()
        return self.fixes

    def _fix(self, message: str, *arguments: object) -> None:
        text = message % arguments if arguments else message
        log.warning("%s", text)  # the logger's name already says "reconcile"
        self.fixes.append("reconcile: " + text)

    def _empty_directory(self, directory: Path, what: str) -> None:
        for entry in sorted(os.listdir(directory)):
            self.backend.remove(directory / entry)
            self._fix("removed %s %s", what, directory / entry)

    def _settle_snapshots(self) -> None:
        for snapshot in self.store.list_snapshots():
            if snapshot.state not in (STATE_CREATING, STATE_DELETING):
                continue
            self.backend.remove(self.layout.snapshot_dir(snapshot.id))
            self.store.delete_snapshot(snapshot.id)
            verb = "rolled back unfinished" if snapshot.state == STATE_CREATING else "finished deleting"
            self._fix("%s snapshot %s (%s of share %s)", verb, snapshot.id, snapshot.name, snapshot.share_id)

    def _settle_shares(self) -> None:
        for share in self.store.list_shares():
            if share.state not in (STATE_CREATING, STATE_DELETING):
                continue
            for snapshot in self.store.list_snapshots(share.id):
                self.backend.remove(self.layout.snapshot_dir(snapshot.id))
                self.store.delete_snapshot(snapshot.id)
                self._fix("removed snapshot %s (%s) of share %s being removed", snapshot.id, snapshot.name, share.id)
            self.backend.remove(self.layout.share_dir(share.id))
            self.store.delete_share(share.id)
            verb = "rolled back unfinished" if share.state == STATE_CREATING else "finished deleting"
            self._fix("%s share %s (%s)", verb, share.id, share.name)

    def _mark_missing_data(self) -> None:
        for share in self.store.list_shares():
            if share.state == STATE_AVAILABLE and not self.layout.share_dir(share.id).is_dir():
                self.store.set_share_state(share.id, STATE_ERROR)
                self._fix("share %s (%s) has no data directory: marked error", share.id, share.name)
        for snapshot in self.store.list_snapshots():
            if snapshot.state == STATE_AVAILABLE and not self.layout.snapshot_dir(snapshot.id).is_dir():
                self.store.set_snapshot_state(snapshot.id, STATE_ERROR)
                self._fix("snapshot %s (%s) has no data directory: marked error", snapshot.id, snapshot.name)

    def _remove_orphans(self, directory: Path, known_ids: set[str], kind: str) -> None:
        for entry in sorted(os.listdir(directory)):
            if entry not in known_ids:
                self.backend.remove(directory / entry)
                self._fix("removed orphan %s directory %s", kind, directory / entry)

    def _remove_partial_volume_files(self) -> None:
        for share in self.store.list_shares():
            directory = self.layout.share_dir(share.id)
            if share.state != STATE_AVAILABLE or not directory.is_dir():
                continue
            for entry in sorted(os.listdir(directory)):
                if entry.startswith(PARTIAL_VOLUME_PREFIX):
                    os.unlink(directory / entry)
                    self._fix("removed unfinished volume file %s", directory / entry)


def reconcile(store: Store, layout: DataLayout, backend: StorageBackend) -> list[str]:
    """Run one reconcile pass; returns (and logs) a line per fix."""
    return Reconciler(store, layout, backend).run()
