"""NFSv4 attribute ops: GETATTR, SETATTR, VERIFY, NVERIFY, ACCESS; and ``source_for`` (attributes
of an object, shared with READDIR).

Owns turning the current fh into an ``AttrSource`` (pseudo directory or export object:
fsid = the export's v3 fsid, fileid as v3, mounted_on_fileid of an export root = its
pseudo-fs fileid) and the ACCESS bit mapping from the backend's rwx permission.
SETATTR's result carries the attrsset bitmap on failure too (RFC 8881 §18.30).
"""

from __future__ import annotations

from acmenfs.nfs3.xdr import fileid_of
from acmenfs.nfs4.attrs import (
    SUPPORTED, AttrSource, decode_fattr4_raw, decode_fattr4_setattrs, encode_attrlist, encode_fattr_for_words,
)
from acmenfs.nfs4.compound import CompoundState, OpSpec, effective_stateid
from acmenfs.nfs4.const import Access, Attr, Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.fh4 import Fh4
from acmenfs.nfs4.pseudofs import PSEUDO_FSID, pseudo_fileid
from acmenfs.nfs4.xdr4 import U32, decode_bitmap_words, decode_stateid, encode_bitmap
from acmenfs.oncrpc.xdr import Unpacker

EMPTY_BITMAP = encode_bitmap(())
ALL_ACCESS = 0x3F


def export_source(cs: CompoundState, scope, fh_raw: bytes, st) -> AttrSource:
    return export_source_of(cs.server, cs.minorversion, scope, fh_raw, st)


def export_source_of(server, minor: int, scope, fh_raw: bytes, st) -> AttrSource:
    """``export_source`` without a CompoundState (the COMPOUND fast path has none)."""
    backend = scope.backend
    fileid = fileid_of(st, backend.root_dev)
    mounted_on = fileid
    if st.st_ino == backend.root_ino and st.st_dev == backend.root_dev:   # the export's root
        mounted_on = pseudo_fileid("/" + "/".join(p for p in scope.export.path.split("/") if p))
    return AttrSource(st, fh_raw, (scope.fsid, 0), fileid, mounted_on, backend.statvfs,
                      server.lease_seconds, minor, server.nfs.path_table is None)


def pseudo_source(cs: CompoundState, path: str, fh_raw: bytes) -> AttrSource:
    st = cs.server.pseudo.stat(path, cs.address)
    return AttrSource(st, fh_raw, PSEUDO_FSID, st.st_ino, st.st_ino, None, cs.server.lease_seconds,
                      cs.minorversion)


def source_for(cs: CompoundState, fh: Fh4 | None = None) -> AttrSource:
    fh = cs.require_fh() if fh is None else fh
    if fh.is_pseudo:
        return pseudo_source(cs, fh.pseudo_path, fh.raw)
    scope = cs.scope(fh)
    try:
        st = scope.backend.stat(scope.node)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    return export_source(cs, scope, fh.raw, st)


def op_getattr(cs: CompoundState, args: Unpacker) -> bytes:
    words = decode_bitmap_words(args)
    return encode_fattr_for_words(words, source_for(cs))


def op_setattr(cs: CompoundState, args: Unpacker) -> bytes:
    try:
        stateid = decode_stateid(args)
        changes, bits = decode_fattr4_setattrs(args, cs.minorversion)
        scope = cs.scope(write=True)
        if changes.size is not None:
            if scope.node.is_dir:
                raise Nfs4Error(Nfs4Stat.ISDIR, "size of a directory")
            if not scope.node.is_reg:
                raise Nfs4Error(Nfs4Stat.INVAL, "size of a special file")
            cs.server.state.check_io(effective_stateid(cs, stateid), cs.file_key(), True)
        scope.backend.setattr(scope.node, scope.who, changes, None)
    except Exception as exc:  # noqa: BLE001 - SETATTR4res always carries attrsset
        raise Nfs4Error(status_for(exc), str(exc), body=EMPTY_BITMAP) from exc
    return encode_bitmap(bits)


def _verify(cs: CompoundState, args: Unpacker) -> bool:
    bits, data = decode_fattr4_raw(args)
    if Attr.RDATTR_ERROR in bits:
        raise Nfs4Error(Nfs4Stat.INVAL, "rdattr_error in VERIFY/NVERIFY")
    if bits - SUPPORTED[cs.minorversion]:
        raise Nfs4Error(Nfs4Stat.ATTRNOTSUPP, f"attributes {sorted(bits - SUPPORTED[cs.minorversion])}")
    if bits & {Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET}:
        raise Nfs4Error(Nfs4Stat.INVAL, "write-only attributes")
    _, ours = encode_attrlist(bits, source_for(cs))
    return ours == data


def op_verify(cs: CompoundState, args: Unpacker) -> bytes:
    if not _verify(cs, args):
        raise Nfs4Error(Nfs4Stat.NOT_SAME, "attributes differ")
    return b""


def op_nverify(cs: CompoundState, args: Unpacker) -> bytes:
    if _verify(cs, args):
        raise Nfs4Error(Nfs4Stat.SAME, "attributes are the same")
    return b""


def op_access(cs: CompoundState, args: Unpacker) -> bytes:
    requested = args.unpack_uint() & ALL_ACCESS
    scope = cs.scope()
    if scope is None:   # pseudo directory: look, never change
        allowed = Access.READ | Access.LOOKUP
        return U32.pack(requested) + U32.pack(requested & allowed)
    try:
        rwx, st = scope.backend.access(scope.node, scope.who)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    is_dir = scope.node.is_dir
    allowed = 0
    if rwx & 4:
        allowed |= Access.READ
    if rwx & 1:
        allowed |= Access.LOOKUP if is_dir else Access.EXECUTE
    if rwx & 2 and scope.writable:
        allowed |= Access.MODIFY | Access.EXTEND
        if is_dir and rwx & 1:
            allowed |= Access.DELETE
    supported = requested if is_dir else requested & ~(Access.LOOKUP | Access.DELETE)
    return U32.pack(supported) + U32.pack(requested & allowed & supported)


OPS = {
    Op.GETATTR: OpSpec("GETATTR", op_getattr),
    Op.SETATTR: OpSpec("SETATTR", op_setattr),
    Op.VERIFY: OpSpec("VERIFY", op_verify),
    Op.NVERIFY: OpSpec("NVERIFY", op_nverify),
    Op.ACCESS: OpSpec("ACCESS", op_access),
}
