"""Fixtures for the NFSv3 server tests: an in-process NfsServer on free 127.0.0.1 ports,
stopped in teardown, and raw clients for it (helpers live in ``nfs3_helpers``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from nfs3_helpers import NfsCalls, NfsdProcess, RunningNfsServer


@pytest.fixture
def exports(export_dir: Path) -> ExportTable:
    return ExportTable([Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),))])


@pytest.fixture
def nfsd(exports: ExportTable, tmp_path: Path):
    server = RunningNfsServer(exports, tmp_path / "state")
    yield server
    server.stop()


@pytest.fixture(params=["kernel-handles", "handle-table"])
def nfsd_both_handle_modes(request, exports: ExportTable, tmp_path: Path):
    """``nfsd`` once with kernel handles (when available) and once with the handle table, the
    mode of a server not running as root; a test module uses it as its ``nfsd``."""
    server = RunningNfsServer(exports, tmp_path / "state",
                              use_kernel_handles=None if request.param == "kernel-handles" else False)
    yield server
    server.stop()


@pytest.fixture
def nfsd_process(export_dir: Path, tmp_path: Path):
    server = NfsdProcess(export_dir, tmp_path / "state", tmp_path / "nfsd.log")
    yield server
    server.stop()


@pytest.fixture
def calls(nfsd):
    client = NfsCalls(nfsd)
    yield client
    client.close()
