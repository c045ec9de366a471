"""Experiment: how much of a 4 KiB READ's or WRITE's cost is our transport, its system calls and its Python.

Runs ``acmenfs`` (``-m acmenfs ARGS...``, as ``bench_vmio.py --variant-python`` starts it) with the
NFSv3 fast path's READ and WRITE replaced by ones that do less of the work, so the same client at
the same queue depth shows what is left when part of a call costs nothing:

- ``canned``: the reply of the first READ (or WRITE), made by the normal path, is sent again for
  every later one with only its xid changed: no parsing, no handle, no file access (a WRITE's data
  is thrown away).  What remains is the event loop, the record reader, the reply's send and the
  busy poller: the transport floor.
- ``syscalls``: the RPC header, handle and arguments are parsed and the procedure's system calls
  are made on the file the first call resolved: READ ``fstat`` and ``preadv2(RWF_NOWAIT)``, WRITE
  ``fstat``, ``pwrite`` and ``fstat``.  No scope, permission check, duplicate request cache, commit
  bookkeeping, statistics or attribute encoding: the floor plus what a compiled procedure could not
  avoid.

Every other call (MOUNT, LOOKUP, GETATTR, COMMIT, ...) takes the normal path.  Only for measuring:
the replies' attributes are stale and a WRITE is neither in the DRC nor tracked for COMMIT.
Example (4 KiB random read and write at QD1, against the real server and Ganesha in one run;
absolute paths, since servers start in ``/``)::

    python bench/bench_vmio.py --server-python $PWD/.venv-deb/bin/python --rounds 6 \\
        --only 4k-randread-qd1 --only 4k-randwrite-qd1 --variant "real=--workers 1" \\
        --variant "canned=--workers 1" --variant "syscalls=--workers 1" \\
        --variant-python "canned=$PWD/.venv-deb/bin/python $PWD/bench/qd1_floor.py canned" \\
        --variant-python "syscalls=$PWD/.venv-deb/bin/python $PWD/bench/qd1_floor.py syscalls"
"""

from __future__ import annotations

import os
import struct
import sys

from acmenfs.nfs3 import fastpath
from acmenfs.nfs3.const import NFS_PROGRAM, NFS_V3, NfsProc
from acmenfs.oncrpc import rpc

_READ, _WRITE = int(NfsProc.READ), int(NfsProc.WRITE)
_WORD = struct.Struct(">I")  # an XDR unsigned int (the xid, a handle's length)
_ROUTE = struct.Struct(">III")         # at byte 12 of a call: program, version, procedure
_READ_ARGS = struct.Struct(">QI")      # after the handle: offset, count
_WRITE_ARGS = struct.Struct(">QIII")   # after the handle: offset, count, stable, data length


class _Learned:
    """What the first call of a procedure left: its reply body (after the RPC header) and its file."""

    __slots__ = ("body", "data", "fd")

    def __init__(self, body: bytes, data: bytes | None, fd: int) -> None:
        self.body, self.data, self.fd = body, data, fd


def _procedure(record) -> int | None:
    """READ or WRITE when ``record`` is an NFSv3 call of one, else None."""
    if len(record) < 24:
        return None
    program, version, procedure = _ROUTE.unpack_from(record, 12)
    if program != NFS_PROGRAM or version != NFS_V3 or procedure not in (_READ, _WRITE):
        return None
    return procedure


def _args_at(record) -> tuple[int, int]:
    """(xid, offset of the arguments after the file handle)."""
    xid, _, _, _, _, _, _, at = rpc.parse_call_header(record)
    length = _WORD.unpack_from(record, at)[0]
    return xid, at + 4 + length + (-length & 3)


def _canned(learned: _Learned, procedure: int, record) -> list:
    head = rpc.SUCCESS_HEADER.pack(_WORD.unpack_from(record, 0)[0], 1) + learned.body
    return [head, learned.data] if procedure == _READ else [head]


def _syscalls(learned: _Learned, procedure: int, record) -> list:
    xid, after = _args_at(record)
    fd = learned.fd
    if procedure == _READ:
        offset, count = _READ_ARGS.unpack_from(record, after)
        os.fstat(fd)
        data = bytearray(count)
        try:
            os.preadv(fd, [data], offset, os.RWF_NOWAIT)
        except BlockingIOError:  # not in the page cache: read it (bench_vmio caches the file first)
            os.preadv(fd, [data], offset)
        return [rpc.SUCCESS_HEADER.pack(xid, 1) + learned.body, data]
    offset, _, _, length = _WRITE_ARGS.unpack_from(record, after)
    start = after + _WRITE_ARGS.size
    os.fstat(fd)
    os.pwrite(fd, memoryview(record)[start:start + length], offset)
    os.fstat(fd)
    return [rpc.SUCCESS_HEADER.pack(xid, 1) + learned.body]


def install(mode: str) -> None:
    """Replace ``FastPath.__call__`` for READ and WRITE as ``mode`` says (see the module's docstring)."""
    general = fastpath.FastPath.__call__
    head_size = rpc.SUCCESS_HEADER.size
    answer = {"canned": _canned, "syscalls": _syscalls}[mode]
    learned: dict[int, _Learned] = {}

    def learn(self, procedure: int, record, client):
        """The first call of a procedure, by the normal path: keep its reply body and its file."""
        parts = general(self, record, client)
        if isinstance(parts, list) and parts and isinstance(parts[0], (bytes, bytearray)):
            if procedure == _WRITE or (len(parts) == 2 and isinstance(parts[1], (bytes, bytearray))):
                _, _, _, _, _, _, _, at = rpc.parse_call_header(record)
                handle, _ = fastpath._handle_at(record, at, len(record))
                node = self.state.scope(_Caller(record, client), handle).node
                learned[procedure] = _Learned(bytes(parts[0][head_size:]),
                                              bytes(parts[1]) if procedure == _READ else None,
                                              os.dup(node.data_fd(writable=procedure == _WRITE)))
        return parts

    def call(self, record, client):
        procedure = _procedure(record)
        if procedure is None:
            return general(self, record, client)
        found = learned.get(procedure)
        if found is None:
            return learn(self, procedure, record, client)
        return answer(found, procedure, record)

    fastpath.FastPath.__call__ = call


class _Caller:
    """What ``NfsState.scope`` reads of a call, from the record's own credential."""

    def __init__(self, record, client) -> None:
        _, _, _, _, _, flavor, cred_end, _ = rpc.parse_call_header(record)
        self.cred = rpc.credential_from(flavor, record[32:cred_end])
        self.client = client


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("canned", "syscalls") or argv[1:3] != ["-m", "acmenfs"]:
        print("usage: qd1_floor.py canned|syscalls -m acmenfs ARGS...", file=sys.stderr)
        return 2
    install(argv[0])
    from acmenfs.cli.main import main as acmenfs_main
    return acmenfs_main(argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
