"""Prometheus families about the worker processes themselves (``acmenfs serve``).

Owns ``WorkerCollector``: ``acmenfs_nfs_workers`` (configured),
``acmenfs_nfs_workers_up`` (taking connections now) and
``acmenfs_nfs_worker_restarts_total``, read from ``Supervisor.worker_stats``
at every scrape.  The NFS call families themselves come from the appliance's
collector, fed by ``Supervisor.stats`` (summed over workers).
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class WorkerCollector(Collector):
    def __init__(self, worker_stats: Callable[[], Mapping[str, int]]) -> None:
        self.worker_stats = worker_stats

    def collect(self) -> Iterator:
        stats = self.worker_stats()
        configured = GaugeMetricFamily("acmenfs_nfs_workers", "NFS worker processes configured.")
        configured.add_metric([], stats["workers"])
        up = GaugeMetricFamily("acmenfs_nfs_workers_up", "NFS worker processes taking connections now.")
        up.add_metric([], stats["up"])
        restarts = CounterMetricFamily("acmenfs_nfs_worker_restarts", "NFS worker processes restarted after dying.")
        restarts.add_metric([], stats["restarts"])
        yield from (configured, up, restarts)
