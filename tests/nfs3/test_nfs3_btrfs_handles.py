"""Handles and fileids on btrfs, where inode numbers repeat across subvolumes and snapshots
(a real btrfs on a loop device: the ``btrfs_mount`` fixture of tests/conftest.py; needs root)."""

from __future__ import annotations

import os
import struct
import subprocess

from acmenfs.nfs3.const import NfsProc
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from nfs3_helpers import NfsCalls, RunningNfsServer, lookup, pack_fh, skip_post_op_attr


def fileid_of(calls: NfsCalls, fh: bytes) -> int:
    reply = calls.call(NfsProc.GETATTR, pack_fh(fh))
    assert reply.status == 0
    reply.args.unpack_fopaque(4 * 5 + 8 * 2 + 8 + 8)  # type..gid, size, used, rdev, fsid
    return reply.args.unpack_uhyper()


def read_all(calls: NfsCalls, fh: bytes) -> bytes:
    reply = calls.call(NfsProc.READ, pack_fh(fh) + struct.pack(">QI", 0, 4096))
    assert reply.status == 0
    skip_post_op_attr(reply.args)
    reply.args.unpack_uint(), reply.args.unpack_bool()
    return reply.args.unpack_opaque()


def test_subvolumes_and_snapshots_get_distinct_handles_and_fileids(btrfs_mount, tmp_path):
    export_dir = btrfs_mount / "export"
    export_dir.mkdir()
    subprocess.run(["btrfs", "subvolume", "create", str(export_dir / "sub")], check=True, capture_output=True)
    (export_dir / "top.txt").write_bytes(b"top")
    (export_dir / "sub" / "inner.txt").write_bytes(b"inner")
    subprocess.run(["btrfs", "subvolume", "snapshot", str(export_dir / "sub"), str(export_dir / "snap")],
                   check=True, capture_output=True)
    (export_dir / "sub" / "inner.txt").write_bytes(b"changed")
    inos = {os.stat(export_dir / "sub" / "inner.txt").st_ino, os.stat(export_dir / "snap" / "inner.txt").st_ino}
    assert len(inos) == 1  # the situation we must survive: same inode number in two subvolumes
    exports = ExportTable([Export("/b", str(export_dir), rules=(ClientRule("*", squash="none"),))])
    server = RunningNfsServer(exports, tmp_path / "state")
    try:
        calls = NfsCalls(server)
        root = calls.root("/b")
        handles = {}
        for directory in ("sub", "snap"):
            status, dir_fh = lookup(calls, root, directory)
            assert status == 0
            assert lookup(calls, dir_fh, "..") == (0, root)
            status, handles[directory] = lookup(calls, dir_fh, "inner.txt")
            assert status == 0
        assert handles["sub"] != handles["snap"]
        assert fileid_of(calls, handles["sub"]) != fileid_of(calls, handles["snap"])
        assert read_all(calls, handles["sub"]) == b"changed" and read_all(calls, handles["snap"]) == b"inner"
        calls.close()
    finally:
        server.stop()
    server = RunningNfsServer(exports, tmp_path / "state")  # handles survive a restart (fresh caches)
    try:
        calls = NfsCalls(server)
        assert read_all(calls, handles["snap"]) == b"inner" and read_all(calls, handles["sub"]) == b"changed"
        calls.close()
    finally:
        server.stop()
