"""The server against real NFS clients: libnfs-utils (nfs-cp, nfs-ls, nfs-cat),
the libnfs Python bindings, and tshark decoding a captured exchange."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess

import pytest
from tshark_capture import loopback_capture

from nfs3_helpers import require_tool

libnfs = pytest.importorskip("libnfs")
import libnfs.libnfs as lowlevel  # noqa: E402


def run(*argv: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=timeout, **kwargs)


def test_nfs_cp_ls_cat_round_trip_of_a_random_file(nfsd, export_dir, tmp_path):
    for tool in ("nfs-cp", "nfs-ls", "nfs-cat"):
        require_tool(tool)
    payload = os.urandom(7 * 1024 * 1024 + 12345)
    source = tmp_path / "random.bin"
    source.write_bytes(payload)
    copy = run("nfs-cp", str(source), nfsd.url(path="/random.bin"))
    assert copy.returncode == 0, copy.stderr
    listing = run("nfs-ls", nfsd.url())
    assert listing.returncode == 0, listing.stderr
    assert any(line.endswith(" random.bin") and f" {len(payload)} " in line
               for line in listing.stdout.decode().splitlines()), listing.stdout
    cat = run("nfs-cat", nfsd.url(path="/random.bin"))
    assert cat.returncode == 0, cat.stderr
    assert hashlib.sha256(cat.stdout).digest() == hashlib.sha256(payload).digest()
    assert (export_dir / "random.bin").read_bytes() == payload
    assert nfsd.server.stats()["bytes_written"] == len(payload)
    assert nfsd.server.stats()["calls"][("NFS3", "COMMIT")] >= 1


def test_bindings_tree_rename_symlink_link_truncate_chmod_stat(nfsd_process, export_dir):
    nfsd = nfsd_process
    client = libnfs.NFS(nfsd.url())
    context = client._nfs
    assert client.mkdir("/a") == 0 and client.mkdir("/a/b") == 0 and client.mkdir("/a/b/c") == 0
    handle = client.open("/a/b/c/file.txt", "w")
    handle.write(bytearray(b"0123456789" * 1000))
    handle.close()
    assert (export_dir / "a/b/c/file.txt").read_bytes() == b"0123456789" * 1000
    assert lowlevel.nfs_rename(context, "/a/b/c/file.txt", "/a/moved.txt") == 0
    assert not (export_dir / "a/b/c/file.txt").exists() and (export_dir / "a/moved.txt").exists()
    assert lowlevel.nfs_symlink(context, "b/c/../../moved.txt", "/a/sym") == 0
    buffer = bytearray(256)
    assert lowlevel.nfs_readlink(context, "/a/sym", buffer, len(buffer)) == 0
    assert bytes(buffer).rstrip(b"\0") == b"b/c/../../moved.txt"
    assert os.readlink(export_dir / "a/sym") == "b/c/../../moved.txt"
    assert lowlevel.nfs_link(context, "/a/moved.txt", "/a/hard.txt") == 0
    assert os.stat(export_dir / "a/hard.txt").st_ino == os.stat(export_dir / "a/moved.txt").st_ino
    assert lowlevel.nfs_truncate(context, "/a/hard.txt", 5) == 0
    assert (export_dir / "a/moved.txt").read_bytes() == b"01234"
    assert lowlevel.nfs_chmod(context, "/a/moved.txt", 0o640) == 0
    assert stat.S_IMODE(os.stat(export_dir / "a/moved.txt").st_mode) == 0o640
    info = client.stat("/a/moved.txt")
    on_disk = os.stat(export_dir / "a/moved.txt")
    assert (info["size"], info["nlink"], info["ino"], stat.S_IMODE(info["mode"])) == (5, 2, on_disk.st_ino, 0o640)
    assert client.open("/a/sym").read() == "01234"  # the client resolves the symlink (str in 1.0)
    assert client.rmdir("/a/b/c") == 0 and client.rmdir("/a/b") == 0
    assert sorted(client.listdir("/a")) == sorted([".", "..", "moved.txt", "sym", "hard.txt"])
    assert client.unlink("/a/hard.txt") == 0 and client.unlink("/a/sym") == 0
    assert sorted(os.listdir(export_dir / "a")) == ["moved.txt"]


def test_bindings_readdir_of_5000_entries(nfsd_process, export_dir):
    nfsd = nfsd_process
    big = export_dir / "big"
    big.mkdir()
    expected = {f"file-{i:05d}" for i in range(4900)}
    for name in expected:
        (big / name).touch()
    client = libnfs.NFS(nfsd.url())
    for i in range(100):  # and some created through NFS
        name = f"nfs-{i:03d}"
        client.open(f"/big/{name}", "w").close()
        expected.add(name)
    names = {name for name in client.listdir("/big") if name not in (".", "..")}
    assert len(expected) == 5000
    assert names == expected


def test_tshark_decodes_a_captured_exchange_without_malformed_frames(nfsd, export_dir, tmp_path):
    tshark = require_tool("tshark")
    capture = tmp_path / "nfs.pcapng"
    ports = f"tcp port {nfsd.port} or tcp port {nfsd.mount_port}"
    with loopback_capture(tshark, ports, capture):
        source = tmp_path / "small.bin"
        source.write_bytes(os.urandom(300_000))
        assert run("nfs-cp", str(source), nfsd.url(path="/small.bin")).returncode == 0
        assert run("nfs-ls", nfsd.url()).returncode == 0
        assert run("nfs-cat", nfsd.url(path="/small.bin")).stdout == source.read_bytes()
    decode = ["-r", str(capture), "-d", f"tcp.port=={nfsd.port},rpc", "-d", f"tcp.port=={nfsd.mount_port},rpc"]
    malformed = run(tshark, *decode, "-Y", "_ws.malformed || _ws.expert.severity == error")
    assert malformed.returncode == 0 and malformed.stdout.strip() == b"", malformed.stdout.decode()[:2000]
    frames = run(tshark, *decode, "-Y", "nfs || mount", "-T", "fields", "-e", "nfs.procedure_v3", "-e", "mount.procedure_v3")
    procedures = set(frames.stdout.decode().split())
    assert {"1", "7", "21", "6"} <= procedures, procedures  # MNT/GETATTR, WRITE, COMMIT, READ
    listed = run(tshark, *decode, "-Y", "nfs.readdirplus.entry.name", "-T", "fields", "-E", "occurrence=a",
                 "-e", "nfs.readdirplus.entry.name", "-e", "nfs.readdirplus.entry.fileid").stdout.decode().split()
    assert listed, "no READDIRPLUS reply decoded"
    names, fileids = listed[0].split(","), listed[1].split(",")
    root_ino = str(os.stat(export_dir).st_ino)
    assert names[:2] == [".", ".."] and fileids[:2] == [root_ino, root_ino] and "small.bin" in names
