"""Adding up the statistics of several workers into the shape of ``NfsServer.stats()``.

Owns ``sum_stats``: per-procedure counts, latency sums and errors summed by
key; byte counters summed; the DRC and busy-poll blocks summed field by field,
except settings (``max_entries`` is summed: it is the total capacity;
``lifetime`` and ``window_seconds`` are taken as they are) and means (averaged
over the workers that report one).  ``counters_only`` keeps what a dead worker had
counted (the last figures the supervisor read from it) without its gauges, so the
sums in /metrics do not go backwards when a worker is restarted.  It does no I/O.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Iterable, Mapping

_SETTINGS = frozenset({"lifetime", "window_seconds"})
_MEANS = frozenset({"mean_cached_lifetime"})
# fields that describe the present, not a count since start: a dead worker has none
_GAUGES = frozenset({"entries", "in_progress", "max_entries", "buckets", "lifetime", "mean_cached_lifetime",
                     "window_seconds", "connections"})


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value if isinstance(value, Mapping) else {}


def _sum_keyed(parts: Iterable[Mapping], kind=int) -> dict:
    total: dict = defaultdict(kind)
    for part in parts:
        for key, value in part.items():
            total[key] += value
    return dict(total)


def _sum_fields(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for field in {name for part in parts for name in part}:
        values = [part[field] for part in parts if field in part]
        if field in _SETTINGS:
            total[field] = values[0]
        elif field in _MEANS:
            nonzero = [value for value in values if value]
            total[field] = sum(nonzero) / len(nonzero) if nonzero else 0.0
        else:
            total[field] = sum(values)
    return total


def sum_stats(per_worker: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``NfsServer.stats()``-shaped dict for all workers."""
    return {
        "calls": _sum_keyed(stats.get("calls", {}) for stats in per_worker),
        "latency_seconds_sum": _sum_keyed((stats.get("latency_seconds_sum", {}) for stats in per_worker), float),
        "errors": _sum_keyed(stats.get("errors", {}) for stats in per_worker),
        "bytes_read": sum(stats.get("bytes_read", 0) for stats in per_worker),
        "bytes_written": sum(stats.get("bytes_written", 0) for stats in per_worker),
        "drc": _sum_fields([_as_mapping(stats.get("drc")) for stats in per_worker]),
        "busy_poll": _sum_fields([_as_mapping(stats.get("busy_poll")) for stats in per_worker]),
    }


def counters_only(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` of a worker that is gone: its counters, without its gauges."""
    kept = dict(stats)
    for block in ("drc", "busy_poll"):
        kept[block] = {field: value for field, value in _as_mapping(stats.get(block)).items()
                       if field not in _GAUGES}
    kept.pop("connections", None)
    return kept
