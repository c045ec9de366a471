"""The compiled READ (``acmenfs.nfs3._readaccel.ReadGrants``) against the pure-Python fast path.

Sans-IO with bytes: one NfsServer, two ``FastPath`` lanes on it, one with the accelerator and one
without.  Each READ goes to the Python lane, the accelerated lane, then the Python lane again,
with the same xid; the accelerated reply must be the bytes of the Python reply made right after
it (a read may move atime once, under relatime, so the reply before can differ by that).  Then
what must never be answered from a grant: a revoked rule, a deleted file, a caller the mode bits
now refuse, cold data, anything that is not that very READ.  Last, a real client (``nfs-cat``)
over TCP, with the server's counters showing the calls answered in C.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acmenfs.nfs3 import client as nfs
from acmenfs.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, NfsProc, NfsStat
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.fastpath import FastPath, ReadGrants
from acmenfs.nfs3.server import NfsServer
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import IN_POOL
from nfs3_helpers import RunningNfsServer, require_tool

CLIENT = ("127.0.0.1", 902)
OWNER = 4242  # owns the test files, so modes decide what other callers may read


def test_the_accelerator_is_built_where_a_compiler_and_pythons_headers_are():
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if ReadGrants is None:
        assert not (headers.exists() and shutil.which("gcc")), \
            "gcc and Python.h are here but acmenfs.nfs3._readaccel was not built: see pip's build output"


needs_accel = pytest.mark.skipif(ReadGrants is None, reason="acmenfs.nfs3._readaccel not built (no compiler or headers)")


class Lanes:
    """An NfsServer with a Python fast lane and an accelerated one; setup calls take the general path."""

    def __init__(self, exports: ExportTable, state_dir: Path) -> None:
        self.server = NfsServer(exports, state_dir, threads=2)
        self.dispatcher = self.server.nfs_dispatcher([self.server.nfs_program(), self.server.mount_program()])
        self.dispatcher.fast_lane = None
        self.python = FastPath(self.server.state, self.server.drc, self.server.call_stats, self.server,
                               self.dispatcher.count, accelerate=False)
        self.accel = FastPath(self.server.state, self.server.drc, self.server.call_stats, self.server,
                              self.dispatcher.count, accelerate=True)
        self.xid = 5000

    def record(self, proc: int, args: bytes, *, uid: int = 0, xid: int | None = None) -> bytes:
        if xid is None:
            self.xid += 1
            xid = self.xid
        return rpc.encode_call(xid, NFS_PROGRAM, 3, proc, args, cred_flavor=1,
                               cred_body=rpc.encode_auth_sys(uid, uid))

    def general(self, proc: int, args: bytes, *, program: int = NFS_PROGRAM) -> bytes:
        record = rpc.encode_call(1, program, 3, proc, args, cred_flavor=1, cred_body=rpc.encode_auth_sys(0, 0))
        return b"".join(bytes(part) for part in self.dispatcher.call_here(record, CLIENT, "tcp"))[24:]

    @staticmethod
    def answer(lane: FastPath, record: bytes, client: tuple = CLIENT):
        parts = lane(record, client)
        if parts is None or parts is IN_POOL:
            return parts
        return b"".join(part.read() if hasattr(part, "read") else bytes(part) for part in parts)

    def read_thrice(self, fh: bytes, offset: int, count: int, uid: int = 0) -> tuple:
        """(Python reply, accelerated reply, Python reply), one xid: each None/IN_POOL or bytes."""
        record = self.record(NfsProc.READ, nfs.encode_read_args(fh, offset, count), uid=uid)
        return (self.answer(self.python, record), self.answer(self.accel, record), self.answer(self.python, record))

    def refusal(self, fh: bytes, uid: int = 0) -> bytes:
        """The general path's reply to a READ the lanes left to it (an error: they answer None)."""
        record = self.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096), uid=uid)
        return b"".join(bytes(part) for part in self.dispatcher.call_here(record, CLIENT, "tcp"))

    def close(self) -> None:
        self.server._shutdown_blocking()


def _exports(export_dir: Path, *rules: ClientRule) -> ExportTable:
    return ExportTable([Export("/e", str(export_dir), rules=rules or (ClientRule("127.0.0.1", squash="none"),))])


@pytest.fixture
def lanes(tmp_path: Path, export_dir: Path):
    calls = Lanes(_exports(export_dir), tmp_path / "state")
    yield calls
    calls.close()


def _file(lanes: Lanes, export_dir: Path, data: bytes, name: str = "disk") -> bytes:
    path = export_dir / name
    path.write_bytes(data)
    os.chown(path, OWNER, OWNER)
    root = nfs.decode_mnt_result(lanes.general(1, nfs.encode_mnt_args("/e"), program=MOUNT_PROGRAM))
    return nfs.decode_lookup_result(lanes.general(NfsProc.LOOKUP, nfs.encode_lookup_args(root, name)))[0]


def _answered_in_c(lanes: Lanes, fh: bytes, uid: int = 0) -> int:
    """Read twice (the first READ makes the grant, the second is answered in C); -> C's call count."""
    lanes.read_thrice(fh, 0, 4096, uid=uid)
    calls = lanes.accel.grants.counts()[0]
    _, accel, after = lanes.read_thrice(fh, 0, 4096, uid=uid)
    assert accel == after and lanes.accel.grants.counts()[0] == calls + 1
    return calls + 1


def _status(reply: bytes) -> int:
    return struct.unpack_from(">I", reply, 24)[0]


@needs_accel
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 150_000), steps=st.lists(st.one_of(
    st.tuples(st.just("read"), st.integers(0, 160_000), st.integers(0, 70_000), st.sampled_from([0, OWNER, 1000])),
    st.tuples(st.just("truncate"), st.integers(0, 150_000)),
    st.tuples(st.just("write"), st.integers(0, 150_000), st.integers(1, 5000)),
    st.tuples(st.just("chmod"), st.sampled_from([0o644, 0o600, 0o640, 0o604, 0o000, 0o4755])),
    st.tuples(st.just("chgrp"), st.sampled_from([OWNER, 1000])),
), min_size=1, max_size=25))
def test_granted_reads_are_answered_in_c_with_the_python_paths_bytes(lanes, export_dir, size, steps):
    fh = _file(lanes, export_dir, os.urandom(size))
    path = export_dir / "disk"
    for step in steps + [("read", 0, 4096, 0), ("read", 0, 4096, 0)]:
        kind = step[0]
        if kind == "read":
            before, accel, after = lanes.read_thrice(fh, step[1], step[2], uid=step[3])
            assert accel == after, step
            assert before is None or before is IN_POOL or _status(before) == _status(after)
        elif kind == "truncate":
            os.truncate(path, step[1])
        elif kind == "write":
            with open(path, "r+b") as f:
                f.seek(step[1])
                f.write(os.urandom(step[2]))
        elif kind == "chmod":
            os.chmod(path, step[1])
        else:
            os.chown(path, OWNER, step[1])
    assert lanes.accel.grants.counts()[0] > 0 or os.path.getsize(path) == 0


@needs_accel
def test_reads_after_the_first_are_answered_in_c(lanes, export_dir):
    data = os.urandom(100_000)
    fh = _file(lanes, export_dir, data)
    for offset, count in [(0, 4096), (4096, 4096), (99_000, 4096), (1, 3), (50_000, 65_536)]:
        _, accel, after = lanes.read_thrice(fh, offset, count)
        assert accel == after
        reply = nfs.decode_read_result(accel[24:])
        assert reply[0] == data[offset:offset + count]
    calls, size, seconds = lanes.accel.grants.counts()
    assert calls == 4 and size == 4096 + 1000 + 3 + 50_000 and seconds > 0  # the first READ made the grant
    assert len(lanes.accel.grants) == 1


@needs_accel
def test_a_removed_rule_is_refused_at_once(tmp_path, export_dir):
    exports = _exports(export_dir)
    lanes = Lanes(exports, tmp_path / "state")
    try:
        fh = _file(lanes, export_dir, os.urandom(8192))
        assert _answered_in_c(lanes, fh) == 1
        exports.add(Export("/e", str(export_dir), rules=(ClientRule("10.9.9.9", squash="none"),)))
        _, accel, after = lanes.read_thrice(fh, 0, 4096)
        assert accel is None and after is None  # the general path answers: ACCES
        assert _status(lanes.refusal(fh)) == NfsStat.ACCES
        assert lanes.accel.grants.counts()[0] == 1  # (not answered in C)
    finally:
        lanes.close()


@needs_accel
def test_a_caller_the_mode_now_refuses_is_refused(lanes, export_dir):
    fh = _file(lanes, export_dir, os.urandom(8192))
    assert _answered_in_c(lanes, fh, uid=1000) == 1  # other may read (0o644): granted
    os.chmod(export_dir / "disk", 0o640)
    _, accel, after = lanes.read_thrice(fh, 0, 4096, uid=1000)
    assert accel is None and after is None  # the general path answers: ACCES
    assert _status(lanes.refusal(fh, uid=1000)) == NfsStat.ACCES
    assert lanes.accel.grants.counts()[0] == 1
    _, accel, after = lanes.read_thrice(fh, 0, 4096, uid=OWNER)  # the owner may always read
    assert _status(accel) == NfsStat.OK and accel == after


@needs_accel
def test_a_deleted_file_is_stale_not_served(lanes, export_dir):
    fh = _file(lanes, export_dir, os.urandom(8192))
    assert _answered_in_c(lanes, fh) == 1
    os.unlink(export_dir / "disk")
    assert len(lanes.accel.grants) == 1
    assert Lanes.answer(lanes.accel, lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096))) is None
    assert len(lanes.accel.grants) == 0  # forgotten: it would pin the deleted file's pages
    assert _status(lanes.refusal(fh)) == NfsStat.STALE
    assert lanes.accel.grants.counts()[0] == 1


@needs_accel
def test_cold_data_is_not_answered_in_c(lanes, export_dir):
    """C declines a range not in the page cache.  Its failed RWF_NOWAIT read starts readahead, so
    the Python path right after may find the data already there and answer it, or go to the pool:
    either is right, but the call must not have been answered in C."""
    data = os.urandom(1 << 20)
    fh = _file(lanes, export_dir, data)
    calls = _answered_in_c(lanes, fh)
    fd = os.open(export_dir / "disk", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # (clean pages: dropped; no probe, it would read ahead)
    finally:
        os.close(fd)
    reply = Lanes.answer(lanes.accel, lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 768 * 1024, 4096)))
    assert lanes.accel.grants.counts()[0] == calls
    assert reply is IN_POOL or bytes(nfs.decode_read_result(reply[24:])[0]) == data[768 * 1024:772 * 1024]


@needs_accel
def test_only_that_very_read_is_answered(lanes, export_dir):
    fh = _file(lanes, export_dir, os.urandom(8192))
    record = lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096))
    Lanes.answer(lanes.accel, record)
    grants = lanes.accel.grants
    assert grants.answer(record, CLIENT[0]) is not None
    for cut in range(len(record)):  # every truncation
        assert grants.answer(record[:cut], CLIENT[0]) is None
    assert grants.answer(record, "127.0.0.2") is None  # another client
    other = lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096), uid=7)
    assert grants.answer(other, CLIENT[0]) is None  # another credential
    forged = bytes([fh[0] ^ 1]) + fh[1:]
    assert grants.answer(lanes.record(NfsProc.READ, nfs.encode_read_args(forged, 0, 4096)), CLIENT[0]) is None
    assert grants.answer(lanes.record(NfsProc.GETATTR, nfs.encode_fh_args(fh)), CLIENT[0]) is None
    for offset, value in [(4, 1), (8, 3), (12, 100005), (16, 4), (20, 7)]:  # not a CALL / RPC v2 / NFS / v3 / READ
        changed = bytearray(record)
        struct.pack_into(">I", changed, offset, value)
        assert grants.answer(bytes(changed), CLIENT[0]) is None
    big = lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 65_537))
    assert grants.answer(big, CLIENT[0]) is None  # larger reads: sendfile, by the Python path
    assert grants.answer(lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 8192, 10)), CLIENT[0]) is None  # at EOF
    again = lanes.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096), xid=0xDEADBEEF)
    assert grants.answer(again, CLIENT[0])[:4] == b"\xde\xad\xbe\xef"


@needs_accel
@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_garbage_is_never_answered(garbage):
    class State:
        _generation = 0
    assert ReadGrants(State()).answer(garbage, "127.0.0.1") is None


_LIBNFS_READER = """
import sys, libnfs
client = libnfs.NFS(sys.argv[1])  # (kept: the handle dies with it)
handle = client.open("/f.bin", "rb")
sys.stdout.buffer.write(b"".join(bytes(handle.read(4096)) for _ in range(41)))
"""


@needs_accel
def test_a_real_client_reads_through_it_and_the_calls_are_counted(tmp_path, export_dir):
    """libnfs reads a file 4 KiB at a time on one connection (one credential): the first READ makes
    the grant, the rest are answered in C; the data is right, and the server counts every READ."""
    data = os.urandom(40 * 4096 + 123)
    (export_dir / "f.bin").write_bytes(data)
    running = RunningNfsServer(_exports(export_dir), tmp_path / "state")
    try:  # (libnfs in a process of its own: its calls hold the GIL the in-process server needs)
        out = subprocess.run([sys.executable, "-c", _LIBNFS_READER, running.url()], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == data
        nfs_cat = require_tool("nfs-cat")
        out = subprocess.run([nfs_cat, running.url(path="/f.bin")], capture_output=True, timeout=60)
        assert out.returncode == 0 and out.stdout == data
        answered = sum(grants.counts()[0] for grants in running.server._read_grants)
        stats = running.server.stats()
        assert answered >= 39
        assert stats["calls"][("NFS3", "READ")] >= 41 + 1
        assert stats["bytes_read"] == 2 * len(data)
    finally:
        running.stop()
