"""Inline-first procedures (``Procedure.fallback`` + ``RunInPool`` in acmenfs.oncrpc), which the
NFS server uses for its cheap procedures: run on the event loop, re-run from their first argument
byte in the thread pool when they would block.  A toy program over real TCP and UDP sockets on
127.0.0.1, and the NFS server's CREATE/REMOVE taking the inline and the pool paths."""

from __future__ import annotations

import asyncio
import struct
import threading

import pytest

from acmenfs.nfs3.const import NfsProc, NfsStat
from acmenfs.nfs3.exports import ClientRule, Export
from acmenfs.oncrpc.client import RpcAcceptError, RpcClient
from acmenfs.oncrpc.dispatch import Procedure, Program, RpcDispatcher, RunInPool
from acmenfs.oncrpc.drc import DuplicateRequestCache
from acmenfs.oncrpc.server import RpcServer
from acmenfs.oncrpc.xdr import Unpacker
from nfs3_helpers import NfsCalls, create, lookup, new_fh_of, pack_diropargs

PROG, VERS = 0x20000F01, 1
HALVE, COUNT_CALLS, FAIL = 1, 2, 3


class ToyService:
    """HALVE: inline for even numbers, in the pool for odd ones; COUNT_CALLS: DRC-cached, always
    moves to the pool after reading its argument; FAIL: the pool handler raises."""

    def __init__(self) -> None:
        self.loop_thread: int | None = None
        self.pool_runs = 0
        self.lock = threading.Lock()

    def halve_inline(self, ctx, args: Unpacker) -> bytes:
        value = args.unpack_uint()
        if value % 2:
            raise RunInPool
        return struct.pack(">II", value // 2, threading.get_ident() == self.loop_thread)

    def halve_pool(self, ctx, args: Unpacker) -> bytes:
        value = args.unpack_uint()  # a fresh Unpacker: from the first argument byte again
        return struct.pack(">II", value // 2, threading.get_ident() == self.loop_thread)

    def count_inline(self, ctx, args: Unpacker) -> bytes:
        args.unpack_uint()
        raise RunInPool

    def count_pool(self, ctx, args: Unpacker) -> bytes:
        with self.lock:
            self.pool_runs += 1
            return struct.pack(">II", args.unpack_uint(), self.pool_runs)

    def fail_inline(self, ctx, args: Unpacker) -> bytes:
        raise RunInPool

    def fail_pool(self, ctx, args: Unpacker) -> bytes:
        raise RuntimeError("handler bug")

    def program(self) -> Program:
        return Program(PROG, VERS, "TOY", {
            HALVE: Procedure("HALVE", self.halve_inline, fallback=self.halve_pool),
            COUNT_CALLS: Procedure("COUNT_CALLS", self.count_inline, cached=True, fallback=self.count_pool),
            FAIL: Procedure("FAIL", self.fail_inline, fallback=self.fail_pool),
        })


@pytest.fixture
def toy_server():
    service = ToyService()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="toy-loop", daemon=True)
    thread.start()
    service.loop_thread = thread.ident
    server = RpcServer(RpcDispatcher([service.program()], drc=DuplicateRequestCache()))

    async def start():
        port = await server.start_tcp("127.0.0.1", 0)
        await server.start_udp("127.0.0.1", port)
        return port

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield service, port
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_inline_first_runs_inline_or_moves_to_the_pool_with_fresh_arguments(toy_server, transport):
    service, port = toy_server
    with RpcClient("127.0.0.1", port, transport=transport) as client:
        half, on_loop = struct.unpack(">II", client.call(PROG, VERS, HALVE, struct.pack(">I", 10)))
        assert (half, on_loop) == (5, 1)
        half, on_loop = struct.unpack(">II", client.call(PROG, VERS, HALVE, struct.pack(">I", 11)))
        assert (half, on_loop) == (5, 0)


def test_a_cached_call_moved_to_the_pool_runs_once_and_is_replayed(toy_server):
    service, port = toy_server
    with RpcClient("127.0.0.1", port) as client:
        first = client.call(PROG, VERS, COUNT_CALLS, struct.pack(">I", 7), xid=0x5151)
        again = client.call(PROG, VERS, COUNT_CALLS, struct.pack(">I", 7), xid=0x5151)
        assert first == again == struct.pack(">II", 7, 1)
        assert service.pool_runs == 1
        assert client.call(PROG, VERS, COUNT_CALLS, struct.pack(">I", 8)) == struct.pack(">II", 8, 2)


def test_a_failing_pool_handler_is_a_system_error(toy_server):
    _, port = toy_server
    with RpcClient("127.0.0.1", port) as client:
        with pytest.raises(RpcAcceptError) as info:
            client.call(PROG, VERS, FAIL, b"")
        assert info.value.accept_stat == 5  # SYSTEM_ERR
        assert client.call(PROG, VERS, HALVE, struct.pack(">I", 4))[:4] == struct.pack(">I", 2)


def test_nfs_create_and_remove_inline_and_in_the_pool(nfsd, calls, exports, export_dir):
    root = calls.root()
    fh = new_fh_of(create(calls, root, "inline"))  # cached directory: runs on the event loop
    assert (export_dir / "inline").is_file() and lookup(calls, root, "inline") == (0, fh)
    backend = next(iter(nfsd.server.state._backends.values()))[1]
    backend.inline_changes.paused_until = float("inf")  # as after a change that blocked
    fh2 = new_fh_of(create(calls, root, "pooled"))
    assert (export_dir / "pooled").is_file() and lookup(calls, root, "pooled") == (0, fh2)
    assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "pooled")).status == 0
    backend.inline_changes.paused_until = 0.0
    assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "inline")).status == 0
    assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "inline")).status == NfsStat.NOENT
    assert sorted(p.name for p in export_dir.iterdir()) == []


def test_guarded_create_retransmitted_after_moving_to_the_pool_is_answered_once(nfsd, exports, export_dir):
    """A quota'd export whose usage is not scanned yet sends CREATE to the pool; the
    retransmission (same xid) is answered from the DRC, not with EXIST."""
    exports.add(Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),),
                       quota_bytes=1 << 30))
    calls = NfsCalls(nfsd)
    try:
        root = calls.root()
        first = create(calls, root, "once", mode=1, xid=0x7777)
        again = create(calls, root, "once", mode=1, xid=0x7777)
        assert first.status == again.status == 0 and first.body == again.body
        assert create(calls, root, "once", mode=1).status == NfsStat.EXIST
    finally:
        calls.close()


def test_unchecked_create_of_an_existing_name_goes_to_the_pool_and_truncates(calls, export_dir):
    """Inline, UNCHECKED only makes new files (O_EXCL); an existing one is opened and truncated
    in the pool (opening an existing name could open a device, truncating could take long)."""
    (export_dir / "existing").write_bytes(b"old data")
    root = calls.root()
    status, fh = lookup(calls, root, "existing")
    assert status == 0
    size_zero = struct.pack(">IIIIQII", 0, 0, 0, 1, 0, 0, 0)
    reply = calls.call(NfsProc.CREATE, pack_diropargs(root, "existing") + struct.pack(">I", 0) + size_zero)
    assert new_fh_of(reply) == fh
    assert (export_dir / "existing").read_bytes() == b""
