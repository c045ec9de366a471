"""Units of the worker package: routing of a peeked call header, summing statistics,
the worker-count policy, the shared quota cell, applying a pushed export table."""

from __future__ import annotations

import struct

import pytest

from acmenfs.fs import quota
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.oncrpc.drc import DuplicateRequestCache
from acmenfs.workers.policy import WorkersRefused, effective_workers
from acmenfs.workers.routing import call_program, choose_worker, home_worker
from acmenfs.workers.stats import counters_only, sum_stats


def header(program: int, version: int) -> bytes:
    return struct.pack(">IIIIII", 0x80000000 | 100, 7, 0, 2, program, version)


def test_nfs4_goes_to_worker_0_and_the_rest_by_address_and_port():
    all_up = lambda index: True  # noqa: E731
    for port in range(1000, 1064):
        assert choose_worker("10.0.0.1", port, header(100003, 4), 4, all_up) == 0
        assert choose_worker("10.0.0.1", port, header(100003, 5), 4, all_up) == 0  # worker 0 names 3..4
        assert choose_worker("10.0.0.1", port, header(100003, 2), 4, all_up) == 0
        assert choose_worker("10.0.0.1", port, header(100003, 3), 4, all_up) == home_worker("10.0.0.1", port, 4)
        assert choose_worker("10.0.0.1", port, header(100005, 3), 4, all_up) == home_worker("10.0.0.1", port, 4)
    assert {home_worker("10.0.0.1", port, 4) for port in range(1000, 1064)} == {0, 1, 2, 3}
    # a partial header routes by address alone; a down worker passes to the next in ring order
    assert choose_worker("10.0.0.1", 1000, b"\x80", 4, all_up) == home_worker("10.0.0.1", 1000, 4)
    home = home_worker("10.0.0.1", 1000, 4)
    assert choose_worker("10.0.0.1", 1000, header(100003, 3), 4, lambda i: i != home) == (home + 1) % 4
    assert choose_worker("10.0.0.1", 1000, header(100003, 4), 4, lambda i: i != 0) is None
    assert call_program(header(100003, 3)) == (100003, 3)
    assert call_program(struct.pack(">IIIIII", 0, 7, 1, 2, 100003, 3)) is None  # a REPLY, not a call


def test_sum_stats_adds_counts_and_keeps_settings():
    one = {"calls": {("NFS3", "READ"): 2}, "latency_seconds_sum": {("NFS3", "READ"): 0.5},
           "errors": {("NFS3", "LOOKUP", "NOENT"): 1}, "bytes_read": 10, "bytes_written": 1,
           "drc": DuplicateRequestCache(max_entries=100).stats(), "busy_poll": {"window_seconds": 1e-4, "hits": 3}}
    two = {"calls": {("NFS3", "READ"): 3, ("NFS3", "WRITE"): 1}, "latency_seconds_sum": {("NFS3", "READ"): 0.25},
           "errors": {}, "bytes_read": 5, "bytes_written": 2,
           "drc": DuplicateRequestCache(max_entries=100).stats(), "busy_poll": {"window_seconds": 1e-4, "hits": 4}}
    total = sum_stats([one, two])
    assert total["calls"] == {("NFS3", "READ"): 5, ("NFS3", "WRITE"): 1}
    assert total["latency_seconds_sum"] == {("NFS3", "READ"): 0.75}
    assert total["errors"] == {("NFS3", "LOOKUP", "NOENT"): 1}
    assert (total["bytes_read"], total["bytes_written"]) == (15, 3)
    assert total["drc"]["max_entries"] == 200 and total["drc"]["lifetime"] == one["drc"].lifetime
    assert total["busy_poll"] == {"window_seconds": 1e-4, "hits": 7}
    # a dead worker's counters are kept, its gauges are not
    gone = counters_only(two)
    assert "entries" not in gone["drc"] and "checks" in gone["drc"] and gone["busy_poll"] == {"hits": 4}
    assert sum_stats([one, gone])["calls"] == total["calls"]


def test_policy(tmp_path, monkeypatch):
    assert effective_workers(1, tmp_path) == 1
    assert effective_workers(3, tmp_path) == 3  # root: kernel handles
    monkeypatch.setattr("acmenfs.workers.policy.kernel_handles.available", lambda _dir: False)
    assert effective_workers(None, tmp_path) == 1
    with pytest.raises(WorkersRefused, match="kernel file handles"):
        effective_workers(2, tmp_path)


def test_shared_usage_cells_are_one_figure_for_all_counters(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_bytes(b"x" * 8192)
    monkeypatch.setattr(quota, "_shared_directory", None)
    quota.share_usage_between_processes(tmp_path / "usage")
    first, second = quota.UsageCounter(str(data), 1 << 20), quota.UsageCounter(str(data), 1 << 20)
    assert first.current() == 8192 and second.scanned
    first.add(4096)
    assert second.current() == 12288
    with pytest.raises(quota.QuotaExceeded):
        second.check_growth((1 << 20) - 12288 + 1)
    quota.forget_shared_usage(tmp_path / "usage")
    assert not first.scanned and second.current() == 8192
    unlimited = quota.UsageCounter(str(data), None)  # no quota: the per-process figure
    unlimited.add(4096)
    assert unlimited.current() == 8192 and first.current() == 8192


def test_a_pushed_export_table_changes_only_what_differs():
    table = ExportTable([Export("/a", "/tmp"), Export("/b", "/tmp")])
    events = []
    table.subscribe(lambda event, export: events.append((event, export.path)))
    table.sync([Export("/a", "/tmp"), Export("/c", "/tmp", rules=(ClientRule("10.0.0.0/8"),))])
    assert sorted(events) == [("add", "/c"), ("remove", "/b")]
    assert [export.path for export in table.list()] == ["/a", "/c"]
