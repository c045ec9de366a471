"""Fixtures of the worker tests: supervisors started here are stopped by pid at the end."""

from __future__ import annotations

import pytest

from workers_helpers import NfsdWorkers


@pytest.fixture
def nfsd_workers(tmp_path):
    """``start(workers, export_dir=..., state_dir=...)`` -> a running ``NfsdWorkers``."""
    started: list[NfsdWorkers] = []

    def start(workers: int, export_dir=None, state_dir=None, *extra: str) -> NfsdWorkers:
        export_dir = export_dir or tmp_path / "export"
        state_dir = state_dir or tmp_path / "state"
        export_dir.mkdir(exist_ok=True)
        server = NfsdWorkers(export_dir, state_dir, tmp_path / "nfsd.log", workers, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def serve_workers(tmp_path):
    """``start(workers)`` -> a running ``ServeWorkers`` (data dir under tmp_path)."""
    from workers_helpers import ServeWorkers

    started: list[ServeWorkers] = []

    def start(workers: int, *extra: str) -> ServeWorkers:
        server = ServeWorkers(tmp_path / "data", tmp_path / "serve.log", workers, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
