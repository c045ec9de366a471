"""Grace period and on-disk client records of NFSv4 (RFC 7530 §9.6.2, §9.14; RFC 8881 §8.4.2.1).

Owns two things:

* ``ClientRecords``: one small file per client that holds (or held) open or lock
  state, under ``<state dir>/nfs4/``, named by a digest of the client's owner
  id (``nfs_client_id4.id`` / ``co_ownerid``, the only identity that survives a
  restart: clientids do not) and containing that id.  Each write is durable
  (file fsync'd, renamed into place, directory fsync'd), each removal too, by one
  writer thread that takes the changes in order: ``add`` waits for its record to be
  on disk (the op that gave the state replies after that), ``remove`` does not wait.
  The records found at start are the clients allowed to reclaim.
* ``Grace``: the grace period after start.  It ends when its time runs out, or
  earlier once every client allowed to reclaim has said RECLAIM_COMPLETE (or was
  seen to have nothing to reclaim), or when no client may reclaim at all.  At its
  end the records of previous clients that never came back are removed.

It does not decide what a reclaim may take (``StateManager`` does) and has no
thread or timer: the clock is injected and read on each question.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Callable

log = logging.getLogger("acmenfs.nfs4")
RECORD_SUFFIX = ".client"
BOOTS_FILE = "instances"          # boot ids of earlier server instances (STALE_STATEID detection)
MAX_BOOTS = 32


def record_name(owner: bytes) -> str:
    return hashlib.sha256(owner).hexdigest()[:32] + RECORD_SUFFIX


class ClientRecords:
    """Durable set of client owner ids, one file each."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._lock = threading.Lock()
        self._queue: deque = deque()        # record changes for the writer thread, in order
        self._writing = False
        self._pending: dict[bytes, threading.Event] = {}   # adds not yet on disk
        self.current: set[bytes] = set()
        self.previous: frozenset[bytes] = frozenset()
        self.previous_boots: frozenset[int] = frozenset()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            found = set()
            for path in self.directory.iterdir():
                if path.name.endswith(RECORD_SUFFIX):
                    try:
                        found.add(path.read_bytes())
                    except OSError:
                        continue
                elif path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
            self.previous = frozenset(found)
            self.current = set(found)
            try:
                words = (self.directory / BOOTS_FILE).read_text().split()
                self.previous_boots = frozenset(int(word) for word in words)
            except (OSError, ValueError):
                self.previous_boots = frozenset()

    def note_boot(self, boot: int) -> None:
        """Remember this instance's boot id (``previous_boots`` keeps the earlier ones)."""
        self.previous_boots = self.previous_boots - {boot}
        if self.directory is not None:
            boots = [*sorted(self.previous_boots), boot][-MAX_BOOTS:]
            try:
                self._write(self.directory / BOOTS_FILE, " ".join(map(str, boots)).encode())
            except OSError as exc:  # a full pool must not stop the server: only STALE vs BAD is lost
                log.warning("NFSv4: cannot record this boot in %s (%s): stateids of this instance "
                            "will read as BAD, not STALE, after the next restart", self.directory, exc)

    def _write(self, path: Path, data: bytes) -> None:
        from acmenfs.fs.durable import write_atomically
        write_atomically(path, data, mode=0o600)   # temp beside, fsync, rename over, fsync the dir

    def add(self, owner: bytes) -> None:
        """Record ``owner``; returns once the record is on disk (call it outside other locks)."""
        with self._lock:
            if owner in self.current and owner not in self._pending:
                return
            self.current.add(owner)
            done = self._pending.get(owner)
            if done is None:
                if self.directory is None:
                    return
                done = self._pending[owner] = threading.Event()
                self._submit(("add", owner, done))
        done.wait()

    def remove(self, owner: bytes) -> None:
        """Forget ``owner``; the unlink is done (and fsync'd) by the writer thread, in order,
        without making the caller wait: callers may hold the state lock or run on the event loop."""
        with self._lock:
            if owner not in self.current:
                return
            self.current.discard(owner)
            if self.directory is not None:
                self._submit(("remove", owner, None))

    def flush(self) -> None:
        """Wait until every queued record change is on disk."""
        if self.directory is None:
            return
        done = threading.Event()
        with self._lock:
            self._submit(("flush", b"", done))
        done.wait()

    def _submit(self, item) -> None:
        self._queue.append(item)
        if not self._writing:
            self._writing = True
            threading.Thread(target=self._writer, name="nfs4-client-records", daemon=True).start()

    def _writer(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._writing = False
                    return
                kind, owner, done = self._queue.popleft()
            try:
                if kind == "add":
                    self._write(self.directory / record_name(owner), owner)
                elif kind == "remove":
                    (self.directory / record_name(owner)).unlink(missing_ok=True)
                    self._sync_dir()
            except OSError:
                log.exception("NFSv4 client record %s of %r failed", kind, owner)
            finally:
                if done is not None:
                    with self._lock:
                        if self._pending.get(owner) is done:
                            del self._pending[owner]
                    done.set()

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Grace:
    """The grace period: who may still reclaim, and until when."""

    def __init__(self, records: ClientRecords, seconds: float, clock: Callable[[], float]) -> None:
        self.records = records
        self.clock = clock
        self.ends_at = clock() + seconds
        self.pending: set[bytes] = set(records.previous)   # previous clients not yet done
        self.reclaimed: set[bytes] = set()                  # previous clients that came back
        self.over = not self.pending or seconds <= 0
        if self.over:
            self._finish()

    def active(self) -> bool:
        if not self.over and self.clock() >= self.ends_at:
            self.over = True
            self._finish()
        return not self.over

    def may_reclaim(self, owner: bytes) -> bool:
        """In grace, and ``owner`` held state before the restart and has not finished."""
        return self.active() and owner in self.pending

    def came_back(self, owner: bytes) -> None:
        if owner in self.pending:
            self.reclaimed.add(owner)

    def complete(self, owner: bytes) -> None:
        """This client reclaimed all it will (RECLAIM_COMPLETE, or it was destroyed)."""
        self.pending.discard(owner)
        if not self.over and not self.pending:
            self.over = True
            self._finish()

    def _finish(self) -> None:
        # previous clients that never came back lose their record: they can no
        # longer reclaim after a further restart.
        for owner in self.records.previous - self.reclaimed:
            self.records.remove(owner)
        self.pending.clear()
