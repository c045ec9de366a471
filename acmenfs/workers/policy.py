"""How many worker processes a configuration may run.

Owns ``effective_workers``: ``--workers`` defaults to the number of CPUs; 1
means today's in-process server.  Several processes need kernel file handles
(root): without them handles come from the SQLite path table
(``acmenfs.fs.pathtable``), whose ``handle_for`` is a SELECT then an INSERT
guarded only by a per-process lock, so two processes looking up one new name
race into a UNIQUE-constraint failure (SERVERFAULT).  Then an explicit
``--workers N`` (N > 1) is refused with a message, and the default falls back
to 1 worker with a log line.  It starts nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from acmenfs.fs import kernel_handles

log = logging.getLogger("acmenfs.workers")


class WorkersRefused(ValueError):
    """``--workers N`` cannot be honoured; the message says why and what to do."""


def default_workers() -> int:
    return os.cpu_count() or 1


def effective_workers(requested: int | None, state_dir: str | Path) -> int:
    """The number of workers to run; ``requested`` None means the default (CPU count)."""
    if requested is not None and requested < 1:
        raise WorkersRefused(f"--workers must be 1 or more, not {requested}")
    wanted = default_workers() if requested is None else requested
    if wanted == 1:
        return 1
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    if kernel_handles.available(str(state_dir)):
        return wanted
    if requested is not None:
        raise WorkersRefused(
            f"--workers {requested} needs kernel file handles (run as root, or with CAP_DAC_READ_SEARCH): "
            "without them file handles come from a path table that several processes cannot share "
            "safely; use --workers 1")
    log.info("running 1 worker, not %d: without kernel file handles (not root) the handle path table "
             "cannot be shared by several processes", wanted)
    return 1
