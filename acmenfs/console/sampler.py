"""The dashboard's NFS statistics: periodic samples of ``nfs_stats()`` and rates over them.

Owns ``StatsSampler`` (a daemon thread that appends a sample every few seconds to
a small in-memory ring, started on the first console request) and the pure
functions that turn samples into what the dashboard shows: calls/s and bytes/s
per interval, calls/s and mean latency per procedure over the window, the
duplicate request cache's hit rate, evictions and in-progress entries, and the
number of NFS workers up. It reads counters only; it must not change them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from acmenfs.appliance.metrics import _as_mapping  # the DRC stats object as a mapping, as /metrics reads it

SAMPLE_INTERVAL = 5.0
RING_SIZE = 72  # 6 minutes at 5 s


@dataclass(frozen=True)
class Sample:
    """Counters at one instant (monotonic ``at``, wall-clock ``wall``)."""

    at: float
    wall: float
    calls: dict[str, int]
    latency: dict[str, float]
    bytes_read: int
    bytes_written: int
    drc: dict[str, Any]
    workers: Any


def _procedure_name(key: Any) -> str:
    if isinstance(key, tuple):
        return " ".join(str(part) for part in key[:2])
    return str(key)


def take_sample(stats: Mapping[str, Any], at: float | None = None) -> Sample:
    """A ``Sample`` from one ``NfsServer.stats()`` answer."""
    return Sample(
        at=time.monotonic() if at is None else at,
        wall=time.time(),
        calls={_procedure_name(k): int(v) for k, v in stats.get("calls", {}).items()},
        latency={_procedure_name(k): float(v) for k, v in stats.get("latency_seconds_sum", {}).items()},
        bytes_read=int(stats.get("bytes_read", 0)),
        bytes_written=int(stats.get("bytes_written", 0)),
        drc=dict(_as_mapping(stats.get("drc"))),
        workers=stats.get("workers"),
    )


def workers_up(workers: Any) -> dict[str, int | None]:
    """``{"up", "configured", "restarts"}`` from the ``workers`` entry a multi-process
    supervisor adds to the stats (``{"workers": N, "up": n, "restarts": r, ...}``, or a
    plain count); a single in-process server has none: one worker up."""
    if workers is None or isinstance(workers, bool):
        return {"up": 1, "configured": None, "restarts": None}
    if isinstance(workers, int):
        return {"up": workers, "configured": None, "restarts": None}
    if isinstance(workers, Mapping):
        def number(key: str) -> int | None:
            value = workers.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        up = next((number(k) for k in ("up", "alive", "running") if number(k) is not None), None)
        configured = number("workers") if number("workers") is not None else number("configured")
        return {"up": up if up is not None else (configured or 1), "configured": configured,
                "restarts": number("restarts")}
    if isinstance(workers, (list, tuple)):
        up = sum(1 for worker in workers if not isinstance(worker, Mapping) or worker.get("alive", True))
        return {"up": up, "configured": len(workers), "restarts": None}
    return {"up": 1, "configured": None, "restarts": None}


def _delta(new: float, old: float) -> float:
    return max(0.0, new - old)  # a restarted worker resets its counters


def interval_series(samples: list[Sample]) -> list[dict[str, float]]:
    """Per interval between consecutive samples: calls/s, read and written bytes/s."""
    series = []
    for old, new in zip(samples, samples[1:]):
        seconds = new.at - old.at
        if seconds <= 0:
            continue
        calls = sum(_delta(new.calls.get(k, 0), old.calls.get(k, 0)) for k in new.calls)
        series.append({
            "wall": new.wall,
            "calls_per_s": calls / seconds,
            "read_bps": _delta(new.bytes_read, old.bytes_read) / seconds,
            "write_bps": _delta(new.bytes_written, old.bytes_written) / seconds,
        })
    return series


def procedure_rates(first: Sample, last: Sample) -> list[dict[str, Any]]:
    """Per procedure over [first, last]: calls/s, mean latency (ms) and total calls; busiest first."""
    seconds = last.at - first.at
    rows = []
    for name, total in last.calls.items():
        calls = _delta(total, first.calls.get(name, 0))
        latency = _delta(last.latency.get(name, 0.0), first.latency.get(name, 0.0))
        rows.append({
            "procedure": name,
            "calls_per_s": calls / seconds if seconds > 0 else 0.0,
            "latency_ms": latency * 1000 / calls if calls else None,
            "total": total,
        })
    rows.sort(key=lambda row: (-row["calls_per_s"], -row["total"], row["procedure"]))
    return rows


def drc_summary(first: Sample, last: Sample) -> dict[str, Any]:
    """Hit rate (over the window and since start), evictions and in-progress entries."""
    drc, old = last.drc, first.drc
    checks, hits = drc.get("checks", 0), drc.get("hits", 0) + drc.get("in_progress_hits", 0)
    window_checks = _delta(checks, old.get("checks", 0))
    window_hits = _delta(hits, old.get("hits", 0) + old.get("in_progress_hits", 0))
    return {
        "known": bool(drc),
        "hit_rate": hits / checks if checks else None,
        "window_hit_rate": window_hits / window_checks if window_checks else None,
        "hits": hits,
        "checks": checks,
        "evictions": drc.get("replacements", 0),
        "expired": drc.get("walk_frees", 0) + drc.get("gc_frees", 0),
        "overflows": drc.get("overflows", 0),
        "in_progress": drc.get("in_progress", 0),
        "entries": drc.get("entries", 0),
        "max_entries": drc.get("max_entries", 0),
    }


class StatsSampler:
    """Samples ``nfs_stats`` every ``interval`` seconds into a ring of ``size`` samples."""

    def __init__(self, nfs_stats: Callable[[], Mapping[str, Any]] | None,
                 interval: float = SAMPLE_INTERVAL, size: int = RING_SIZE) -> None:
        self.nfs_stats = nfs_stats
        self.interval = interval
        self._ring: deque[Sample] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.nfs_stats is not None

    def ensure_started(self) -> None:
        """Start the sampling thread once (on the first console request)."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="console-stats", daemon=True)
        self.sample_now()
        self._thread.start()

    def sample_now(self) -> Sample | None:
        if not self.enabled:
            return None
        sample = take_sample(self.nfs_stats())
        with self._lock:
            self._ring.append(sample)
        return sample

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._ring)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_now()
            except Exception:  # a broken stats source must not kill the sampler
                time.sleep(self.interval)

    def summary(self) -> dict[str, Any]:
        """Everything the dashboard's live section shows (latest sample taken now)."""
        if not self.enabled:
            return {"enabled": False}
        samples = self.samples()
        current = take_sample(self.nfs_stats())
        if not samples or current.at - samples[-1].at > 0.5:
            samples.append(current)
        first, last = samples[0], samples[-1]
        return {
            "enabled": True,
            "window_seconds": last.at - first.at,
            "series": interval_series(samples),
            "procedures": procedure_rates(first, last),
            "drc": drc_summary(first, last),
            "workers": workers_up(last.workers),
            "bytes_read": last.bytes_read,
            "bytes_written": last.bytes_written,
        }
