"""`acmenfs nfsd --rpcbind` with the real rpcinfo client: registered on start, gone on stop."""

from __future__ import annotations

import subprocess

from acmenfs.oncrpc import rpcbind as pmap

from nfs3_helpers import NfsdProcess


def rpcinfo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rpcinfo", *args], capture_output=True, text=True, timeout=30)


def test_nfsd_registers_nfs_and_mount_with_rpcbind_and_unregisters_on_sigterm(rpcbind, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    server = NfsdProcess(export, tmp_path / "state", tmp_path / "nfsd.log", "--rpcbind")
    try:
        assert pmap.get_port(100003, 3, "tcp") == server.port
        assert pmap.get_port(100005, 3, "tcp") == server.mount_port
        for program in ("100003", "100005"):  # no -n: rpcinfo finds the port through rpcbind
            result = rpcinfo("-t", "127.0.0.1", program, "3")
            assert result.returncode == 0, result.stderr
            assert "ready and waiting" in result.stdout
    finally:
        assert server.stop() == 0
    assert pmap.get_port(100003, 3, "tcp") == 0
    assert pmap.get_port(100005, 3, "tcp") == 0
