"""Real clients against ``acmenfs nfsd --workers 2``: libnfs-utils and the libnfs bindings,
several times each so that both workers serve some of them (libnfs picks its own ports)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

libnfs = pytest.importorskip("libnfs")


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=120)


def test_nfs_cp_and_cat_with_two_workers(nfsd_workers, tmp_path):
    for tool in ("nfs-cp", "nfs-cat", "nfs-ls"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: install libnfs-utils")
    server = nfsd_workers(2)
    base = f"nfs://127.0.0.1/e%s?version=3&nfsport={server.port}&mountport={server.mount_port}"
    for round_ in range(4):
        payload = os.urandom(3 * 1024 * 1024 + round_)
        source = tmp_path / f"in-{round_}.bin"
        source.write_bytes(payload)
        copy = run("nfs-cp", str(source), base % f"/copy-{round_}.bin")
        assert copy.returncode == 0, copy.stderr
        cat = run("nfs-cat", base % f"/copy-{round_}.bin")
        assert cat.returncode == 0, cat.stderr
        assert hashlib.sha256(cat.stdout).digest() == hashlib.sha256(payload).digest()
        assert (tmp_path / "export" / f"copy-{round_}.bin").read_bytes() == payload
    listing = run("nfs-ls", base % "")
    assert listing.returncode == 0 and listing.stdout.count(b"copy-") == 4


def test_libnfs_bindings_with_two_workers(nfsd_workers, tmp_path):
    server = nfsd_workers(2)
    url = f"nfs://127.0.0.1/e?version=3&nfsport={server.port}&mountport={server.mount_port}"
    for round_ in range(4):
        client = libnfs.NFS(url)
        assert client.mkdir(f"/d{round_}") == 0
        handle = client.open(f"/d{round_}/f.txt", "w")
        handle.write(bytearray(b"w%d" % round_ * 5000))
        handle.close()
        assert client.open(f"/d{round_}/f.txt").read() == ("w%d" % round_) * 5000
        assert client.stat(f"/d{round_}/f.txt")["size"] == len(b"w%d" % round_) * 5000
    assert sorted(os.listdir(tmp_path / "export")) == [f"d{i}" for i in range(4)]
