"""Busy polling in the NFS server: raw calls in process, and ``acmenfs nfsd --busy-poll-us``
with the libnfs bindings (which hold the GIL, so that server runs in a subprocess)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from acmenfs.nfs3.const import NfsProc
from nfs3_helpers import NfsCalls, NfsdProcess, RunningNfsServer, pack_fh


@pytest.mark.parametrize("window", [0.2, 0.0])
def test_back_to_back_calls_are_caught_while_polling_and_never_when_off(exports, tmp_path: Path, window):
    server = RunningNfsServer(exports, tmp_path / "state", busy_poll=window)
    try:
        calls = NfsCalls(server)
        root = calls.root()
        for _ in range(30):
            assert calls.call(NfsProc.GETATTR, pack_fh(root)).status == 0
        calls.close()
        # The reply leaves before the loop accounts for the receive: let it catch up.
        deadline = time.monotonic() + 2.0
        while window and server.server.stats()["busy_poll"]["hits"] < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        polled = server.server.stats()["busy_poll"]
    finally:
        server.stop()
    if window:
        assert polled["hits"] >= 30 and polled["windows"] >= 1
    else:
        assert polled["windows"] == polled["hits"] == 0
    assert polled["window_seconds"] == window


@pytest.mark.parametrize("microseconds", ["10000", "0"])
def test_nfsd_option_serves_a_real_client_and_reports_what_it_caught(export_dir, tmp_path, microseconds):
    libnfs = pytest.importorskip("libnfs")
    server = NfsdProcess(export_dir, tmp_path / "state", tmp_path / "nfsd.log", "--busy-poll-us", microseconds)
    try:
        client = libnfs.NFS(server.url())
        client.open("/probe", "w").close()
        for _ in range(30):
            assert client.stat("/probe")["size"] == 0
    finally:
        assert server.stop() == 0
    log = server.log_path.read_text()
    report = re.search(r"busy polling \(window (\d+) us\): (\d+) windows, (\d+) calls caught awake", log)
    assert report, log[-2000:]
    window, windows, caught = (int(group) for group in report.groups())
    assert window == int(microseconds)
    if window:
        assert caught >= 30  # 10 ms is far longer than libnfs takes between two calls
    else:
        assert windows == caught == 0
