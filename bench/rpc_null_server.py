"""A server with only the NULL procedure of a program, on our RPC stack (for bench_rpc_null).

Usage: python bench/rpc_null_server.py PORT PROG VERS [asyncio|uvloop]
Prints "ready PORT" when listening.
"""

from __future__ import annotations

import asyncio
import sys

from acmenfs.oncrpc.dispatch import Procedure, Program, RpcDispatcher
from acmenfs.oncrpc.server import RpcServer


def null(ctx, args):
    return b""


async def main(port: int, prog: int, vers: int) -> None:
    server = RpcServer(RpcDispatcher([Program(prog, vers, "NULLONLY", {0: Procedure("NULL", null)})]))
    bound = await server.start_tcp("127.0.0.1", port)
    print(f"ready {bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[4] == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
