"""NFSv4 file-handle and namespace-walk ops: PUTFH, PUTROOTFH, PUTPUBFH, GETFH, SAVEFH, RESTOREFH,
LOOKUP, LOOKUPP, SECINFO, SECINFO_NO_NAME.

Owns moving the current/saved file handle, walking the pseudo fs and crossing into and
out of exports (an export's root sits at its path in the pseudo fs; LOOKUPP from it
returns to the pseudo directory).  Security flavours: AUTH_SYS only.  Sans-IO apart
from the backend lookups.
"""

from __future__ import annotations

import stat

from acmenfs.nfs4.compound import CompoundState, OpSpec
from acmenfs.nfs4.const import (
    AUTH_SYS, NFS4_FHSIZE, SECINFO_STYLE4_CURRENT_FH, SECINFO_STYLE4_PARENT, Nfs4Stat, Op,
)
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.fh4 import Fh4
from acmenfs.nfs4.pseudofs import parent_of
from acmenfs.nfs4.xdr4 import U32, decode_component, encode_opaque
from acmenfs.oncrpc.xdr import Unpacker

SECINFO_REPLY = U32.pack(1) + U32.pack(AUTH_SYS)


def _set_current(cs: CompoundState, fh: Fh4) -> None:
    cs.current_fh = fh
    cs.current_stateid = None   # RFC 8881 §16.2.3.1.2: a new current fh clears the current stateid


def export_root_fh(cs: CompoundState, export) -> Fh4:
    """The handle of an export's root, once the caller's address passed the export's rules."""
    backend = cs.server.nfs.backend(export)
    fh = cs.server.fh.export_object(export.export_id, backend.root_handle)
    cs.scope(fh)   # ACCESS if the client's rule vanished meanwhile
    return fh


def child_fh(cs: CompoundState, name: str) -> tuple[Fh4, object]:
    """LOOKUP of ``name`` in the current fh: (fh, scope of the parent or None for pseudo)."""
    fh = cs.require_fh()
    if fh.is_pseudo:
        path, export = cs.server.pseudo.lookup(fh.pseudo_path, name, cs.address)
        return (cs.server.fh.pseudo(path) if export is None else export_root_fh(cs, export)), None
    scope = cs.scope(fh)
    _require_directory(scope.node)
    try:
        child, _, _ = scope.backend.lookup(scope.node, name, scope.who)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    return cs.server.fh.export_object(fh.export_id, child.handle), scope


def _require_directory(node) -> None:
    if node.is_dir:
        return
    if stat.S_ISLNK(node.mode):
        raise Nfs4Error(Nfs4Stat.SYMLINK, "a symbolic link")
    raise Nfs4Error(Nfs4Stat.NOTDIR, "not a directory")


def parent_fh(cs: CompoundState) -> Fh4:
    fh = cs.require_fh()
    if fh.is_pseudo:
        cs.server.pseudo.require(fh.pseudo_path, cs.address)
        if fh.pseudo_path == "/":
            raise Nfs4Error(Nfs4Stat.NOENT, "the pseudo root has no parent")
        return cs.server.fh.pseudo(parent_of(fh.pseudo_path))
    scope = cs.scope(fh)
    _require_directory(scope.node)
    if scope.backend.is_root(scope.node):
        return cs.server.fh.pseudo(cs.server.pseudo.mount_point_of(scope.export))
    try:
        parent, _, _ = scope.backend.lookup(scope.node, "..", scope.who)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    return cs.server.fh.export_object(fh.export_id, parent.handle)


# ----- the ops ----------------------------------------------------------------------------
def op_putfh(cs: CompoundState, args: Unpacker) -> bytes:
    raw = args.unpack_opaque(NFS4_FHSIZE)
    fh = cs.server.fh.decode(raw)
    cs.scope(fh)  # BADHANDLE / STALE / ACCESS now, not at the next op
    _set_current(cs, fh)
    return b""


def op_putrootfh(cs: CompoundState, args: Unpacker) -> bytes:
    _set_current(cs, cs.server.fh.pseudo("/"))
    return b""


def op_getfh(cs: CompoundState, args: Unpacker) -> bytes:
    return encode_opaque(cs.require_fh().raw)


def op_savefh(cs: CompoundState, args: Unpacker) -> bytes:
    cs.saved_fh = cs.require_fh()
    cs.saved_stateid = cs.current_stateid
    return b""


def op_restorefh(cs: CompoundState, args: Unpacker) -> bytes:
    if cs.saved_fh is None:
        raise Nfs4Error(Nfs4Stat.RESTOREFH, "no saved file handle")
    cs.current_fh = cs.saved_fh
    cs.current_stateid = cs.saved_stateid
    return b""


def op_lookup(cs: CompoundState, args: Unpacker) -> bytes:
    name = decode_component(args)
    cs.require_fh()
    fh, _ = child_fh(cs, name)
    _set_current(cs, fh)
    return b""


def op_lookupp(cs: CompoundState, args: Unpacker) -> bytes:
    _set_current(cs, parent_fh(cs))
    return b""


def op_secinfo(cs: CompoundState, args: Unpacker) -> bytes:
    name = decode_component(args)
    child_fh(cs, name)  # NOENT, NOTDIR, ...
    if cs.minorversion >= 1:
        cs.current_fh = None   # RFC 8881 §18.29.3: SECINFO consumes the current fh
    return SECINFO_REPLY


def op_secinfo_no_name(cs: CompoundState, args: Unpacker) -> bytes:
    style = args.unpack_uint()
    if style == SECINFO_STYLE4_PARENT:
        parent_fh(cs)
    elif style == SECINFO_STYLE4_CURRENT_FH:
        cs.scope()
    else:
        raise Nfs4Error(Nfs4Stat.INVAL, f"secinfo style {style}")
    cs.current_fh = None   # RFC 8881 §18.45.3
    return SECINFO_REPLY


OPS = {
    Op.PUTFH: OpSpec("PUTFH", op_putfh),
    Op.PUTROOTFH: OpSpec("PUTROOTFH", op_putrootfh),
    Op.PUTPUBFH: OpSpec("PUTPUBFH", op_putrootfh),
    Op.GETFH: OpSpec("GETFH", op_getfh),
    Op.SAVEFH: OpSpec("SAVEFH", op_savefh),
    Op.RESTOREFH: OpSpec("RESTOREFH", op_restorefh),
    Op.LOOKUP: OpSpec("LOOKUP", op_lookup),
    Op.LOOKUPP: OpSpec("LOOKUPP", op_lookupp),
    Op.SECINFO: OpSpec("SECINFO", op_secinfo),
    Op.SECINFO_NO_NAME: OpSpec("SECINFO_NO_NAME", op_secinfo_no_name, minor_min=1),
}
