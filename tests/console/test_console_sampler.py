"""The dashboard's NFS numbers from sampled ``NfsServer.stats()`` (pure functions, no server)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx

from acmenfs.console.sampler import (
    StatsSampler,
    drc_summary,
    interval_series,
    procedure_rates,
    take_sample,
    workers_up,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "appliance"))
from api_fixtures import LiveApi  # noqa: E402


def stats(calls: int, latency: float, written: int, hits: int = 0, checks: int = 0, **extra) -> dict:
    return {
        "calls": {("NFS3", "WRITE"): calls, ("NFS3", "GETATTR"): 2 * calls},
        "latency_seconds_sum": {("NFS3", "WRITE"): latency, ("NFS3", "GETATTR"): latency / 10},
        "errors": {}, "bytes_read": 0, "bytes_written": written,
        "drc": {"checks": checks, "hits": hits, "in_progress_hits": 0, "replacements": 3, "walk_frees": 1,
                "gc_frees": 1, "overflows": 0, "in_progress": 2, "entries": 9, "max_entries": 100},
        **extra,
    }


def test_rates_and_latency_between_samples():
    first = take_sample(stats(10, 0.010, 1000), at=100.0)
    last = take_sample(stats(30, 0.050, 5000), at=110.0)
    series = interval_series([first, last])
    assert series == [{"wall": last.wall, "calls_per_s": 6.0, "read_bps": 0.0, "write_bps": 400.0}]
    rows = {row["procedure"]: row for row in procedure_rates(first, last)}
    assert rows["NFS3 WRITE"]["calls_per_s"] == 2.0
    assert abs(rows["NFS3 WRITE"]["latency_ms"] - 2.0) < 1e-9  # 40 ms over 20 calls
    assert procedure_rates(first, last)[0]["procedure"] == "NFS3 GETATTR"  # busiest first


def test_a_counter_reset_never_gives_a_negative_rate():
    first = take_sample(stats(50, 1.0, 9000), at=0.0)
    last = take_sample(stats(5, 0.1, 100), at=5.0)
    assert interval_series([first, last])[0]["calls_per_s"] == 0.0


def test_drc_hit_rate_evictions_and_in_progress():
    first = take_sample(stats(0, 0, 0, hits=1, checks=10), at=0.0)
    last = take_sample(stats(0, 0, 0, hits=3, checks=30), at=5.0)
    summary = drc_summary(first, last)
    assert summary["hit_rate"] == 0.1 and summary["window_hit_rate"] == 0.1
    assert (summary["evictions"], summary["expired"], summary["in_progress"]) == (3, 2, 2)


def test_workers_up_is_one_without_a_supervisor():
    assert workers_up(None) == {"up": 1, "configured": None, "restarts": None}
    assert workers_up(4)["up"] == 4
    # the shape of acmenfs.workers' Supervisor.worker_stats()
    assert workers_up({"workers": 4, "up": 3, "restarts": 2, "push_failures": 0}) == {
        "up": 3, "configured": 4, "restarts": 2}
    assert workers_up([{"pid": 1, "alive": True}, {"pid": 2, "alive": False}])["up"] == 1
    assert take_sample(stats(1, 0, 0, workers=2)).workers == 2


def test_the_sampler_summary_without_nfs_says_so():
    assert StatsSampler(None).summary() == {"enabled": False}
    sampler = StatsSampler(lambda: stats(1, 0.001, 10))
    sampler.sample_now()
    assert sampler.summary()["workers"]["up"] == 1


def test_the_dashboard_shows_a_supervisors_workers(tmp_path):
    supervisor = stats(5, 0.01, 100, workers={"workers": 4, "up": 3, "restarts": 1})
    api = LiveApi(tmp_path / "data", nfs_stats=lambda: supervisor).start()
    try:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
            assert client.post("/ui/login", data={"csrf": csrf, "token": api.admin_token}).status_code == 303
            page = client.get("/ui/dashboard").text
        assert re.search(r'id="workers">3</p>\s*<p class="muted">of 4 configured · 1 restart<', page)
    finally:
        api.stop()
