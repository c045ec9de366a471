"""The handle-table mode used when the server cannot open kernel handles (not root):
handles survive restarts and renames made through the server, removed objects are stale."""

from __future__ import annotations

import os
import struct

import pytest

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


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_unchecked_create_of_an_existing_file_by_a_user_in_path_table_mode(exports, export_dir, tmp_path):
    """UNCHECKED CREATE, by a user, of a file the server has never seen: in handle-table mode
    too the existing file is returned as it is, with a handle that works."""
    (export_dir / "existing").write_bytes(b"kept")
    server = RunningNfsServer(exports, tmp_path / "state", use_kernel_handles=False)
    try:
        calls = NfsCalls(server, uid=1000, gid=1000)
        reply = create(calls, calls.root(), "existing")
        assert reply.status == 0
        fh = new_fh_of(reply)
        assert calls.call(NfsProc.GETATTR, pack_fh(fh)).status == 0
        calls.close()
    finally:
        server.stop()
    assert (export_dir / "existing").read_bytes() == b"kept"
