"""The v3 fast path (``acmenfs.nfs3.fastpath``) against the general path, with bytes (sans-IO).

One NfsServer, one dispatcher; each call is made with the fast lane on and then off
(``dispatcher.fast_lane = None``), and the replies must be the same bytes where the file did
not change in between (GETATTR, READ, every error), the same results where it did (WRITE's
wcc times move).  Then what the lane answers itself: DRC replays, IN_POOL for calls that
would wait, None for everything it leaves alone, and that its calls are counted.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from acmenfs.nfs3 import client as nfs
from acmenfs.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, NfsProc, StableHow
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.server import NfsServer
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import IN_POOL

CLIENT = ("127.0.0.1", 901)


class Twin:
    """An NfsServer's NFS + MOUNT programs behind ``nfs_dispatcher``; calls with or without its fast lane."""

    def __init__(self, exports: ExportTable, state_dir: Path) -> None:
        self.server = NfsServer(exports, state_dir, threads=2)
        self.dispatcher = self.server.nfs_dispatcher([self.server.nfs_program(), self.server.mount_program()])
        self.lane = self.dispatcher.fast_lane
        self.xid = 1000

    def record(self, proc: int, args: bytes, *, program: int = NFS_PROGRAM, uid: int = 0, xid: int | None = None,
               rpcvers: int = 2) -> bytes:
        if xid is None:
            self.xid += 1
            xid = self.xid
        call = bytearray(rpc.encode_call(xid, program, 3, proc, args, cred_flavor=1,
                                         cred_body=rpc.encode_auth_sys(uid, uid)))
        struct.pack_into(">I", call, 8, rpcvers)
        return bytes(call)

    def send(self, record: bytes, *, fast: bool, client: tuple = CLIENT) -> bytes | None:
        self.dispatcher.fast_lane = self.lane if fast else None
        try:
            parts = self.dispatcher.call_here(record, client, "tcp")
        finally:
            self.dispatcher.fast_lane = self.lane
        return None if parts is None else b"".join(bytes(part) for part in parts)

    def both(self, proc: int, args: bytes, **caller) -> tuple[bytes, bytes]:
        """(reply with the lane, reply without it), each its own call."""
        fast = self.send(self.record(proc, args, **caller), fast=True)
        general = self.send(self.record(proc, args, **caller), fast=False)
        return fast[4:], general[4:]  # without the xid

    def body(self, proc: int, args: bytes, **caller) -> bytes:
        reply = self.send(self.record(proc, args, **caller), fast=False)
        return reply[24:]

    def close(self) -> None:
        self.server._shutdown_blocking()


@pytest.fixture
def twin(tmp_path: Path, export_dir: Path):
    exports = ExportTable([
        Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),)),
        Export("/ro", str(export_dir), read_only=True, rules=(ClientRule("127.0.0.1", squash="none"),)),
    ])
    calls = Twin(exports, tmp_path / "state")
    yield calls
    calls.close()


def _setup(twin: Twin, export_dir: Path, name: str = "disk", size: int = 64 * 1024) -> tuple[bytes, bytes]:
    """(root handle, handle of a ``size``-byte file of random bytes, read once so atime settles)."""
    (export_dir / name).write_bytes(os.urandom(size))
    root = nfs.decode_mnt_result(twin.body(1, nfs.encode_mnt_args("/e"), program=MOUNT_PROGRAM))
    fh = nfs.decode_lookup_result(twin.body(NfsProc.LOOKUP, nfs.encode_lookup_args(root, name)))[0]
    twin.body(NfsProc.READ, nfs.encode_read_args(fh, 0, 1))
    return root, fh


def test_getattr_read_and_their_errors_are_the_same_bytes_on_both_paths(twin, export_dir):
    root, fh = _setup(twin, export_dir)
    forged = bytes([fh[0] ^ 1]) + fh[1:]
    cases = [
        (NfsProc.GETATTR, nfs.encode_fh_args(fh)),
        (NfsProc.GETATTR, nfs.encode_fh_args(root)),
        (NfsProc.GETATTR, nfs.encode_fh_args(forged)),                   # BADHANDLE
        (NfsProc.GETATTR, nfs.encode_fh_args(fh)[:-2]),                  # truncated: GARBAGE_ARGS
        (NfsProc.READ, nfs.encode_read_args(fh, 4096, 4096)),
        (NfsProc.READ, nfs.encode_read_args(fh, 100, 1001)),             # unaligned, padded
        (NfsProc.READ, nfs.encode_read_args(fh, 60 * 1024, 8192)),       # short: eof
        (NfsProc.READ, nfs.encode_read_args(fh, 1 << 40, 4096)),         # past the end
        (NfsProc.READ, nfs.encode_read_args(fh, 0, 0)),
        (NfsProc.READ, nfs.encode_read_args(root, 0, 4096)),             # a directory: ISDIR
        (NfsProc.READ, nfs.encode_read_args(forged, 0, 4096)),
        (NfsProc.READ, nfs.encode_read_args(fh, 0, 4096)[:-3]),          # truncated
    ]
    for proc, args in cases:
        fast, general = twin.both(proc, args)
        assert fast == general, (proc, args.hex())
    fast, general = twin.both(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096), uid=4242)  # not the owner, mode 0644
    assert fast == general


def test_a_denied_client_gets_the_same_refusal_from_both_paths(twin, export_dir):
    _, fh = _setup(twin, export_dir)
    other = ("10.1.2.3", 700)
    replies = [twin.send(twin.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4096)), fast=fast, client=other)
               for fast in (True, False)]
    assert replies[0][4:] == replies[1][4:] and struct.unpack_from(">I", replies[0], 24)[0] == 13  # ACCES


def test_writes_give_the_same_results_and_data_on_both_paths(twin, export_dir):
    root, fh = _setup(twin, export_dir)
    for offset, data in ((8192, os.urandom(4096)), (5, b"abc"), (70 * 1024, os.urandom(1000))):
        fast, general = twin.both(NfsProc.WRITE, nfs.encode_write_args(fh, offset, data, StableHow.UNSTABLE))
        assert len(fast) == len(general)
        for reply in (fast, general):
            result = nfs.decode_write_result(reply[20:])
            assert (result.count, result.committed, result.verifier) == \
                (len(data), StableHow.UNSTABLE, twin.server.state.committer.verifier)
        assert (export_dir / "disk").read_bytes()[offset:offset + len(data)] == data
    ro_root = nfs.decode_mnt_result(twin.body(1, nfs.encode_mnt_args("/ro"), program=MOUNT_PROGRAM))
    ro_fh = nfs.decode_lookup_result(twin.body(NfsProc.LOOKUP, nfs.encode_lookup_args(ro_root, "disk")))[0]
    bad = [nfs.encode_write_args(ro_fh, 0, b"x", StableHow.UNSTABLE),      # ROFS
           nfs.encode_write_args(root, 0, b"x", StableHow.UNSTABLE),       # ISDIR
           nfs.encode_write_args(fh, 0, b"xyz", StableHow.UNSTABLE)[:-4],  # data truncated
           nfs.encode_write_args(fh, 0, b"x", 3)]                          # bad stable_how
    for args in bad:
        fast, general = twin.both(NfsProc.WRITE, args)
        assert fast[:24] == general[:24], args.hex()  # same RPC and NFS status (the wcc times may move)
    before = (export_dir / "disk").read_bytes()
    assert before[0:1] != b"x"


def test_a_retransmitted_write_is_answered_from_the_cache_by_either_path(twin, export_dir):
    _, fh = _setup(twin, export_dir)
    counters = twin.dispatcher.counters
    for first_fast in (True, False):
        record = twin.record(NfsProc.WRITE, nfs.encode_write_args(fh, 0, os.urandom(4096), StableHow.UNSTABLE))
        first = twin.send(record, fast=first_fast)
        replays = counters().get("drc_replays", 0)
        (export_dir / "disk").write_bytes(b"\0" * 8192)  # a replay must not write again
        assert twin.send(record, fast=True) == first
        assert twin.send(record, fast=False) == first
        assert counters()["drc_replays"] == replays + 2
        assert (export_dir / "disk").read_bytes() == b"\0" * 8192
        assert twin.send(record, fast=True, client=("127.0.0.1", 902)) != first  # another client port: a new call


def test_what_would_wait_goes_to_the_pool_having_changed_nothing(twin, export_dir):
    _, fh = _setup(twin, export_dir)
    stable = twin.record(NfsProc.WRITE, nfs.encode_write_args(fh, 0, b"durable", StableHow.FILE_SYNC))
    entries = len(twin.server.drc)
    assert twin.lane(stable, CLIENT) is IN_POOL
    assert len(twin.server.drc) == entries and (export_dir / "disk").read_bytes()[:7] != b"durable"
    result = nfs.decode_write_result(twin.send(stable, fast=True)[24:])  # call_here: begin, then the pool handler
    assert result.committed == StableHow.FILE_SYNC and (export_dir / "disk").read_bytes()[:7] == b"durable"
    fd = os.open(export_dir / "disk", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages leave the page cache
    finally:
        os.close(fd)
    cold = twin.record(NfsProc.READ, nfs.encode_read_args(fh, 32 * 1024, 4096))
    assert twin.lane(cold, CLIENT) is IN_POOL


def test_calls_the_lane_leaves_alone(twin, export_dir):
    root, fh = _setup(twin, export_dir)
    lane = twin.lane
    assert lane(twin.record(NfsProc.LOOKUP, nfs.encode_lookup_args(root, "disk")), CLIENT) is None
    assert lane(twin.record(NfsProc.NULL, b""), CLIENT) is None
    assert lane(twin.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4), rpcvers=3), CLIENT) is None
    assert lane(twin.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4))[:30], CLIENT) is None
    assert lane(b"\0" * 10, CLIENT) is None
    written = nfs.encode_write_args(fh, 0, b"abcd", StableHow.UNSTABLE)
    shorter_count = written[:len(written) - 24] + struct.pack(">QIII", 0, 2, 0, 4) + b"abcd"
    assert lane(twin.record(NfsProc.WRITE, shorter_count), CLIENT) is None  # the general path writes 2 bytes
    reply = twin.send(twin.record(NfsProc.WRITE, shorter_count), fast=True)
    assert nfs.decode_write_result(reply[24:]).count == 2 and (export_dir / "disk").read_bytes()[:2] == b"ab"
    assert twin.send(twin.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 4), rpcvers=3), fast=True)[8:16] == \
        struct.pack(">II", 1, 0)  # MSG_DENIED, RPC_MISMATCH from the general path


def test_the_lanes_calls_and_bytes_are_counted(twin, export_dir):
    _, fh = _setup(twin, export_dir)
    calls, _, _ = twin.server.call_stats.snapshot()
    read, written = twin.server.bytes_read, twin.server.bytes_written
    lane = twin.lane
    assert lane(twin.record(NfsProc.READ, nfs.encode_read_args(fh, 0, 3000)), CLIENT) is not None
    assert lane(twin.record(NfsProc.WRITE, nfs.encode_write_args(fh, 0, b"w" * 512, StableHow.UNSTABLE)),
                CLIENT) is not None
    assert lane(twin.record(NfsProc.GETATTR, nfs.encode_fh_args(fh)), CLIENT) is not None
    after, _, _ = twin.server.call_stats.snapshot()
    for name in ("READ", "WRITE", "GETATTR"):
        assert after[("NFS3", name)] == calls.get(("NFS3", name), 0) + 1
    assert (twin.server.bytes_read, twin.server.bytes_written) == (read + 3000, written + 512)
