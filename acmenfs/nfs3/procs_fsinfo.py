"""NFSv3 file-system information: FSSTAT, FSINFO, PATHCONF.

FSSTAT reports an export's quota as its total size and its used-bytes counter
(never a tree walk per call) when the export has a quota, the file system's
figures otherwise.  FSINFO advertises 1 MiB reads/writes.  No I/O but statvfs.
"""

from __future__ import annotations

import struct

from acmenfs.nfs3 import const
from acmenfs.nfs3.const import NfsProc
from acmenfs.nfs3.scope import NfsState
from acmenfs.nfs3.xdr import STATUS_OK, decode_fh
from acmenfs.oncrpc.xdr import Unpacker

MAX_IO = 1024 * 1024
FSSTAT_TAIL = struct.Struct(">QQQQQQI")
FSINFO_TAIL = struct.Struct(">IIIIIIIQIII")
PATHCONF_TAIL = struct.Struct(">IIIIII")
MAX_FILE_SIZE = (1 << 63) - 1
PROPERTIES = const.FSF_LINK | const.FSF_SYMLINK | const.FSF_HOMOGENEOUS | const.FSF_CANSETTIME


def nfs3_fsstat(state: NfsState, ctx, args: Unpacker) -> bytes:
    scope = state.scope(ctx, decode_fh(args))
    total, free, avail, files, ffree, favail = scope.backend.statvfs()
    st = scope.backend.stat(scope.node)
    return STATUS_OK + scope.post_op_attr(st) + FSSTAT_TAIL.pack(total, free, avail, files, ffree, favail, 0)


def nfs3_fsinfo(state: NfsState, ctx, args: Unpacker) -> bytes:
    scope = state.scope(ctx, decode_fh(args))
    st = scope.backend.stat(scope.node)
    tail = FSINFO_TAIL.pack(
        MAX_IO, MAX_IO, 4096,  # rtmax rtpref rtmult
        MAX_IO, MAX_IO, 4096,  # wtmax wtpref wtmult
        64 * 1024,  # dtpref
        MAX_FILE_SIZE,
        0, 1,  # time_delta: 1 ns
        PROPERTIES,
    )
    return STATUS_OK + scope.post_op_attr(st) + tail


def nfs3_pathconf(state: NfsState, ctx, args: Unpacker) -> bytes:
    scope = state.scope(ctx, decode_fh(args))
    st = scope.backend.stat(scope.node)
    # linkmax, name_max, no_trunc, chown_restricted, case_insensitive, case_preserving
    return STATUS_OK + scope.post_op_attr(st) + PATHCONF_TAIL.pack(65000, 255, 1, 1, 0, 1)


HANDLERS = {
    NfsProc.FSSTAT: nfs3_fsstat,
    NfsProc.FSINFO: nfs3_fsinfo,
    NfsProc.PATHCONF: nfs3_pathconf,
}
