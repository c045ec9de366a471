"""NFSv4 directory ops: READDIR, CREATE (dirs, symlinks, devices, sockets, FIFOs), REMOVE, RENAME,
LINK, READLINK; and the helpers B's OPEN uses: ``open_lookup``, ``open_create``.

Owns the mapping of these ops onto the backend (the same calls, permission checks,
squashing and quota as NFSv3) and the READDIR reply: v3's name-derived cookies (stable
across changes and restarts; 0, 1, 2 are reserved by RFC 8881 §18.23.3), the constant
cookie verifier (pseudo directories use the same name-derived cookies), per-entry attributes (rdattr_error for an entry whose attributes fail
when it was requested, else the whole READDIR fails), maxcount honoured (TOOSMALL when
not one entry fits).  The pseudo fs lists the exports and directories a client may see.
"""

from __future__ import annotations

import os
import stat as statmod

from acmenfs.fs.backend import SetAttributes
from acmenfs.fs.credentials import acting_as
from acmenfs.fs.local import COOKIE_FLAG, name_cookie
from acmenfs.nfs4.attrs import decode_fattr4_setattrs, encode_change_info, encode_fattr
from acmenfs.nfs4.compound import CompoundState, OpSpec
from acmenfs.nfs4.const import Attr, FType, Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.fh4 import Fh4
from acmenfs.nfs4.ops_attr import export_source, pseudo_source
from acmenfs.nfs4.ops_fh import _require_directory, child_fh, export_root_fh
from acmenfs.nfs4.pseudofs import join
from acmenfs.nfs4.xdr4 import (
    FALSE, TRUE, U32, U64, decode_bitmap, decode_component, decode_utf8, encode_bitmap, encode_utf8,
)
from acmenfs.oncrpc.xdr import Unpacker

COOKIE_VERIFIER = b"acmeHC01"   # the v3 scheme's verifier: the same cookies
ZERO_VERIFIER = b"\0" * 8
MAX_READDIR = 1024 * 1024
READDIR_FIXED = 8 + 4 + 4   # cookieverf, no-more-entries, eof


def _fail(exc: BaseException) -> Nfs4Error:
    if isinstance(exc, Nfs4Error):
        return exc
    return Nfs4Error(status_for(exc), str(exc))


def _dir_scope(cs: CompoundState, fh: Fh4 | None = None, *, write: bool):
    scope = cs.scope(fh, write=write)
    if scope is not None:
        _require_directory(scope.node)
    return scope


def _stat(scope):
    return scope.backend.stat(scope.node)


# ----- READDIR -------------------------------------------------------------------------------
def _entry(cookie: int, name: str, attrs: bytes) -> bytes:
    return TRUE + U64.pack(cookie) + encode_utf8(name) + attrs


def _entry_attrs(cs: CompoundState, requested: set[int], make_source) -> bytes:
    try:
        return encode_fattr(requested, make_source())
    except Exception as exc:  # noqa: BLE001
        if Attr.RDATTR_ERROR not in requested:
            raise _fail(exc) from exc
        status = _fail(exc).status
        return encode_bitmap({Attr.RDATTR_ERROR}) + U32.pack(4) + U32.pack(status)


def _pseudo_entries(cs: CompoundState, path: str, cookie: int, requested: set[int]):
    children = sorted((name_cookie(name), name, export)
                      for name, export in cs.server.pseudo.children(path, cs.address))
    for entry_cookie, name, export in children:
        if entry_cookie <= cookie:
            continue
        if export is None:
            child_path = join(path, name)
            fh = cs.server.fh.pseudo(child_path)
            make = lambda p=child_path, f=fh: pseudo_source(cs, p, f.raw)  # noqa: E731
        else:
            make = lambda e=export: _export_root_source(cs, e)  # noqa: E731
        yield entry_cookie, name, lambda m=make: _entry_attrs(cs, requested, m)


def _export_root_source(cs: CompoundState, export):
    fh = export_root_fh(cs, export)
    scope = cs.scope(fh)
    return export_source(cs, scope, fh.raw, _stat(scope))


def _export_entries(cs: CompoundState, scope, fh: Fh4, cookie: int, requested: set[int]):
    backend = scope.backend
    try:
        entries = backend.list_directory(scope.node, scope.who, cookie)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    with_handle = Attr.FILEHANDLE in requested
    for entry in entries:
        def make(name=entry.name):
            if not with_handle:   # no handle asked for: one lstat, as the caller
                with acting_as(scope.who):
                    st = os.stat(name, dir_fd=scope.node.fd, follow_symlinks=False)
                return export_source(cs, scope, b"", st)
            handle, st = backend.entry_node(scope.node, name, scope.who)
            child = cs.server.fh.export_object(fh.export_id, handle)
            return export_source(cs, scope, child.raw, st)
        yield entry.cookie, entry.name, lambda m=make: _entry_attrs(cs, requested, m)


def op_readdir(cs: CompoundState, args: Unpacker):
    cookie, verifier = args.unpack_uhyper(), args.unpack_fopaque(8)
    args.unpack_uint()   # dircount: a hint the server may ignore (RFC 8881 §18.23.3); maxcount bounds the reply
    maxcount = args.unpack_uint()
    requested = decode_bitmap(args)
    fh = cs.require_fh()
    scope = _dir_scope(cs, write=False)
    if cookie in (1, 2):
        raise Nfs4Error(Nfs4Stat.BAD_COOKIE, f"reserved cookie {cookie}")
    if cookie and verifier not in (COOKIE_VERIFIER, ZERO_VERIFIER):
        raise Nfs4Error(Nfs4Stat.NOT_SAME, "cookie verifier of another listing")
    if cookie and not cookie & COOKIE_FLAG:
        raise Nfs4Error(Nfs4Stat.BAD_COOKIE, f"cookie {cookie:#x} was not issued by this server")
    if scope is None:
        entries = _pseudo_entries(cs, fh.pseudo_path, cookie, requested)
    else:
        entries = _export_entries(cs, scope, fh, cookie, requested)
    budget = min(maxcount, MAX_READDIR) - READDIR_FIXED
    parts: list[bytes] = []
    eof = True
    for entry_cookie, name, attrs in entries:
        encoded = _entry(entry_cookie, name, attrs())
        budget -= len(encoded)
        if budget < 0:
            eof = False
            break
        parts.append(encoded)
    if not parts and not eof:
        raise Nfs4Error(Nfs4Stat.TOOSMALL, "maxcount too small for one entry")
    return COOKIE_VERIFIER + b"".join(parts) + FALSE + (TRUE if eof else FALSE)


# ----- CREATE / REMOVE / RENAME / LINK / READLINK ----------------------------------------------
_DEVICE_KINDS = {FType.BLK: "blk", FType.CHR: "chr", FType.SOCK: "sock", FType.FIFO: "fifo"}


def op_create(cs: CompoundState, args: Unpacker) -> bytes:
    kind = args.unpack_uint()
    target = rdev = None
    if kind == FType.LNK:
        target = decode_utf8(args, 4096)
    elif kind in (FType.BLK, FType.CHR):
        rdev = os.makedev(args.unpack_uint(), args.unpack_uint())
    elif kind not in (FType.DIR, FType.SOCK, FType.FIFO):
        raise Nfs4Error(Nfs4Stat.BADTYPE, f"CREATE of type {kind}")
    name = decode_component(args)
    changes, bits = decode_fattr4_setattrs(args, cs.minorversion)
    fh = cs.require_fh()
    scope = _dir_scope(cs, write=True)
    if kind == FType.LNK and not target:
        raise Nfs4Error(Nfs4Stat.INVAL, "empty symbolic link target")
    backend = scope.backend
    try:
        before = _stat(scope)
        if kind == FType.DIR:
            node = backend.mkdir(scope.node, name, scope.who, changes)
        elif kind == FType.LNK:
            node = backend.symlink(scope.node, name, scope.who, target.encode("utf-8"), changes)
        else:
            node = backend.mknod(scope.node, name, scope.who, _DEVICE_KINDS[kind], changes, rdev or 0)
        after = _stat(scope)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    cs.current_fh = cs.server.fh.export_object(fh.export_id, node.handle)
    cs.current_stateid = None
    return encode_change_info(before, after) + encode_bitmap(bits)


def _lstat_child(scope, name: str):
    try:
        return os.stat(name, dir_fd=scope.node.fd, follow_symlinks=False)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc


def op_remove(cs: CompoundState, args: Unpacker) -> bytes:
    name = decode_component(args)
    cs.require_fh()
    scope = _dir_scope(cs, write=True)
    st = _lstat_child(scope, name)
    try:
        before = _stat(scope)
        scope.backend.remove(scope.node, name, scope.who, statmod.S_ISDIR(st.st_mode))
        after = _stat(scope)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    return encode_change_info(before, after)


def _two_handles(cs: CompoundState) -> tuple[Fh4, Fh4]:
    current = cs.require_fh()
    if cs.saved_fh is None:
        raise Nfs4Error(Nfs4Stat.NOFILEHANDLE, "no saved file handle")
    return cs.saved_fh, current


def op_rename(cs: CompoundState, args: Unpacker) -> bytes:
    old, new = decode_component(args), decode_component(args)
    saved, current = _two_handles(cs)
    if saved.is_pseudo or current.is_pseudo:
        if saved.is_pseudo and current.is_pseudo:
            raise Nfs4Error(Nfs4Stat.ROFS, "the pseudo file system is read-only")
        raise Nfs4Error(Nfs4Stat.XDEV, "rename across file systems")
    if saved.export_id != current.export_id:
        raise Nfs4Error(Nfs4Stat.XDEV, "rename across exports")
    source = _dir_scope(cs, saved, write=True)
    target = _dir_scope(cs, current, write=True)
    try:
        source_before, target_before = _stat(source), _stat(target)
        source.backend.rename(source.node, old, target.node, new, source.who)
        source_after, target_after = _stat(source), _stat(target)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    return encode_change_info(source_before, source_after) + encode_change_info(target_before, target_after)


def op_link(cs: CompoundState, args: Unpacker) -> bytes:
    name = decode_component(args)
    saved, current = _two_handles(cs)
    if saved.is_pseudo:
        raise Nfs4Error(Nfs4Stat.ISDIR, "a pseudo-fs directory")
    if current.is_pseudo:
        raise Nfs4Error(Nfs4Stat.XDEV if not saved.is_pseudo else Nfs4Stat.ROFS, "link into the pseudo fs")
    if saved.export_id != current.export_id:
        raise Nfs4Error(Nfs4Stat.XDEV, "link across exports")
    source = cs.scope(saved, write=True)
    if source.node.is_dir:
        raise Nfs4Error(Nfs4Stat.ISDIR, "cannot hard-link a directory")
    directory = _dir_scope(cs, current, write=True)
    try:
        before = _stat(directory)
        directory.backend.link(source.node, directory.node, name, directory.who)
        after = _stat(directory)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    return encode_change_info(before, after)


def op_readlink(cs: CompoundState, args: Unpacker) -> bytes:
    scope = cs.scope()
    if scope is None or not statmod.S_ISLNK(scope.node.mode):
        raise Nfs4Error(Nfs4Stat.INVAL, "not a symbolic link")
    try:
        target = scope.backend.readlink(scope.node, scope.who)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    return U32.pack(len(target)) + target + b"\0" * (-len(target) & 3)


# ----- helpers for OPEN (engineer B) -------------------------------------------------------------
def open_lookup(cs: CompoundState, name: str) -> Fh4:
    """The regular file ``name`` in the current directory (OPEN CLAIM_NULL without create)."""
    fh, _ = child_fh(cs, name)
    scope = cs.scope(fh)
    if scope is None or scope.node.is_dir:
        raise Nfs4Error(Nfs4Stat.ISDIR, f"{name!r} is a directory")
    if statmod.S_ISLNK(scope.node.mode):
        raise Nfs4Error(Nfs4Stat.SYMLINK, f"{name!r} is a symbolic link")
    if not scope.node.is_reg:
        raise Nfs4Error(Nfs4Stat.WRONG_TYPE if cs.minorversion >= 1 else Nfs4Stat.INVAL, f"{name!r} is special")
    return fh


_HOW = {"unchecked": 0, "guarded": 1, "exclusive": 2, "exclusive41": 2}


def open_create(cs: CompoundState, name: str, how: str, attrs: SetAttributes,
                verifier: bytes = b"\0" * 8, attr_bits: set[int] | frozenset = frozenset()):
    """Create (or, UNCHECKED / a retried EXCLUSIVE, find) the regular file ``name`` in the
    current directory: (Fh4, created, attrset bitmap bytes).  EXCLUSIVE keeps the verifier in
    the file's times as v3 does; EXCLUSIVE4_1 then applies ``attrs`` (no times).  The
    directory's change_info4 is left in ``cs.cinfo`` for OPEN4resok."""
    fh = cs.require_fh()
    scope = _dir_scope(cs, write=True)
    backend = scope.backend
    try:
        before = _stat(scope)
        try:
            os.stat(name, dir_fd=scope.node.fd, follow_symlinks=False)
            existed = True
        except FileNotFoundError:
            existed = False
        node, _ = backend.create(scope.node, name, scope.who, _HOW[how], attrs, verifier)
        if how == "exclusive41" and not existed:
            rest = SetAttributes(attrs.mode, attrs.uid, attrs.gid, attrs.size)
            if not rest.is_empty():
                backend.setattr(node, scope.who, rest, None)
        after = _stat(scope)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    if not node.is_reg:
        raise Nfs4Error(Nfs4Stat.EXIST, f"{name!r} exists and is not a regular file")
    cs.cinfo = encode_change_info(before, after)
    if how == "exclusive":
        attrset = {Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET} if not existed else set()
    elif existed:
        attrset = set(attr_bits) & {Attr.SIZE}
    else:
        attrset = set(attr_bits)
    return cs.server.fh.export_object(fh.export_id, node.handle), not existed, encode_bitmap(attrset)


OPS = {
    Op.READDIR: OpSpec("READDIR", op_readdir),
    Op.CREATE: OpSpec("CREATE", op_create),
    Op.REMOVE: OpSpec("REMOVE", op_remove),
    Op.RENAME: OpSpec("RENAME", op_rename),
    Op.LINK: OpSpec("LINK", op_link),
    Op.READLINK: OpSpec("READLINK", op_readlink),
}
