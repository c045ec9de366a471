"""Helpers for the ONC RPC tests: a test program and a real RpcServer run on a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from acmenfs.oncrpc.dispatch import GarbageArgs, Procedure, Program, RpcDispatcher
from acmenfs.oncrpc.server import RpcServer
from acmenfs.oncrpc.xdr import Packer

TEST_PROG = 0x20000099
TEST_VERS = 1


@dataclass
class EchoService:
    """Procedures of the test program; ``bump`` is non-idempotent (cached by the DRC)."""

    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def null(self, ctx, args):
        args.done()
        return b""

    def echo(self, ctx, args):
        data = args.unpack_opaque()
        args.done()
        packer = Packer()
        packer.pack_opaque(data)
        return packer.buffer

    def whoami(self, ctx, args):
        packer = Packer()
        packer.pack_uint(ctx.cred.flavor)
        packer.pack_uint(ctx.cred.uid)
        packer.pack_uint(ctx.cred.gid)
        packer.pack_array(ctx.cred.gids, packer.pack_uint)
        packer.pack_string(ctx.cred.machine)
        return packer.buffer

    def bump(self, ctx, args):
        amount = args.unpack_uint()
        with self.lock:
            self.counter += amount
            value = self.counter
        packer = Packer()
        packer.pack_uint(value)
        return packer.buffer

    async def sleep_ms(self, ctx, args):
        ms = args.unpack_uint()
        await asyncio.sleep(ms / 1000)
        packer = Packer()
        packer.pack_uint(ms)
        return packer.buffer

    def fail(self, ctx, args):
        raise RuntimeError("deliberate failure")

    def garbage(self, ctx, args):
        raise GarbageArgs("always garbage")

    def program(self) -> Program:
        return Program(TEST_PROG, TEST_VERS, "TEST", {
            0: Procedure("NULL", self.null),
            1: Procedure("ECHO", self.echo, blocking=True),
            2: Procedure("WHOAMI", self.whoami),
            3: Procedure("BUMP", self.bump, cached=True, blocking=True),
            4: Procedure("SLEEP_MS", self.sleep_ms),
            5: Procedure("FAIL", self.fail),
            6: Procedure("GARBAGE", self.garbage),
        })


class ThreadedServer:
    """Runs an RpcServer on its own event loop thread; stopped in teardown."""

    def __init__(self, dispatcher: RpcDispatcher, **server_options) -> None:
        self.dispatcher = dispatcher
        self.server_options = server_options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RpcServer | None = None
        self.port = self.udp_port = 0

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, udp: bool = True) -> "ThreadedServer":
        async def _start():
            self.server = RpcServer(self.dispatcher, **self.server_options)
            self.port = await self.server.start_tcp("127.0.0.1", 0)
            if udp:
                self.udp_port = await self.server.start_udp("127.0.0.1", 0)
        self.run(_start())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()




def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
