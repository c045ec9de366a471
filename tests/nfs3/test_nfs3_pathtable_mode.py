"""The handle-table mode used when the server cannot open kernel handles (not root):
handles survive restarts and renames made through the server, removed objects are stale."""

from __future__ import annotations

import struct

from acmenfs.nfs3.const import NfsProc, NfsStat
from nfs3_helpers import NO_SATTR, NfsCalls, RunningNfsServer, create, lookup, new_fh_of, pack_diropargs, pack_fh


def test_path_table_handles_survive_restart_and_follow_renames(exports, export_dir, tmp_path):
    server = RunningNfsServer(exports, tmp_path / "state", use_kernel_handles=False)
    try:
        calls = NfsCalls(server)
        root = calls.root()
        directory = new_fh_of(calls.call(NfsProc.MKDIR, pack_diropargs(root, "dir") + NO_SATTR))
        inner = new_fh_of(create(calls, directory, "inner"))
        gone = new_fh_of(create(calls, root, "gone"))
        rename = calls.call(NfsProc.RENAME, pack_diropargs(root, "dir") + pack_diropargs(root, "renamed"))
        assert rename.status == 0
        assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "gone")).status == 0
        calls.close()
    finally:
        server.stop()
    assert (export_dir / "renamed" / "inner").exists()
    server = RunningNfsServer(exports, tmp_path / "state", use_kernel_handles=False)
    try:
        calls = NfsCalls(server)
        assert calls.root() == root
        assert calls.call(NfsProc.GETATTR, pack_fh(inner)).status == 0
        assert lookup(calls, directory, "inner") == (0, inner)
        assert lookup(calls, inner, "..")[0] == NfsStat.NOTDIR
        assert calls.call(NfsProc.GETATTR, pack_fh(gone)).status == NfsStat.STALE
        (export_dir / "renamed" / "inner").unlink()
        (export_dir / "renamed" / "inner").touch()  # same name, another inode
        assert calls.call(NfsProc.GETATTR, pack_fh(inner)).status == NfsStat.STALE
        write = pack_fh(new_fh_of(create(calls, root, "w"))) + struct.pack(">QIII", 0, 3, 2, 3) + b"abc\0"
        assert calls.call(NfsProc.WRITE, write).status == 0
        calls.close()
    finally:
        server.stop()
    assert (export_dir / "w").read_bytes() == b"abc"
