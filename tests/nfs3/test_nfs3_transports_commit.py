"""UDP and single-port serving, and group commit (many COMMITs, one flush)."""

from __future__ import annotations

import os
import struct
import threading
import time

from acmenfs.fs.commit import GroupCommitter
from acmenfs.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3, NfsProc
from acmenfs.oncrpc.client import AuthSys, RpcClient
from acmenfs.oncrpc.xdr import Packer, Unpacker
from nfs3_helpers import NfsCalls, RunningNfsServer, create, new_fh_of, pack_fh


def test_udp_and_mount_on_the_nfs_port(exports, export_dir, tmp_path):
    (export_dir / "f").write_bytes(b"over udp")
    server = RunningNfsServer(exports, tmp_path / "state", mount_port=None, udp=True)
    try:
        assert server.server.mount_port == server.server.port
        udp = RpcClient("127.0.0.1", server.port, transport="udp", auth=AuthSys(), timeout=10)
        try:
            packer = Packer()
            packer.pack_string("/e")
            mounted = Unpacker(udp.call(MOUNT_PROGRAM, MOUNT_V3, 1, packer.get_buffer()))
            assert mounted.unpack_uint() == 0
            root = mounted.unpack_opaque(64)
            lookup = Packer()
            lookup.pack_opaque(root)
            lookup.pack_string("f")
            reply = Unpacker(udp.call(NFS_PROGRAM, NFS_V3, NfsProc.LOOKUP, lookup.get_buffer()))
            assert reply.unpack_uint() == 0
            fh = reply.unpack_opaque(64)
            read = Unpacker(udp.call(NFS_PROGRAM, NFS_V3, NfsProc.READ, pack_fh(fh) + struct.pack(">QI", 0, 4096)))
            assert read.unpack_uint() == 0
            if read.unpack_bool():
                read.unpack_fopaque(84)
            read.unpack_uint(), read.unpack_bool()
            assert read.unpack_opaque() == b"over udp"
        finally:
            udp.close()
    finally:
        server.stop()


class _GatedFile:
    """A file whose first fileno() (taken by the flusher's fsync) waits for a gate."""

    def __init__(self, fd: int, gate: threading.Event, entered: threading.Event) -> None:
        self.fd, self.gate, self.entered = fd, gate, entered

    def fileno(self) -> int:
        self.entered.set()
        self.gate.wait(30)
        return self.fd


def test_many_commits_share_one_flush(tmp_path):
    committer = GroupCommitter()
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT)
    gate, entered = threading.Event(), threading.Event()
    try:
        os.write(fd, b"x")
        committer.mark_dirty(_GatedFile(fd, gate, entered), 0, 1)
        first = committer.ticket()
        assert entered.wait(30)  # the flusher is now inside round 1, blocked in fsync
        for _ in range(20):
            committer.mark_dirty(_Plain(fd), 0, 1)
        tickets = [committer.ticket() for _ in range(20)]
        rounds_before = committer.flush_rounds
        waiters = [threading.Thread(target=committer.durable.wait_for, args=(t, 30)) for t in tickets]
        for waiter in waiters:
            waiter.start()
        gate.set()
        for waiter in waiters:
            waiter.join(30)
        assert committer.durable.value >= max(tickets) > first
        assert committer.flush_rounds - rounds_before <= 2  # round 1 finishing + one round for all 20
        assert committer.ticket() is None  # nothing pending any more
    finally:
        gate.set()
        committer.stop()
        os.close(fd)


class _Plain:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_concurrent_clients_write_their_own_files(nfsd, export_dir):
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            calls = NfsCalls(nfsd, uid=0, gid=0)
            root = calls.root()
            fh = new_fh_of(create(calls, root, f"c{index}"))
            for block in range(8):
                data = bytes([index]) * 65536
                args = pack_fh(fh) + struct.pack(">QIII", block * 65536, 65536, 0, 65536) + data
                assert calls.call(NfsProc.WRITE, args).status == 0
            assert calls.call(NfsProc.COMMIT, pack_fh(fh) + struct.pack(">QI", 0, 0)).status == 0
            calls.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for index in range(6):
        assert (export_dir / f"c{index}").read_bytes() == bytes([index]) * 65536 * 8


def test_early_write_back_follows_a_stream_and_stops_for_a_rewrite_loop(tmp_path, monkeypatch):
    """A stream written once is written out as it comes; a client that loops over blocks
    already written out (since the last commit round) is left to the page cache until the
    next COMMIT, which starts early write-back afresh."""
    started: list[tuple[int, int]] = []
    monkeypatch.setattr("acmenfs.fs.commit.start_writeback", lambda fd, offset, length: started.append((offset, length)))
    committer = GroupCommitter(writeback_bytes=4096)
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT)
    file = _Plain(fd)

    def stream(first_block: int, blocks: int) -> None:
        for block in range(first_block, first_block + blocks):
            committer.mark_dirty(file, block * 2048, 2048)

    def settled() -> list[tuple[int, int]]:
        deadline = time.monotonic() + 10
        while committer._writeback and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        return list(started)

    try:
        stream(0, 2)  # 0-4 KiB: written out
        committer.mark_dirty(file, 2048, 2048)  # a call that arrived late (2-4 KiB again) ...
        stream(2, 4)  # ... then the stream goes on: 2-6 KiB is half old, half new: not a loop
        assert settled() == [(0, 4096), (2048, 4096), (6144, 4096)]
        stream(0, 4)  # 0-8 KiB again: a loop over what was written out
        stream(6, 4)  # and further on: still the same client, still left to the page cache
        assert settled() == [(0, 4096), (2048, 4096), (6144, 4096)]
        committer.durable.wait_for(committer.ticket(), 30)  # a commit round starts afresh
        started.clear()
        stream(0, 4)
        assert settled() == [(0, 4096), (4096, 4096)]
    finally:
        committer.stop()
        os.close(fd)
