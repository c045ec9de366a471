"""Which worker gets a new connection.

Owns reading the first RPC call header of a connection (peeked by the
acceptor: record mark, xid, CALL, RPC version 2, program, version) and the
rule: every NFS version but 3 to worker 0 -- version 4 because its client, open and
lock state lives in one process, and any other (a client probing with a version
we do not serve) because only worker 0 serves every version, so its PROG_MISMATCH
names them all (3..4); everything else to ``crc32("ip:port") % N``, so a client that
reconnects from the same address and port (Linux does) reaches the worker whose
duplicate request cache holds its earlier calls.  If that worker is down the
next live one in ring order takes the connection.  No sockets, no processes.
"""

from __future__ import annotations

import struct
import zlib

NFS_PROGRAM = 100003
CALL_HEADER = struct.Struct(">IIIIII")  # record mark, xid, msg_type, rpcvers, prog, vers
HEADER_BYTES = CALL_HEADER.size
WORKER_FOR_NFS4 = 0


def call_program(header: bytes) -> tuple[int, int] | None:
    """(program, version) of a peeked call, or None if it is not a whole RPC call header."""
    if len(header) < HEADER_BYTES:
        return None
    _mark, _xid, msg_type, rpc_version, program, version = CALL_HEADER.unpack_from(header)
    if msg_type != 0 or rpc_version != 2:
        return None
    return program, version


def home_worker(address: str, port: int, workers: int) -> int:
    """The worker a client address and port always lands on (while it is up)."""
    return zlib.crc32(f"{address}:{port}".encode()) % workers


def choose_worker(address: str, port: int, header: bytes, workers: int, up) -> int | None:
    """The worker for a new connection; ``up(i)`` says whether worker i takes connections.
    None: nobody can take it now (close it; the client reconnects)."""
    program = call_program(header)
    if program is not None and program[0] == NFS_PROGRAM and program[1] != 3:
        return WORKER_FOR_NFS4 if up(WORKER_FOR_NFS4) else None
    first = home_worker(address, port, workers)
    for step in range(workers):
        candidate = (first + step) % workers
        if up(candidate):
            return candidate
    return None
