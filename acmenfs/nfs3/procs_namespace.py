"""NFSv3 namespace procedures: CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK.

Every one of them returns wcc_data (attributes before and after) of the
directories it changed, on success and on failure.  All are non-idempotent
and sit behind the duplicate request cache.  No socket or event-loop code.
"""

from __future__ import annotations

import os
from typing import Callable

from acmenfs.fs.backend import SetAttributes, StaleHandle
from acmenfs.nfs3.const import NFS3_CREATEVERFSIZE, CreateMode, FileType, NfsProc, NfsStat
from acmenfs.nfs3.errors import NfsError, status_for
from acmenfs.nfs3.scope import NfsState, Scope
from acmenfs.nfs3.xdr import (
    MAX_PATH_BYTES, STATUS_OK, decode_diropargs, decode_fh, decode_sattr3, encode_post_op_fh,
)
from acmenfs.oncrpc.xdr import Unpacker, XdrError


def _stat_or_none(scope: Scope) -> os.stat_result | None:
    try:
        return scope.backend.stat(scope.node)
    except (OSError, StaleHandle):
        return None


def _change_directory(scope: Scope, operation: Callable[[], object]) -> tuple[object, bytes]:
    """Run ``operation`` on the directory of ``scope``; returns (result, encoded dir wcc_data)."""
    pre = scope.backend.stat(scope.node)
    try:
        result = operation()
    except (OSError, StaleHandle) as exc:
        raise NfsError(status_for(exc), str(exc), body=scope.wcc(pre, _stat_or_none(scope))) from exc
    return result, scope.wcc(pre, _stat_or_none(scope))


def _new_object_reply(scope: Scope, node, dir_wcc: bytes, st: os.stat_result | None = None) -> bytes:
    """``st``: the new object's attributes when the backend returned them (else read here)."""
    if st is None:
        try:
            st = scope.backend.stat(node)
        except (OSError, StaleHandle):
            pass
    attrs = scope.post_op_attr(st)
    return STATUS_OK + encode_post_op_fh(scope.fh_for(node.handle)) + attrs + dir_wcc


def nfs3_create(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh, name = decode_diropargs(args)
    how = args.unpack_uint()
    if how == CreateMode.EXCLUSIVE:
        changes, verifier = SetAttributes(), args.unpack_fopaque(NFS3_CREATEVERFSIZE)
    elif how in (CreateMode.UNCHECKED, CreateMode.GUARDED):
        changes, verifier = decode_sattr3(args), b""
    else:
        raise XdrError(f"bad createmode3 {how}")
    scope = state.scope(ctx, fh, write=True)
    (node, st), dir_wcc = _change_directory(
        scope, lambda: scope.backend.create(scope.node, name, scope.who, how, changes, verifier)
    )
    return _new_object_reply(scope, node, dir_wcc, st)


def nfs3_mkdir(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh, name = decode_diropargs(args)
    changes = decode_sattr3(args)
    scope = state.scope(ctx, fh, write=True)
    node, dir_wcc = _change_directory(scope, lambda: scope.backend.mkdir(scope.node, name, scope.who, changes))
    return _new_object_reply(scope, node, dir_wcc)


def nfs3_symlink(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh, name = decode_diropargs(args)
    changes = decode_sattr3(args)
    target = args.unpack_opaque(MAX_PATH_BYTES)
    scope = state.scope(ctx, fh, write=True)
    node, dir_wcc = _change_directory(
        scope, lambda: scope.backend.symlink(scope.node, name, scope.who, target, changes)
    )
    return _new_object_reply(scope, node, dir_wcc)


_MKNOD_KINDS = {FileType.CHR: "chr", FileType.BLK: "blk", FileType.SOCK: "sock", FileType.FIFO: "fifo"}


def nfs3_mknod(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh, name = decode_diropargs(args)
    file_type = args.unpack_uint()
    kind = _MKNOD_KINDS.get(file_type)
    rdev = 0
    if kind in ("chr", "blk"):
        changes = decode_sattr3(args)
        major, minor = args.unpack_uint(), args.unpack_uint()
        rdev = os.makedev(major, minor)
    elif kind is not None:
        changes = decode_sattr3(args)
    scope = state.scope(ctx, fh, write=True)
    if kind is None:
        raise NfsError(NfsStat.BADTYPE, f"MKNOD cannot create file type {file_type}", body=scope.wcc(None, None))
    node, dir_wcc = _change_directory(
        scope, lambda: scope.backend.mknod(scope.node, name, scope.who, kind, changes, rdev)
    )
    return _new_object_reply(scope, node, dir_wcc)


def _remove(state: NfsState, ctx, args: Unpacker, is_dir: bool) -> bytes:
    fh, name = decode_diropargs(args)
    scope = state.scope(ctx, fh, write=True)
    _, dir_wcc = _change_directory(scope, lambda: scope.backend.remove(scope.node, name, scope.who, is_dir))
    return STATUS_OK + dir_wcc


def nfs3_remove(state: NfsState, ctx, args: Unpacker) -> bytes:
    return _remove(state, ctx, args, is_dir=False)


def nfs3_rmdir(state: NfsState, ctx, args: Unpacker) -> bytes:
    return _remove(state, ctx, args, is_dir=True)


def nfs3_rename(state: NfsState, ctx, args: Unpacker) -> bytes:
    from_fh, from_name = decode_diropargs(args)
    to_fh, to_name = decode_diropargs(args)
    source = state.scope(ctx, from_fh, write=True)
    target = state.same_export(source, ctx, to_fh, write=True)
    from_pre, to_pre = source.backend.stat(source.node), target.backend.stat(target.node)
    try:
        source.backend.rename(source.node, from_name, target.node, to_name, source.who)
    except (OSError, StaleHandle) as exc:
        body = source.wcc(from_pre, _stat_or_none(source)) + target.wcc(to_pre, _stat_or_none(target))
        raise NfsError(status_for(exc), str(exc), body=body) from exc
    return STATUS_OK + source.wcc(from_pre, _stat_or_none(source)) + target.wcc(to_pre, _stat_or_none(target))


def nfs3_link(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh = decode_fh(args)
    dir_fh, name = decode_diropargs(args)
    file_scope = state.scope(ctx, fh, write=True)
    dir_scope = state.same_export(file_scope, ctx, dir_fh, write=True)
    try:
        _, dir_wcc = _change_directory(
            dir_scope, lambda: dir_scope.backend.link(file_scope.node, dir_scope.node, name, dir_scope.who)
        )
    except NfsError as exc:
        exc.body = file_scope.attrs_of(file_scope.node) + (exc.body or b"\0" * 8)
        raise
    return STATUS_OK + file_scope.attrs_of(file_scope.node) + dir_wcc


HANDLERS = {
    NfsProc.CREATE: nfs3_create,
    NfsProc.MKDIR: nfs3_mkdir,
    NfsProc.SYMLINK: nfs3_symlink,
    NfsProc.MKNOD: nfs3_mknod,
    NfsProc.REMOVE: nfs3_remove,
    NfsProc.RMDIR: nfs3_rmdir,
    NfsProc.RENAME: nfs3_rename,
    NfsProc.LINK: nfs3_link,
}
