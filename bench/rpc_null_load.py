"""Pipelined RPC NULL load: one TCP connection, DEPTH calls in flight, for SECONDS.

Usage: python bench/rpc_null_load.py HOST PORT PROG VERS SECONDS DEPTH
Prints the completed calls per second. Calls are pre-encoded and replies are
only counted (their xid checked against the window), so the client spends as
little as possible per call.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.client import frame
from acmenfs.oncrpc.record import RecordReader


class Load(asyncio.BufferedProtocol):
    def __init__(self, prog: int, vers: int, depth: int, deadline: float, done: asyncio.Future):
        self.calls = [frame(rpc.encode_call(xid, prog, vers, 0)) for xid in range(depth)]
        self.reader = RecordReader(1 << 20)
        self.deadline, self.done = deadline, done
        self.completed = 0
        self.in_flight = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.writelines(self.calls)
        self.in_flight = len(self.calls)

    def get_buffer(self, hint):
        return self.reader.get_buffer(hint)

    def buffer_updated(self, n):
        replies = self.reader.buffer_updated(n)
        self.completed += len(replies)
        self.in_flight -= len(replies)
        if time.perf_counter() < self.deadline:
            out = []
            for reply in replies:
                xid = struct.unpack_from(">I", reply)[0]
                out.append(self.calls[xid])
            self.transport.writelines(out)
            self.in_flight += len(out)
        elif self.in_flight == 0 and not self.done.done():
            self.done.set_result(self.completed)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def main(host, port, prog, vers, seconds, depth):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    start = time.perf_counter()
    transport, protocol = await loop.create_connection(
        lambda: Load(prog, vers, depth, start + seconds, done), host, port)
    completed = await done
    elapsed = time.perf_counter() - start
    transport.close()
    print(f"{completed / elapsed:.0f}")


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    h, p, prog, vers, s, d = sys.argv[1:7]
    asyncio.run(main(h, int(p), int(prog), int(vers), float(s), int(d)))
