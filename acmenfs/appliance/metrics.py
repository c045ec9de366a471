"""Prometheus metrics of the appliance, read live at scrape time.

Owns ``HttpRequestStats`` (the REST layer's request counters), the
``ApplianceCollector`` that turns live counters (NFS server stats, duplicate
request cache stats, management operation counts, pool capacity, HTTP requests)
into metric families, and ``build_registry``/``render_metrics``. Each app gets
its own ``CollectorRegistry``; nothing is registered in prometheus-client's
global registry. It must not change any state: a scrape only reads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from acmenfs import __version__

logger = logging.getLogger(__name__)

PROGRAM_NAMES = {100003: "nfs", 100005: "mount", 100000: "portmap"}

# DrcStats fields -> (metric name suffix, kind, help). Counters grow for the
# server's lifetime; gauges are current values or configuration.
DRC_FIELDS: dict[str, tuple[str, str, str]] = {
    "checks": ("checks_total", "counter", "Requests looked up in the duplicate request cache."),
    "hits": ("hits_total", "counter", "Retransmissions answered with the cached reply."),
    "in_progress_hits": (
        "in_progress_hits_total", "counter",
        "Retransmissions dropped because the original call was still running.",
    ),
    "payload_misses": (
        "payload_misses_total", "counter",
        "Lookups whose xid matched but whose arguments (length/checksum) did not.",
    ),
    "overflows": ("overflows_total", "counter", "Replies not cached because the cache was full."),
    "replacements": ("replacements_total", "counter", "Done entries freed to make room."),
    "allocation_failures": ("allocation_failures_total", "counter", "Entries that could not be allocated."),
    "walk_frees": ("walk_frees_total", "counter", "Expired entries freed by a bucket walk."),
    "gc_frees": ("gc_frees_total", "counter", "Expired entries freed by garbage collection."),
    "entries": ("entries", "gauge", "Entries in the cache now."),
    "in_progress": ("in_progress", "gauge", "Calls in progress (entries without a reply yet)."),
    "mean_cached_lifetime": (
        "mean_lifetime_seconds", "gauge", "Mean age of done entries when they left the cache.",
    ),
    "max_entries": ("max_entries", "gauge", "Configured cache capacity."),
    "lifetime": ("lifetime_seconds", "gauge", "Configured lifetime of a cached reply."),
    "buckets": ("buckets", "gauge", "Hash buckets."),
}

# NfsServer.stats()["busy_poll"] field -> (metric suffix, kind, help); see acmenfs.oncrpc.busypoll.
BUSY_POLL_FIELDS: dict[str, tuple[str, str, str]] = {
    "windows": ("windows_total", "counter", "Times the event loop stayed awake after NFS work."),
    "hits": ("hits_total", "counter", "Receives handled while awake, i.e. without a process wake-up."),
    "misses": ("misses_total", "counter", "Awake windows that ended with nothing received."),
    "skipped": ("skipped_total", "counter", "Windows not opened because polling backed off after misses."),
    "seconds": ("seconds_total", "counter", "Time spent awake polling."),
    "window_seconds": ("window_seconds", "gauge", "Configured polling window (0 = off)."),
}

POOL_FIELDS: dict[str, str] = {
    "total_bytes": "Size of the pool's file system.",
    "free_bytes": "Free space in the pool's file system.",
    "used_bytes": "Used space in the pool's file system.",
    "provisioned_bytes": "Sum of the sizes (quotas) of all shares.",
    "share_count": "Shares in the pool.",
    "snapshot_count": "Snapshots in the pool.",
}


# Label values that come from a request are mapped into known sets, so no caller (signed in
# or not) can add label values: made-up methods count as "other", and the route is a route
# template of the app or "unmatched" (the REST layer's choice; never the raw path).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_LABEL = "other"


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else OTHER_LABEL


def status_label(status: int) -> str:
    return str(status) if isinstance(status, int) and 100 <= status <= 599 else OTHER_LABEL


class HttpRequestStats:
    """Thread-safe counters of REST requests by (method, route template, status), each label bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method_label(method), route, status_label(status))
        with self._lock:
            entry = self._requests.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def snapshot(self) -> dict[tuple[str, str, str], tuple[int, float]]:
        with self._lock:
            return {key: (int(count), total) for key, (count, total) in self._requests.items()}


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return value
    return {}


def _call_labels(key: Any) -> list[str]:
    """(program, procedure) label values for a stats key such as ("NFS3", "READ").

    A numeric program is named (100003 -> "nfs"); a name is kept as the server gives it.
    """
    if isinstance(key, tuple) and len(key) >= 2:
        program, procedure = key[0], key[1]
    else:
        program, procedure = "", key
    program_name = PROGRAM_NAMES.get(program, str(program)) if isinstance(program, int) else str(program)
    return [program_name, str(procedure)]


class ApplianceCollector:
    """Reads the appliance's live counters at every scrape.

    ``nfs_stats`` returns ``NfsServer.stats()``; ``service`` gives
    ``operation_counts()`` and ``pool_stats()``. A source that fails is skipped
    (logged, and ``acmenfs_metrics_source_up{source}`` is 0) so one bad source
    never hides the others.
    """

    def __init__(
        self,
        service,
        http_stats: HttpRequestStats,
        nfs_stats: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.service = service
        self.http_stats = http_stats
        self.nfs_stats = nfs_stats

    def collect(self) -> Iterator[Metric]:
        source_up = GaugeMetricFamily(
            "acmenfs_metrics_source_up", "1 if the source could be read at this scrape.",
            labels=["source"],
        )
        sources: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("info", self._info_families),
            ("nfs", self._nfs_families),
            ("operations", self._operation_families),
            ("pool", self._pool_families),
            ("http", self._http_families),
        ]
        for name, read in sources:
            try:
                families = read()
            except Exception:
                logger.exception("metrics: could not read source %s", name)
                source_up.add_metric([name], 0)
                continue
            source_up.add_metric([name], 1)
            yield from families
        yield source_up

    def _info_families(self) -> list[Metric]:
        info = GaugeMetricFamily("acmenfs_info", "acmenfs version and storage backend.",
                                 labels=["version", "backend"])
        info.add_metric([__version__, self.service.backend_name], 1)
        return [info]

    # -- NFS server and DRC

    def _nfs_families(self) -> list[Metric]:
        stats = self.nfs_stats() if self.nfs_stats is not None else {}
        calls = CounterMetricFamily(
            "acmenfs_nfs_calls", "RPC calls answered, by program and procedure.",
            labels=["program", "procedure"],
        )
        duration = SummaryMetricFamily(
            "acmenfs_nfs_call_duration_seconds",
            "Time spent answering RPC calls (sum and count), by program and procedure.",
            labels=["program", "procedure"],
        )
        errors = CounterMetricFamily(
            "acmenfs_nfs_call_errors",
            "RPC calls answered with an error status, by program, procedure and status.",
            labels=["program", "procedure", "status"],
        )
        call_counts = stats.get("calls", {})
        latency_sums = stats.get("latency_seconds_sum", {})
        for key, count in sorted(call_counts.items(), key=lambda item: str(item[0])):
            labels = _call_labels(key)
            calls.add_metric(labels, count)
            duration.add_metric(labels, count_value=count, sum_value=latency_sums.get(key, 0.0))
        for key, count in sorted(stats.get("errors", {}).items(), key=lambda item: str(item[0])):
            status = str(key[2]) if isinstance(key, tuple) and len(key) > 2 else ""
            errors.add_metric([*_call_labels(key), status], count)
        read_bytes = CounterMetricFamily("acmenfs_nfs_read_bytes", "Bytes returned by NFS READ.")
        read_bytes.add_metric([], stats.get("bytes_read", 0))
        written_bytes = CounterMetricFamily("acmenfs_nfs_written_bytes", "Bytes accepted by NFS WRITE.")
        written_bytes.add_metric([], stats.get("bytes_written", 0))
        return [calls, duration, errors, read_bytes, written_bytes,
                *self._stat_families("acmenfs_drc_", DRC_FIELDS, stats.get("drc")),
                *self._stat_families("acmenfs_nfs_busy_poll_", BUSY_POLL_FIELDS, stats.get("busy_poll"))]

    @staticmethod
    def _stat_families(prefix: str, fields: dict[str, tuple[str, str, str]], source: Any) -> list[Metric]:
        """One family per field of a stats mapping (or object), named ``prefix + suffix``."""
        values = _as_mapping(source)
        families: list[Metric] = []
        for field, (suffix, kind, help_text) in fields.items():
            name = f"{prefix}{suffix}"
            if kind == "counter":
                family: Metric = CounterMetricFamily(name.removesuffix("_total"), help_text)
            else:
                family = GaugeMetricFamily(name, help_text)
            if field in values:
                family.add_metric([], values[field])
            families.append(family)
        return families

    # -- management operations

    def _operation_families(self) -> list[Metric]:
        counts = self.service.operation_counts()
        operations = CounterMetricFamily(
            "acmenfs_operations", "Management operations run by the appliance, by kind.",
            labels=["operation"],
        )
        failures = CounterMetricFamily(
            "acmenfs_operation_errors",
            "Management operations that failed, by kind and error code.",
            labels=["operation", "code"],
        )
        for operation, count in _operation_calls(counts):
            operations.add_metric([operation], count)
        for operation, code, count in _operation_errors(counts):
            failures.add_metric([operation, code], count)
        return [operations, failures]

    # -- pool

    def _pool_families(self) -> list[Metric]:
        pool = self.service.pool_stats()
        families: list[Metric] = []
        for field, help_text in POOL_FIELDS.items():
            family = GaugeMetricFamily(f"acmenfs_pool_{field}", help_text)
            family.add_metric([], getattr(pool, field))
            families.append(family)
        return families

    # -- HTTP

    def _http_families(self) -> list[Metric]:
        requests = CounterMetricFamily(
            "acmenfs_http_requests", "REST requests answered, by method, route and status.",
            labels=["method", "route", "status"],
        )
        duration = SummaryMetricFamily(
            "acmenfs_http_request_duration_seconds",
            "Time spent answering REST requests, by method, route and status.",
            labels=["method", "route", "status"],
        )
        for labels, (count, seconds) in sorted(self.http_stats.snapshot().items()):
            requests.add_metric(list(labels), count)
            duration.add_metric(list(labels), count_value=count, sum_value=seconds)
        return [requests, duration]


def _operation_calls(counts: Mapping[str, Any]) -> Iterable[tuple[str, int]]:
    """From ``{"operations": {op: count}, ...}`` (ApplianceService.operation_counts)."""
    for operation, count in sorted(counts.get("operations", {}).items()):
        yield str(operation), count


def _operation_errors(counts: Mapping[str, Any]) -> Iterable[tuple[str, str, int]]:
    """From ``{"errors": {op: {code: count}}, ...}``."""
    for operation, by_code in sorted(counts.get("errors", {}).items()):
        for code, count in sorted(by_code.items()):
            yield str(operation), str(code), count


def build_registry(
    service, http_stats: HttpRequestStats, nfs_stats: Callable[[], Mapping[str, Any]] | None
) -> CollectorRegistry:
    """A registry of its own for one app: the appliance collector plus process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(service, http_stats, nfs_stats))
    ProcessCollector(registry=registry)
    return registry


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
