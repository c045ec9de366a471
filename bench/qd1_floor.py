"""Experiment: how much of a 4 KiB READ's cost at QD1 is our transport, and how much the procedure.

Runs ``acmenfs`` (``-m acmenfs ARGS...``, as ``bench_vmio.py --variant-python`` starts it) with the
NFSv3 fast path's READ replaced by one that does less of the work, so the same client at the same
queue depth shows what is left when part of a call costs nothing:

- ``canned``: the reply of the first READ (real, from the normal path) is sent again for every
  later READ with only its xid changed: no parsing, no handle, no file access.  What remains is
  the event loop, the record reader, the reply's send and the busy poller: the transport floor.
- ``syscalls``: the RPC header, handle and arguments are parsed and the procedure's two system
  calls are made (``fstat`` and ``preadv2(RWF_NOWAIT)`` of the requested range, on the file the
  first READ resolved), but no scope, permission check, statistics or attribute encoding: the floor
  plus what a compiled READ could not avoid.

Every other call (MOUNT, LOOKUP, GETATTR, WRITE, COMMIT, ...) takes the normal path.  Only for
measuring; the replies' attributes are stale.  Example (4 KiB random read at QD1, against the real
server and Ganesha in one run; absolute paths, since servers start in ``/``)::

    python bench/bench_vmio.py --server-python $PWD/.venv-deb/bin/python --rounds 6 \\
        --only 4k-randread-qd1 --variant "real=--workers 1" \\
        --variant "canned=--workers 1" --variant "syscalls=--workers 1" \\
        --variant-python "canned=$PWD/.venv-deb/bin/python $PWD/bench/qd1_floor.py canned" \\
        --variant-python "syscalls=$PWD/.venv-deb/bin/python $PWD/bench/qd1_floor.py syscalls"
"""

from __future__ import annotations

import os
import struct
import sys

from acmenfs.nfs3 import fastpath
from acmenfs.nfs3.const import NfsProc
from acmenfs.oncrpc import rpc

_READ = int(NfsProc.READ)
_XID = struct.Struct(">I")
_READ_ARGS = struct.Struct(">QI")
_ROUTE = struct.Struct(">III")


def install(mode: str) -> None:
    """Replace ``FastPath.__call__`` for READ as ``mode`` says (see the module's docstring)."""
    general = fastpath.FastPath.__call__
    head_size = rpc.SUCCESS_HEADER.size
    first: dict[str, object] = {}

    def learn(self, record, client):
        """The first READ, by the normal path: keep its reply body and its file."""
        parts = general(self, record, client)
        if parts and len(parts) == 2 and isinstance(parts[1], (bytes, bytearray)):
            _, _, _, _, _, _, _, at = rpc.parse_call_header(record)
            handle, _ = fastpath._handle_at(record, at, len(record))
            first["body"] = bytes(parts[0][head_size:])
            first["data"] = bytes(parts[1])
            first["fd"] = os.dup(self.state.scope(_SysCaller(record, client), handle).node.data_fd())
        return parts

    def canned(self, record, client):
        if not _is_read(record):
            return general(self, record, client)
        if "body" not in first:
            return learn(self, record, client)
        return [rpc.SUCCESS_HEADER.pack(_XID.unpack_from(record, 0)[0], 1) + first["body"], first["data"]]

    def syscalls(self, record, client):
        if not _is_read(record):
            return general(self, record, client)
        if "body" not in first:
            return learn(self, record, client)
        xid, _, _, _, _, _, _, at = rpc.parse_call_header(record)
        _, after = fastpath._handle_at(record, at, len(record) - _READ_ARGS.size)
        offset, count = _READ_ARGS.unpack_from(record, after)
        fd = first["fd"]
        os.fstat(fd)
        data = bytearray(count)
        try:
            os.preadv(fd, [data], offset, os.RWF_NOWAIT)
        except BlockingIOError:  # not in the page cache: read it (bench_vmio caches the file first)
            os.preadv(fd, [data], offset)
        return [rpc.SUCCESS_HEADER.pack(xid, 1) + first["body"], data]

    fastpath.FastPath.__call__ = {"canned": canned, "syscalls": syscalls}[mode]


def _is_read(record) -> bool:
    """An NFSv3 READ call (program, version and procedure at bytes 12-23)?"""
    return len(record) >= 24 and _ROUTE.unpack_from(record, 12) == (100003, 3, _READ)


class _SysCaller:
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
