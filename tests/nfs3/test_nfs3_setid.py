"""Issue #11 item 9: writing data or changing the size of a file clears S_ISUID/S_ISGID as the
kernel does for the caller, although the server writes through descriptors it opened as root.

The reference is the kernel itself: the same operation on an identical file, done by a child
process running as the caller (uid, gid, groups; no capabilities) through a descriptor opened
by root, which is exactly the server's situation minus CAP_FSETID.  Every procedure that can
write data or change a size is covered (WRITE at each stability, SETATTR size, CREATE UNCHECKED
with a size; a size equal to the current one clears them too, as truncate(2) does, and a WRITE of
no bytes does not), for uid 0 (bits kept), the owner, a group member, a supplementary-group member
and others, on modes where the group-exec bit and group membership matter.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess

import pytest

from acmenfs.nfs3.const import NfsProc, StableHow
from acmenfs.nfs3.exports import Export
from nfs3_helpers import NfsCalls, lookup, pack_diropargs, pack_fh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="callers of other uids need a root server")

CALLERS = {  # name -> (uid, gid, supplementary gids); the files belong to 1000:1000
    "root": (0, 0, ()),
    "owner": (1000, 1000, ()),
    "group": (1001, 1000, ()),
    "supplementary": (1002, 3000, (1000,)),
    "other": (2000, 2000, ()),
}
MODES = (0o6777, 0o4777, 0o2777, 0o2767, 0o6666, 0o0777)
SYSTEM_PYTHON = "/usr/bin/python3"  # the child runs as other users: the venv may not be readable to them
OPERATIONS = ("write-unstable", "write-data-sync", "write-file-sync", "write-empty", "setattr-size", "create-size", "setattr-same-size",
              "create-same-size")  # the files hold 12 bytes: a "same" size is a truncate(2) to 12
_CHILD = """
import json, os, sys
for fd, operation in json.loads(sys.argv[1]):
    if operation.startswith("write"):
        os.pwrite(fd, b"" if operation == "write-empty" else b"data", 0)
    elif operation == "chgrp":
        os.fchown(fd, -1, 3000)
    else:
        os.ftruncate(fd, 12 if operation.endswith("same-size") else 12345)
"""


def setid_file(path, mode: int, owner: int = 1000):
    """A file of owner:owner with ``mode`` (chmod after chown, which clears set-id bits) and
    some contents."""
    path.write_bytes(b"old contents")
    os.chown(path, owner, owner)
    os.chmod(path, mode)
    return path


def kernel_modes(tmp_path, caller: tuple[int, int, tuple], operation: str) -> dict[int, int]:
    """mode -> mode after ``operation`` done locally by a process running as ``caller``."""
    fds, modes = [], {}
    try:
        for mode in MODES:
            path = setid_file(tmp_path / f"kernel-{operation}-{mode:o}", mode)
            fds.append((os.open(path, os.O_RDWR), mode))
        uid, gid, groups = caller
        identity = {} if uid == 0 else {"user": uid, "group": gid, "extra_groups": list(groups)}
        subprocess.run([SYSTEM_PYTHON, "-c", _CHILD, json.dumps([(fd, operation) for fd, _ in fds])],
                       pass_fds=[fd for fd, _ in fds], check=True, timeout=60, cwd="/", **identity)
        for fd, mode in fds:
            modes[mode] = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        for fd, _ in fds:
            os.close(fd)
    return modes


def sattr3_size(size: int) -> bytes:
    return struct.pack(">IIIIQII", 0, 0, 0, 1, size, 0, 0)


def write_call(calls: NfsCalls, fh: bytes, stable: int, data: bytes = b"data"):
    return calls.call(NfsProc.WRITE, pack_fh(fh) + struct.pack(">QIII", 0, len(data), stable, len(data)) + data)


def post_op_mode(reply) -> int:
    """Mode in the post-op attributes of a wcc_data that starts the reply body."""
    if reply.args.unpack_bool():
        reply.args.unpack_fopaque(24)
    assert reply.args.unpack_bool()
    reply.args.unpack_uint()  # type
    return reply.args.unpack_uint()


def nfs_operation(calls: NfsCalls, directory: bytes, name: str, operation: str):
    status, fh = lookup(calls, directory, name)
    assert status == 0
    if operation == "write-unstable":
        return write_call(calls, fh, StableHow.UNSTABLE)
    if operation == "write-data-sync":
        return write_call(calls, fh, StableHow.DATA_SYNC)
    if operation == "write-file-sync":
        return write_call(calls, fh, StableHow.FILE_SYNC)
    if operation == "write-empty":  # the kernel leaves the bits to a write of nothing
        return write_call(calls, fh, StableHow.UNSTABLE, b"")
    size = 12 if operation.endswith("same-size") else 12345
    if operation.startswith("setattr"):
        return calls.call(NfsProc.SETATTR, pack_fh(fh) + sattr3_size(size) + struct.pack(">I", 0))
    return calls.call(NfsProc.CREATE, pack_diropargs(directory, name) + struct.pack(">I", 0) + sattr3_size(size))


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("caller", list(CALLERS))
def test_setid_bits_after_data_changes_match_the_kernel(nfsd, export_dir, tmp_path, caller, operation):
    expected = kernel_modes(tmp_path, CALLERS[caller], operation)
    uid, gid, groups = CALLERS[caller]
    calls = NfsCalls(nfsd, uid=uid, gid=gid, gids=groups)
    try:
        root = calls.root()
        for mode in MODES:
            path = setid_file(export_dir / f"nfs-{mode:o}", mode)
            reply = nfs_operation(calls, root, path.name, operation)
            assert reply.status == 0, (oct(mode), reply.status)
            if not operation.startswith("create"):  # CREATE's reply starts with the handle
                assert stat.S_IMODE(post_op_mode(reply)) == expected[mode], oct(mode)
    finally:
        calls.close()
    found = {mode: stat.S_IMODE(os.stat(export_dir / f"nfs-{mode:o}").st_mode) for mode in MODES}
    assert {oct(k): oct(v) for k, v in found.items()} == {oct(k): oct(v) for k, v in expected.items()}
    if caller == "root":
        assert found == {mode: mode for mode in MODES}  # CAP_FSETID: nothing cleared
    elif caller == "other" and operation != "write-empty":
        assert (found[0o6777], found[0o2767], found[0o6666]) == (0o777, 0o767, 0o666)


def test_write_by_a_squashed_root_or_nobody_clears_both_bits_of_a_root_owned_file(nfsd, exports, export_dir):
    """The issue's case: AUTH_SYS uid 65534 writes a root-owned 06777 file; and root squashed."""
    exports.add(Export("/sq", str(export_dir)))  # default rule: root squash
    for name, (uid, path) in {"nobody": (65534, "/e"), "squashed": (0, "/sq"), "root": (0, "/e")}.items():
        (export_dir / name).write_bytes(b"x")
        os.chmod(export_dir / name, 0o6777)
        calls = NfsCalls(nfsd, uid=uid, gid=uid)
        try:
            assert write_call(calls, lookup(calls, calls.root(path), name)[1], StableHow.UNSTABLE).status == 0
        finally:
            calls.close()
    assert stat.S_IMODE(os.stat(export_dir / "nobody").st_mode) == 0o777
    assert stat.S_IMODE(os.stat(export_dir / "squashed").st_mode) == 0o777
    assert stat.S_IMODE(os.stat(export_dir / "root").st_mode) == 0o6777


def test_a_mode_set_with_the_size_in_one_setattr_wins(nfsd, export_dir):
    """SETATTR size + mode: the size change clears the bits, then the requested mode is set
    (as truncate(2) then chmod(2) by the owner)."""
    path = export_dir / "f"
    path.write_bytes(b"x")
    os.chown(path, 1000, 1000)
    os.chmod(path, 0o644)
    calls = NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        fh = lookup(calls, calls.root(), "f")[1]
        args = pack_fh(fh) + struct.pack(">III", 1, 0o6755, 0) + struct.pack(">IIQII", 0, 1, 99, 0, 0) + struct.pack(">I", 0)
        assert calls.call(NfsProc.SETATTR, args).status == 0
    finally:
        calls.close()
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_size) == (0o6755, 99)


@pytest.mark.parametrize("caller", [(0, 0, ()), (1000, 1000, (3000,))], ids=["root", "owner"])
def test_setattr_of_the_group_clears_setid_bits_as_chown_does(nfsd, export_dir, tmp_path, caller):
    """Not a data change, but the same bits: SETATTR gid runs as the caller, so the kernel's
    chown rule applies (bits cleared even for root, S_ISGID kept without group-exec)."""
    expected = kernel_modes(tmp_path, caller, "chgrp")
    calls = NfsCalls(nfsd, uid=caller[0], gid=caller[1], gids=caller[2])
    try:
        root = calls.root()
        for mode in MODES:
            path = setid_file(export_dir / f"nfs-{mode:o}", mode)
            fh = lookup(calls, root, path.name)[1]
            args = pack_fh(fh) + struct.pack(">IIIIIIII", 0, 0, 1, 3000, 0, 0, 0, 0)
            assert calls.call(NfsProc.SETATTR, args).status == 0
    finally:
        calls.close()
    found = {mode: stat.S_IMODE(os.stat(export_dir / f"nfs-{mode:o}").st_mode) for mode in MODES}
    assert {oct(k): oct(v) for k, v in found.items()} == {oct(k): oct(v) for k, v in expected.items()}


def test_libnfs_bindings_writing_as_a_user_clear_the_bits_and_as_root_keep_them(nfsd_process, export_dir):
    libnfs = pytest.importorskip("libnfs")
    for name, owner in (("nobody-writes", 0), ("root-writes", 0), ("owner-truncates", 1000)):
        setid_file(export_dir / name, 0o6777, owner)
    nobody = libnfs.NFS(nfsd_process.url(uid=65534, gid=65534))
    handle = nobody.open("/nobody-writes", "r+")
    handle.write(bytearray(b"x"))
    handle.close()
    root = libnfs.NFS(nfsd_process.url(uid=0, gid=0))
    handle = root.open("/root-writes", "r+")
    handle.write(bytearray(b"x"))
    handle.close()
    owner = libnfs.NFS(nfsd_process.url(uid=1000, gid=1000))
    owner.open("/owner-truncates", "w").close()  # O_TRUNC: a SETATTR of size 0
    modes = {name: stat.S_IMODE(os.stat(export_dir / name).st_mode)
             for name in ("nobody-writes", "root-writes", "owner-truncates")}
    assert modes == {"nobody-writes": 0o777, "root-writes": 0o6777, "owner-truncates": 0o777}
    assert (export_dir / "nobody-writes").read_bytes().startswith(b"x")
    assert (export_dir / "owner-truncates").stat().st_size == 0
