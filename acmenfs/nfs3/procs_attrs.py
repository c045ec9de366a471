"""NFSv3 procedures on attributes and names: NULL, GETATTR, SETATTR, LOOKUP, ACCESS, READLINK.

Each function decodes its arguments from an ``Unpacker``, resolves handles
through ``NfsState.scope`` and returns the encoded result (status OK first);
failures are raised as ``NfsError`` / OSError and encoded by the server's
procedure wrapper.  No socket or event-loop code here.
"""

from __future__ import annotations

from acmenfs.fs.backend import StaleHandle
from acmenfs.nfs3 import const
from acmenfs.nfs3.const import NfsProc, NfsStat
from acmenfs.nfs3.errors import NfsError, status_for
from acmenfs.nfs3.scope import NfsState
from acmenfs.nfs3.xdr import (
    STATUS_OK, UINT32, decode_diropargs, decode_fh, decode_sattr3, encode_fh, encode_opaque,
    word_and_fattr3,
)
from acmenfs.oncrpc.xdr import Unpacker


def _wire_ns(ns: int) -> int:
    """A time as the client saw it in fattr3 (seconds truncated to 32 bits)."""
    return ((ns // 1_000_000_000) & 0xFFFFFFFF) * 1_000_000_000 + ns % 1_000_000_000


def nfs3_null(state: NfsState, ctx, args: Unpacker) -> bytes:
    return b""


def nfs3_getattr(state: NfsState, ctx, args: Unpacker) -> bytes:
    scope = state.scope(ctx, decode_fh(args))
    return getattr_body(scope, scope.backend.stat(scope.node))


def getattr_body(scope, st) -> bytes:
    """GETATTR3res for attributes ``st``: NFS3_OK and the fattr3, in one pack (also ``fastpath``)."""
    return word_and_fattr3(0, st, scope.fsid, scope.backend.root_dev)


def nfs3_setattr(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh = decode_fh(args)
    changes = decode_sattr3(args)
    guard_ns = None
    if args.unpack_bool():
        seconds, nanoseconds = args.unpack_uint(), args.unpack_uint()
        guard_ns = seconds * 1_000_000_000 + nanoseconds
    scope = state.scope(ctx, fh, write=True)
    pre = scope.backend.stat(scope.node)
    if guard_ns is not None and _wire_ns(pre.st_ctime_ns) != guard_ns:
        raise NfsError(NfsStat.NOT_SYNC, "guard ctime does not match", body=scope.wcc(pre, pre))
    try:
        _, post = scope.backend.setattr(scope.node, scope.who, changes, None, pre)
    except (OSError, StaleHandle) as exc:
        raise NfsError(status_for(exc), str(exc), body=scope.wcc(pre, None)) from exc
    return STATUS_OK + scope.wcc(pre, post)


def nfs3_lookup(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh, name = decode_diropargs(args)
    scope = state.scope(ctx, fh)
    try:
        child, child_st, dir_st = scope.backend.lookup(scope.node, name, scope.who)
    except (OSError, StaleHandle) as exc:
        dir_st = getattr(exc, "directory_attributes", None)  # read by the backend before it failed
        body = scope.attrs_of(scope.node) if dir_st is None else scope.post_op_attr(dir_st)
        raise NfsError(status_for(exc), str(exc), body=body) from exc
    return b"".join((
        STATUS_OK,
        encode_fh(scope.fh_for(child.handle)),
        scope.post_op_attr(child_st),
        scope.post_op_attr(dir_st),
    ))


def nfs3_access(state: NfsState, ctx, args: Unpacker) -> bytes:
    scope = state.scope(ctx, decode_fh(args))
    wanted = args.unpack_uint()
    bits, st = scope.backend.access(scope.node, scope.who)
    allowed = 0
    if bits & 4:
        allowed |= const.ACCESS_READ
    if bits & 1:
        allowed |= const.ACCESS_LOOKUP if scope.node.is_dir else const.ACCESS_EXECUTE
    if bits & 2 and scope.writable:
        allowed |= const.ACCESS_MODIFY | const.ACCESS_EXTEND
        if scope.node.is_dir:
            allowed |= const.ACCESS_DELETE
    return STATUS_OK + scope.post_op_attr(st) + UINT32.pack(allowed & wanted)


def nfs3_readlink(state: NfsState, ctx, args: Unpacker) -> bytes:
    scope = state.scope(ctx, decode_fh(args))
    target = scope.backend.readlink(scope.node, scope.who)
    st = scope.backend.stat(scope.node)
    return STATUS_OK + scope.post_op_attr(st) + encode_opaque(target)


HANDLERS = {
    NfsProc.NULL: nfs3_null,
    NfsProc.GETATTR: nfs3_getattr,
    NfsProc.SETATTR: nfs3_setattr,
    NfsProc.LOOKUP: nfs3_lookup,
    NfsProc.ACCESS: nfs3_access,
    NfsProc.READLINK: nfs3_readlink,
}
