"""``acmenfs nfsd`` as a process: ready line, clean SIGTERM, and a restart while clients work."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from acmenfs.nfs3.const import NfsProc, StableHow
from nfs3_helpers import NfsCalls, NfsdProcess, create, lookup, new_fh_of, pack_fh, skip_wcc

libnfs = pytest.importorskip("libnfs")


def unstable_write(calls: NfsCalls, fh: bytes, offset: int, data: bytes) -> bytes:
    args = pack_fh(fh) + struct.pack(">QIII", offset, len(data), StableHow.UNSTABLE, len(data)) + data
    reply = calls.call(NfsProc.WRITE, args + b"\0" * (-len(data) & 3))
    assert reply.status == 0, reply.status
    skip_wcc(reply.args)
    reply.args.unpack_uint(), reply.args.unpack_uint()
    return reply.args.unpack_fopaque(8)


def test_ready_line_and_clean_sigterm(nfsd_process, tmp_path):
    assert nfsd_process.base_url.startswith("nfs://127.0.0.1/e?version=3&nfsport=")
    assert nfsd_process.stop() == 0
    log = nfsd_process.log_path.read_text()
    assert "stopped" in log and "Traceback" not in log


def test_bad_export_option_is_refused_with_a_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "acmenfs", "nfsd", "--export", "noslash", "--state-dir",
                             str(tmp_path / "s")], capture_output=True, timeout=60)
    assert result.returncode == 2 and b"/NAME=DIR" in result.stderr


def test_restart_keeps_handles_valid_and_changes_the_write_verifier(export_dir, tmp_path):
    first = NfsdProcess(export_dir, tmp_path / "state", tmp_path / "first.log")
    ports = (first.port, first.mount_port)
    try:
        calls = NfsCalls(first)
        root = calls.root()
        fh = new_fh_of(create(calls, root, "survivor"))
        before = unstable_write(calls, fh, 0, b"before-")
        client = libnfs.NFS(first.url())
        working = client.open("/working.txt", "w")
        working.write(bytearray(b"x" * 100_000))
        calls.close()
    finally:
        first.stop()
    second = NfsdProcess(export_dir, tmp_path / "state", tmp_path / "second.log", ports=ports)
    try:
        working.write(bytearray(b"y" * 100_000))  # libnfs reconnects and keeps using its old handle
        working.close()
        calls = NfsCalls(second)
        assert calls.call(NfsProc.GETATTR, pack_fh(fh)).status == 0
        assert calls.root() == root
        after = unstable_write(calls, fh, 7, b"after")
        assert after != before
        calls.close()
    finally:
        second.stop()
    assert (export_dir / "survivor").read_bytes() == b"before-after"
    assert (export_dir / "working.txt").read_bytes() == b"x" * 100_000 + b"y" * 100_000


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to another user")
def test_unprivileged_server_uses_the_handle_table_and_its_own_identity(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="acmenfs-unpriv-", dir="/tmp"))
    try:
        export_dir, state_dir = base / "export", base / "state"
        export_dir.mkdir()
        for path in (base, export_dir):
            os.chown(path, 65534, 65534)
        base.chmod(0o755)
        drop = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        source = base / "src.bin"
        source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
        server = NfsdProcess(export_dir, state_dir, tmp_path / "unpriv1.log", prefix=drop)
        try:
            assert subprocess.run(["nfs-cp", str(source), server.url(path="/f.bin")], capture_output=True).returncode == 0
            calls = NfsCalls(server, uid=1000, gid=1000)
            root = calls.root()
            status, fh = lookup(calls, root, "f.bin")
            assert status == 0
            calls.close()
        finally:
            server.stop()
        assert (state_dir / "handles.sqlite3").exists()
        assert os.stat(export_dir / "f.bin").st_uid == 65534  # files belong to the server's user
        server = NfsdProcess(export_dir, state_dir, tmp_path / "unpriv2.log", prefix=drop)
        try:
            calls = NfsCalls(server)
            assert calls.call(NfsProc.GETATTR, pack_fh(fh)).status == 0  # handle survived the restart
            calls.close()
            cat = subprocess.run(["nfs-cat", server.url(path="/f.bin")], capture_output=True)
            assert cat.stdout == source.read_bytes()
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
