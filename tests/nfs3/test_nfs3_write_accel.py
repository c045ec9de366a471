"""The compiled UNSTABLE WRITE (``acmenfs.nfs3._writeaccel.WriteGrants``) against the Python paths.

Sans-IO with bytes: one NfsServer and an accelerated ``FastPath`` lane on it.  A WRITE changes the
file, so it cannot be run twice and compared; instead every reply the lane sends is compared with
the reply the Python encoders make from the attributes around the call (``os.stat`` right before
and right after it: nothing else touches the file meanwhile), and the file with a model of its
bytes.  Calls the lane leaves (None, IN_POOL) are run by the general path, as the transport would.
Then what must never be written from a grant (a deleted file, a caller the mode now refuses,
set-id bits, a paused export, a quota that must be measured, anything that is not that very
WRITE), the duplicate request cache across the C and Python paths, COMMIT, and a real client.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acmenfs.nfs3 import client as nfs
from acmenfs.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, NfsProc, NfsStat
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.fastpath import FastPath, WriteGrants
from acmenfs.nfs3.procs_data import WRITE_TAIL
from acmenfs.nfs3.server import NfsServer
from acmenfs.nfs3.xdr import encode_wcc_data
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import IN_POOL
from acmenfs.oncrpc.drc import DuplicateRequestCache
from nfs3_helpers import RunningNfsServer

CLIENT = ("127.0.0.1", 903)
OWNER = 4242  # owns the test files, so modes decide what other callers may write
PAGE = os.sysconf("SC_PAGESIZE")

needs_accel = pytest.mark.skipif(WriteGrants is None,
                                 reason="acmenfs.nfs3._writeaccel not built (no compiler or headers)")


def test_the_write_accelerator_is_built_where_the_read_accelerator_is():
    from acmenfs.nfs3.fastpath import ReadGrants
    assert (WriteGrants is None) == (ReadGrants is None), "one accelerator built and not the other: see pip's output"


class Lane:
    """An NfsServer with an accelerated fast lane; setup calls and what the lane leaves take the general path."""

    def __init__(self, exports: ExportTable, state_dir: Path) -> None:
        self.server = NfsServer(exports, state_dir, threads=2)
        self.dispatcher = self.server.nfs_dispatcher([self.server.nfs_program(), self.server.mount_program()])
        self.dispatcher.fast_lane = None
        self.lane = FastPath(self.server.state, self.server.drc, self.server.call_stats, self.server,
                             self.dispatcher.count, accelerate=False, accelerate_writes=True)
        self.grants = self.lane.write_grants
        self.server._write_grants.append(self.grants)  # (counted in stats(), as the server's own lanes are)
        self.xid = 9000

    def record(self, fh: bytes, offset: int, data: bytes, *, stable: int = 0, uid: int = 0,
               xid: int | None = None) -> bytes:
        if xid is None:
            self.xid += 1
            xid = self.xid
        return rpc.encode_call(xid, NFS_PROGRAM, 3, NfsProc.WRITE, nfs.encode_write_args(fh, offset, data, stable),
                               cred_flavor=1, cred_body=rpc.encode_auth_sys(uid, uid))

    def general(self, proc: int, args: bytes, *, program: int = NFS_PROGRAM) -> bytes:
        record = rpc.encode_call(1, program, 3, proc, args, cred_flavor=1, cred_body=rpc.encode_auth_sys(0, 0))
        return self.run_general(record)[24:]

    def run_general(self, record: bytes, client: tuple = CLIENT) -> bytes:
        return b"".join(bytes(part) for part in self.dispatcher.call_here(record, client, "tcp"))

    def send(self, record: bytes, client: tuple = CLIENT):
        """The lane's answer: reply bytes, or None / IN_POOL / () as it returned them."""
        parts = self.lane(record, client)
        if parts is None or parts is IN_POOL or parts == ():
            return parts
        return b"".join(bytes(part) for part in parts)

    def answered_in_c(self) -> int:
        return self.grants.counts()[0]

    def close(self) -> None:
        self.server._shutdown_blocking()


def _exports(export_dir: Path, quota_bytes: int | None = None) -> ExportTable:
    return ExportTable([Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),),
                               quota_bytes=quota_bytes)])


@pytest.fixture
def lane(tmp_path: Path, export_dir: Path):
    calls = Lane(_exports(export_dir), tmp_path / "state")
    yield calls
    calls.close()


def _file(lane: Lane, export_dir: Path, data: bytes, name: str = "disk", mode: int = 0o644) -> bytes:
    path = export_dir / name
    path.write_bytes(data)
    os.chown(path, OWNER, OWNER)
    os.chmod(path, mode)
    root = nfs.decode_mnt_result(lane.general(1, nfs.encode_mnt_args("/e"), program=MOUNT_PROGRAM))
    return nfs.decode_lookup_result(lane.general(NfsProc.LOOKUP, nfs.encode_lookup_args(root, name)))[0]


def _expected(lane: Lane, xid: int, pre: os.stat_result, post: os.stat_result, count: int, reply: bytes) -> bytes:
    """What the Python encoders make of this WRITE: the fsid is taken from the reply (its fattr3)."""
    fsid = struct.unpack_from(">Q", reply, 24 + 4 + 28 + 4 + 44)[0]
    root_dev = next(iter(lane.server.state._backends.values()))[1].root_dev
    return (rpc.SUCCESS_HEADER.pack(xid, 1) + b"\0\0\0\0" + encode_wcc_data(pre, post, fsid, root_dev)
            + WRITE_TAIL.pack(count, 0, lane.server.state.committer.verifier))


def _write(lane: Lane, path: Path, fh: bytes, offset: int, data: bytes, *, uid: int = 0, stable: int = 0):
    """One WRITE through the lane, checked; a call it leaves runs on the general path.  -> (status, in C)."""
    record = lane.record(fh, offset, data, uid=uid, stable=stable)
    xid = lane.xid
    before, pre = lane.answered_in_c(), os.stat(path)
    reply = lane.send(record)
    in_c = lane.answered_in_c() - before
    if isinstance(reply, bytes):
        assert reply == _expected(lane, xid, pre, os.stat(path), len(data), reply)
        return NfsStat.OK, in_c
    assert in_c == 0 and reply in (None, IN_POOL)
    return struct.unpack_from(">I", lane.run_general(record), 24)[0], 0


@needs_accel
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 100_000), steps=st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 30), st.sampled_from([4096, 8192, 65536, 65537, 100, 1]),
              st.sampled_from([0, 0, 0, 1, 2]), st.sampled_from([0, OWNER, 1000]), st.booleans()),
    st.tuples(st.just("truncate"), st.integers(0, 120_000)),
    st.tuples(st.just("chmod"), st.sampled_from([0o644, 0o666, 0o600, 0o620, 0o602, 0o444, 0o6666])),
    st.tuples(st.just("chgrp"), st.sampled_from([OWNER, 1000])),
), min_size=1, max_size=25))
def test_writes_answered_in_c_are_the_python_paths_bytes_and_land(lane, export_dir, size, steps):
    model = bytearray(os.urandom(size))
    fh = _file(lane, export_dir, bytes(model))
    path = export_dir / "disk"
    for step in steps + [("write", 0, 4096, 0, 0, False), ("write", 1, 4096, 0, 0, False)]:
        kind = step[0]
        if kind == "write":
            _, page, count, stable, uid, misaligned = step
            offset = page * PAGE + (512 if misaligned else 0)
            data = os.urandom(count)
            status, _ = _write(lane, path, fh, offset, data, uid=uid, stable=stable)
            if status == NfsStat.OK:
                if offset > len(model):
                    model.extend(bytes(offset - len(model)))
                model[offset:offset + count] = data
            else:
                assert status == NfsStat.ACCES and uid == 1000
        elif kind == "truncate":
            os.truncate(path, step[1])
            del model[step[1]:]
            model.extend(bytes(step[1] - len(model)))
        elif kind == "chmod":
            os.chmod(path, step[1])
        else:
            os.chown(path, OWNER, step[1])
        assert path.read_bytes() == model, step
    assert lane.answered_in_c() > 0  # (the last write, after one that made the grant)


@needs_accel
def test_page_aligned_unstable_writes_after_the_first_are_answered_in_c(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 20))
    path = export_dir / "disk"
    for page, count in [(0, 4096), (3, 4096), (16, 65536), (255, 4096), (256, 8192)]:  # (the last grows the file)
        assert _write(lane, path, fh, page * PAGE, os.urandom(count))[0] == NfsStat.OK
    calls, size, seconds = lane.grants.counts()
    assert calls == 4 and size == 4096 + 65536 + 4096 + 8192 and seconds > 0  # the first WRITE made the grant
    assert len(lane.grants) == 1
    stats = lane.server.stats()
    assert stats["calls"][("NFS3", "WRITE")] == 5 and stats["bytes_written"] == 4096 * 3 + 65536 + 8192


@needs_accel
def test_what_c_leaves_to_python(lane, export_dir):
    """Unaligned, stable, larger than 64 KiB, or count != data: never in C (the Python path answers)."""
    fh = _file(lane, export_dir, bytes(1 << 20))
    path = export_dir / "disk"
    _write(lane, path, fh, 0, os.urandom(4096))
    for offset, count, stable in [(512, 4096, 0), (0, 4000, 0), (0, 4096, 1), (0, 4096, 2), (0, 65536 + PAGE, 0)]:
        status, in_c = _write(lane, path, fh, offset, os.urandom(count), stable=stable)
        assert status == NfsStat.OK and in_c == 0, (offset, count, stable)
    assert _write(lane, path, fh, PAGE, os.urandom(4096)) == (NfsStat.OK, 1)


@needs_accel
def test_only_that_very_write_is_answered(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 20))
    lane.send(lane.record(fh, 0, os.urandom(4096)))
    grants = lane.grants
    record = lane.record(fh, PAGE, os.urandom(4096))
    for cut in range(len(record)):  # every truncation
        assert grants.answer(record[:cut], CLIENT) is None
    assert grants.answer(record, ("127.0.0.2", 903)) is None  # another client address
    assert grants.answer(lane.record(fh, PAGE, os.urandom(4096), uid=7), CLIENT) is None  # another credential
    forged = bytes([fh[0] ^ 1]) + fh[1:]
    assert grants.answer(lane.record(forged, PAGE, os.urandom(4096)), CLIENT) is None
    for offset, value in [(4, 1), (8, 3), (12, 100005), (16, 4), (20, 6)]:  # not a CALL / RPC v2 / NFS / v3 / WRITE
        changed = bytearray(record)
        struct.pack_into(">I", changed, offset, value)
        assert grants.answer(bytes(changed), CLIENT) is None
    count_at = len(record) - 4096 - 12  # count, stable, data length, data
    changed = bytearray(record)
    struct.pack_into(">I", changed, count_at, 4095)
    assert grants.answer(bytes(changed), CLIENT) is None  # count != data length
    changed = bytearray(record)
    struct.pack_into(">I", changed, count_at + 8, 8192)
    assert grants.answer(bytes(changed), CLIENT) is None  # data longer than the record
    assert grants.counts()[0] == 0
    assert grants.answer(record, CLIENT) is not None and grants.counts()[0] == 1


@needs_accel
def test_a_retransmission_gets_the_first_reply_whichever_path_ran_it(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 20))
    path = export_dir / "disk"
    lane.send(lane.record(fh, 0, os.urandom(4096)))  # the grant
    first_data, second_data = os.urandom(4096), os.urandom(4096)
    first = lane.record(fh, PAGE, first_data)
    reply = lane.send(first)
    assert lane.answered_in_c() == 1
    assert lane.send(lane.record(fh, PAGE, second_data)) is not None
    replays = lane.dispatcher.counters().get("drc_replays", 0)
    assert lane.send(first) == reply  # replayed by C's duplicate answer, not written again
    assert lane.run_general(first) == reply  # and by the general path: C's DRC key is Python's
    assert lane.dispatcher.counters()["drc_replays"] == replays + 2
    assert path.read_bytes()[PAGE:2 * PAGE] == second_data
    assert lane.answered_in_c() == 2
    third = lane.record(fh, 2 * PAGE, os.urandom(4096))  # first run by the general path
    general = lane.run_general(third)
    assert lane.send(third) == general and lane.answered_in_c() == 2


@needs_accel
def test_a_deleted_file_is_stale_and_its_grant_forgotten(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 16))
    lane.send(lane.record(fh, 0, os.urandom(4096)))
    assert len(lane.grants) == 1
    os.unlink(export_dir / "disk")
    record = lane.record(fh, PAGE, os.urandom(4096))
    assert lane.grants.answer(record, CLIENT) is None and len(lane.grants) == 0
    assert struct.unpack_from(">I", lane.run_general(record), 24)[0] == NfsStat.STALE


@needs_accel
def test_a_caller_the_mode_now_refuses_is_refused(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 16), mode=0o666)
    path = export_dir / "disk"
    assert _write(lane, path, fh, 0, os.urandom(4096), uid=1000)[0] == NfsStat.OK  # other may write: granted
    assert _write(lane, path, fh, 0, os.urandom(4096), uid=1000) == (NfsStat.OK, 1)
    os.chmod(path, 0o644)
    assert _write(lane, path, fh, 0, os.urandom(4096), uid=1000) == (NfsStat.ACCES, 0)
    _write(lane, path, fh, 0, os.urandom(4096), uid=OWNER)
    assert _write(lane, path, fh, 0, os.urandom(4096), uid=OWNER) == (NfsStat.OK, 1)  # the owner may always write


@needs_accel
def test_set_id_bits_are_cleared_by_python_not_kept_by_c(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 16), mode=0o666)
    path = export_dir / "disk"
    _write(lane, path, fh, 0, os.urandom(4096), uid=1000)
    os.chmod(path, 0o6666)
    assert _write(lane, path, fh, 0, os.urandom(4096), uid=1000) == (NfsStat.OK, 0)
    assert os.stat(path).st_mode & 0o6000 == 0  # as the kernel does for a caller without CAP_FSETID
    assert _write(lane, path, fh, 0, os.urandom(4096), uid=1000) == (NfsStat.OK, 1)


@needs_accel
def test_paused_inline_writes_go_to_the_thread_pool(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 16))
    lane.send(lane.record(fh, 0, os.urandom(4096)))
    backend = next(iter(lane.server.state._backends.values()))[1]
    backend.inline_writes.paused_until = time.monotonic() + 60
    record = lane.record(fh, PAGE, os.urandom(4096))
    assert lane.send(record) is IN_POOL and lane.answered_in_c() == 0
    backend.inline_writes.paused_until = 0.0
    assert lane.send(record) is not None and lane.answered_in_c() == 1  # (the DRC entry was dropped: new)


@needs_accel
def test_a_write_that_blocked_is_reported_to_the_pause(lane, export_dir, monkeypatch):
    """After a write over INLINE_CHANGE_MAX_BLOCKED_SECONDS C calls ``InlinePause.finish`` as Python
    does (it decides whether the export pauses); a page-cache write is well under it."""
    fh = _file(lane, export_dir, bytes(1 << 16))
    lane.send(lane.record(fh, 0, os.urandom(4096)))
    backend = next(iter(lane.server.state._backends.values()))[1]
    seen = []
    monkeypatch.setattr(type(backend.inline_writes), "finish",
                        lambda self, started, directory: seen.append((started, directory)))
    assert lane.send(lane.record(fh, PAGE, os.urandom(4096))) is not None and lane.answered_in_c() == 1
    assert seen == []
    monkeypatch.setattr("acmenfs.fs.local_common.INLINE_CHANGE_MAX_BLOCKED_SECONDS", -1.0)
    grants = WriteGrants(lane.server.state, lane.server.drc, lane.lane._duplicate)  # (reads it when made)
    node = backend.node(lane.server.state.codec.decode(fh)[1])
    grants.grant(lane.record(fh, 0, b"x"), CLIENT[0], node, node.data_fd(writable=True), 0, 0, (), 1,
                 backend.root_dev, lane.server.state.generation, backend)
    assert grants.answer(lane.record(fh, 2 * PAGE, os.urandom(4096)), CLIENT) is not None
    assert len(seen) == 1 and seen[0][1] == backend.directory and seen[0][0][1] == -1  # (not watching)


@needs_accel
def test_a_quota_leaves_writes_that_may_allocate_to_python(tmp_path, export_dir):
    lane = Lane(_exports(export_dir, quota_bytes=64 << 20), tmp_path / "state")
    try:
        sparse = _file(lane, export_dir, b"", name="sparse")
        os.truncate(export_dir / "sparse", 1 << 20)
        full = _file(lane, export_dir, os.urandom(1 << 20), name="full")
        for fh, path in [(sparse, export_dir / "sparse"), (full, export_dir / "full")]:
            _write(lane, path, fh, 0, os.urandom(4096))
        assert _write(lane, export_dir / "sparse", sparse, 8 * PAGE, os.urandom(4096)) == (NfsStat.OK, 0)
        assert _write(lane, export_dir / "full", full, 8 * PAGE, os.urandom(4096)) == (NfsStat.OK, 1)
        assert _write(lane, export_dir / "full", full, 1 << 20, os.urandom(4096)) == (NfsStat.OK, 0)  # grows
    finally:
        lane.close()


@needs_accel
def test_commit_covers_what_c_wrote(lane, export_dir):
    fh = _file(lane, export_dir, bytes(1 << 16))
    committer = lane.server.state.committer
    lane.send(lane.record(fh, 0, os.urandom(4096)))
    committer.durable.wait_for(committer.ticket(), timeout=30)
    assert committer.ticket() is None  # nothing unstable left
    lane.send(lane.record(fh, PAGE, os.urandom(4096)))
    assert lane.answered_in_c() == 1
    ticket = committer.ticket()
    assert ticket is not None  # C marked the file dirty: the next COMMIT fsyncs it
    committer.durable.wait_for(ticket, timeout=30)
    record = rpc.encode_call(77, NFS_PROGRAM, 3, NfsProc.COMMIT, nfs.encode_fh_args(fh) + struct.pack(">QI", 0, 0),
                             cred_flavor=1, cred_body=rpc.encode_auth_sys(0, 0))
    reply = b"".join(bytes(part) for part in asyncio.run(
        lane.dispatcher.run_async(lane.dispatcher.begin(record, CLIENT, "tcp"))))
    assert struct.unpack_from(">I", reply, 24)[0] == NfsStat.OK and reply[-8:] == committer.verifier


@needs_accel
@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_garbage_is_never_answered(garbage):
    class Committer:
        verifier = b"12345678"

    class State:
        _generation = 0
        committer = Committer()

    grants = WriteGrants(State(), DuplicateRequestCache(), lambda status, token: None)
    assert grants.answer(garbage, CLIENT) is None


_LIBNFS_WRITER = """
import sys, libnfs
client = libnfs.NFS(sys.argv[1])  # (kept: the handle dies with it)
handle = client.open("/f.bin", "r+b")
data = sys.stdin.buffer.read()
for at in range(0, len(data), 4096):
    handle.write(bytearray(data[at:at + 4096]))
handle.close()
"""


@needs_accel
def test_a_real_client_writes_through_it_and_the_calls_are_counted(tmp_path, export_dir):
    """libnfs writes a file 4 KiB at a time on one connection: the first WRITE makes the grant, the
    rest are answered in C; the data is right, and the server counts every WRITE and its bytes."""
    data = os.urandom(40 * 4096)
    (export_dir / "f.bin").write_bytes(bytes(len(data)))
    running = RunningNfsServer(_exports(export_dir), tmp_path / "state")
    try:  # (libnfs in a process of its own: its calls hold the GIL the in-process server needs)
        out = subprocess.run([sys.executable, "-c", _LIBNFS_WRITER, running.url()], input=data,
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert (export_dir / "f.bin").read_bytes() == data
        answered = sum(grants.counts()[0] for grants in running.server._write_grants)
        stats = running.server.stats()
        assert answered >= 39
        assert stats["calls"][("NFS3", "WRITE")] == 40
        assert stats["bytes_written"] == len(data)
    finally:
        running.stop()


@needs_accel
def test_a_failing_duplicate_request_cache_leaves_the_call_to_the_general_path(lane, export_dir, monkeypatch):
    fh = _file(lane, export_dir, bytes(1 << 16))
    lane.send(lane.record(fh, 0, os.urandom(4096)))
    data = os.urandom(4096)

    def broken(key):
        raise RuntimeError("no DRC today")

    monkeypatch.setattr(lane.server.drc, "check", broken)
    assert lane.send(lane.record(fh, PAGE, data)) is None and lane.answered_in_c() == 0
    assert (export_dir / "disk").read_bytes()[PAGE:2 * PAGE] == bytes(PAGE)  # not written
