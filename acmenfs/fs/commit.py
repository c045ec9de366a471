"""Group commit: one flusher thread makes pending unstable writes durable.

Owns ``GroupCommitter``: writers ``mark_dirty(file)`` after an UNSTABLE write;
a COMMIT takes a ``ticket()`` and waits until ``durable`` (a CounterWait)
reaches it.  The flusher wakes, takes every dirty file and the highest ticket
handed out so far, fsyncs each file once, then advances ``durable`` to that
ticket, so any number of concurrent COMMITs cost one round of fsyncs.  The write
verifier lives here too: it changes on every start and whenever an fsync fails
(clients then resend their unstable data, as with Linux knfsd).  It knows
nothing of NFS encoding and never runs on an event loop.
"""

from __future__ import annotations

import logging
import os
import threading

from acmenfs.sync.counterwait import CounterWait

log = logging.getLogger("acmenfs.fs.commit")


class GroupCommitter:
    def __init__(self) -> None:
        self.verifier = os.urandom(8)
        self.durable = CounterWait(0)
        self._lock = threading.Lock()
        self._dirty: dict[int, object] = {}
        self._issued = 0
        self._flushing = False
        self._wake = threading.Event()
        self._stopping = False
        self.flush_rounds = 0
        self._thread = threading.Thread(target=self._run, name="acmenfs-commit", daemon=True)
        self._thread.start()

    def mark_dirty(self, fileobj) -> None:
        """Remember a file (anything with ``fileno()``) with unstable data; keeps it referenced."""
        with self._lock:
            self._dirty[id(fileobj)] = fileobj

    def ticket(self) -> int | None:
        """A durable-sequence value to wait for, or None when nothing is pending."""
        with self._lock:
            if not self._dirty and not self._flushing:
                return None
            self._issued += 1
            ticket = self._issued
        self._wake.set()
        return ticket

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch = list(self._dirty.values())
                self._dirty.clear()
                target = self._issued
                self._flushing = True
            self._flush(batch)
            with self._lock:
                self._flushing = False
            self.durable.update(max(target, self.durable.value))
            self.flush_rounds += 1
            if self._stopping:
                return

    def _flush(self, batch: list) -> None:
        for fileobj in batch:
            try:
                os.fsync(fileobj.fileno())
            except OSError as exc:
                log.error("fsync failed, changing the write verifier: %s", exc)
                self.verifier = os.urandom(8)
