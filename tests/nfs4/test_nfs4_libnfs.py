"""libnfs 4.0 (nfs-ls, nfs-cat, URL ?version=4, no MOUNT) against `acmenfs nfsd`: listing the
pseudo root, an export and a subdirectory, and reading files back byte for byte.  libnfs needs
SETCLIENTID and OPEN (engineer B's ops): skipped in a tree without them."""

from __future__ import annotations

import os
import subprocess

import pytest

from acmenfs.nfs4.const import Op
from acmenfs.nfs4.program import load_ops
from nfs4_core_helpers import NfsdProcess4, require_tool

pytestmark = pytest.mark.skipif(
    not {Op.SETCLIENTID, Op.SETCLIENTID_CONFIRM, Op.OPEN, Op.CLOSE} <= set(load_ops()),
    reason="libnfs 4.0 needs SETCLIENTID/OPEN/CLOSE (engineer B's ops_client/ops_open)")


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=timeout)


@pytest.fixture
def served(tmp_path):
    directory = tmp_path / "export"
    (directory / "sub").mkdir(parents=True)
    payload = os.urandom(3 * 1024 * 1024 + 4321)
    (directory / "big.bin").write_bytes(payload)
    (directory / "sub" / "inner.txt").write_text("inner\n")
    server = NfsdProcess4(directory, tmp_path / "state", tmp_path / "nfsd.log")
    yield server, payload
    server.stop()


def listing(result: subprocess.CompletedProcess) -> set[str]:
    return {line.split()[-1] for line in result.stdout.decode().splitlines() if line.strip()}


def test_nfs_ls_of_the_pseudo_root_an_export_and_a_subdirectory(served):
    server, _ = served
    require_tool("nfs-ls")
    root = run("nfs-ls", server.url("/"))
    assert root.returncode == 0, root.stderr.decode()
    assert "e" in listing(root)
    export = run("nfs-ls", server.url("/e"))
    assert export.returncode == 0, export.stderr.decode()
    assert {"big.bin", "sub"} <= listing(export)
    sub = run("nfs-ls", server.url("/e/sub"))
    assert sub.returncode == 0 and "inner.txt" in listing(sub), sub.stderr.decode()


def test_nfs_cat_reads_files_byte_for_byte(served):
    server, payload = served
    require_tool("nfs-cat")
    big = run("nfs-cat", server.url("/e/big.bin"))
    assert big.returncode == 0, big.stderr.decode()
    assert big.stdout == payload
    small = run("nfs-cat", server.url("/e/sub/inner.txt"))
    assert small.returncode == 0 and small.stdout == b"inner\n", small.stderr.decode()


def test_nfs_cat_of_a_missing_file_fails(served):
    server, _ = served
    require_tool("nfs-cat")
    assert run("nfs-cat", server.url("/e/missing")).returncode != 0
