"""NFSv4.2 ops for VM images (RFC 7862): SEEK (lseek SEEK_DATA/SEEK_HOLE), ALLOCATE (fallocate),
DEALLOCATE (punch a hole, size kept), CLONE (FICLONERANGE; NFS4ERR_NOTSUPP where the file
system cannot share blocks).

Owns the mapping of these ops onto the export's files with the v3 rules: regular files
only, read/write permission of the (squashed) caller, the export's quota, stateids checked
by ``check_io``.  Sparse-file attributes (clone_blksize, space_freed, change_attr_type) are
in attrs.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import struct

from acmenfs.fs.local import permitted
from acmenfs.fs.quota import charged_bytes, unallocated_bytes
from acmenfs.nfs4.compound import CompoundState, OpSpec, effective_stateid
from acmenfs.nfs4.const import NFS4_CONTENT_DATA, NFS4_CONTENT_HOLE, Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.xdr4 import FALSE, TRUE, U64, decode_stateid
from acmenfs.oncrpc.xdr import Unpacker

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
FICLONERANGE = 0x4020940D
CLONE_RANGE = struct.Struct("=qQQQ")   # src_fd, src_offset, src_length, dest_offset
MAX_OFFSET = 2**63 - 1


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _file_scope(cs: CompoundState, fh, stateid: bytes, write: bool):
    """Scope of a regular file of an export, its stateid checked and the caller permitted."""
    scope = cs.scope(fh, write=write)
    if scope is None or scope.node.is_dir:
        raise Nfs4Error(Nfs4Stat.ISDIR, "a directory")
    if not scope.node.is_reg:
        raise Nfs4Error(Nfs4Stat.INVAL if cs.minorversion < 2 else Nfs4Stat.WRONG_TYPE, "not a regular file")
    key = (fh.export_id, fh.backend_handle)
    cs.server.state.check_io(effective_stateid(cs, stateid), key, write)
    st = scope.backend.stat(scope.node)
    if not permitted(st, scope.who, 2 if write else 4, owner_override=True):
        raise Nfs4Error(Nfs4Stat.ACCESS, "permission denied")
    return scope, st


def _range(offset: int, length: int) -> None:
    if length == 0:
        raise Nfs4Error(Nfs4Stat.INVAL, "zero length")
    if offset > MAX_OFFSET or length > MAX_OFFSET or offset + length > MAX_OFFSET:
        raise Nfs4Error(Nfs4Stat.FBIG, "range beyond the largest file size")


def op_seek(cs: CompoundState, args: Unpacker) -> bytes:
    stateid = decode_stateid(args)
    offset, what = args.unpack_uhyper(), args.unpack_uint()
    if what not in (NFS4_CONTENT_DATA, NFS4_CONTENT_HOLE):
        raise Nfs4Error(Nfs4Stat.UNION_NOTSUPP, f"data_content4 {what}")
    scope, st = _file_scope(cs, cs.require_fh(), stateid, write=False)
    if offset >= st.st_size:
        raise Nfs4Error(Nfs4Stat.NXIO, "offset at or beyond the end of the file")
    fd = scope.node.data_fd()
    try:
        found = os.lseek(fd, offset, os.SEEK_DATA if what == NFS4_CONTENT_DATA else os.SEEK_HOLE)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise Nfs4Error(status_for(exc), str(exc)) from exc
        return TRUE + U64.pack(st.st_size)   # no data after offset: RFC 7862 §15.11.3, eof
    size = os.fstat(fd).st_size
    return (TRUE if found >= size else FALSE) + U64.pack(found)


def _change_space(cs: CompoundState, args: Unpacker, punch: bool) -> bytes:
    stateid = decode_stateid(args)
    offset, length = args.unpack_uhyper(), args.unpack_uhyper()
    _range(offset, length)
    scope, st = _file_scope(cs, cs.require_fh(), stateid, write=True)
    backend = scope.backend
    fd = scope.node.data_fd(writable=True)
    try:
        if punch:
            _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        else:
            if backend.usage.quota_bytes is not None:
                backend.usage.check_growth(unallocated_bytes(fd, offset, length, st.st_size, st.st_blocks))
            _fallocate(fd, 0, offset, length)
        backend.usage.add(charged_bytes(os.fstat(fd)) - charged_bytes(st))
    except Nfs4Error:
        raise
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    backend.committer.mark_dirty(scope.node, offset, 0)
    return b""


def op_allocate(cs: CompoundState, args: Unpacker) -> bytes:
    return _change_space(cs, args, punch=False)


def op_deallocate(cs: CompoundState, args: Unpacker) -> bytes:
    return _change_space(cs, args, punch=True)


def op_clone(cs: CompoundState, args: Unpacker) -> bytes:
    src_stateid, dst_stateid = decode_stateid(args), decode_stateid(args)
    src_offset, dst_offset, count = args.unpack_uhyper(), args.unpack_uhyper(), args.unpack_uhyper()
    dst_fh = cs.require_fh()
    if cs.saved_fh is None:
        raise Nfs4Error(Nfs4Stat.NOFILEHANDLE, "no saved file handle")
    src_fh = cs.saved_fh
    if src_fh.is_pseudo or dst_fh.is_pseudo:
        raise Nfs4Error(Nfs4Stat.ISDIR, "a pseudo-fs directory")
    if src_fh.export_id != dst_fh.export_id:
        raise Nfs4Error(Nfs4Stat.XDEV, "clone across exports")
    for offset in (src_offset, dst_offset):
        if offset > MAX_OFFSET or (count and offset + count > MAX_OFFSET):
            raise Nfs4Error(Nfs4Stat.INVAL, "range beyond the largest offset")
    source, src_st = _file_scope(cs, src_fh, src_stateid, write=False)
    target, dst_st = _file_scope(cs, dst_fh, dst_stateid, write=True)
    if count == 0 and src_offset > src_st.st_size:
        raise Nfs4Error(Nfs4Stat.INVAL, "source offset beyond the end of the file")
    if count and src_offset + count > src_st.st_size:
        raise Nfs4Error(Nfs4Stat.INVAL, "source range beyond the end of the file")
    dst_fd = target.node.data_fd(writable=True)
    try:
        fcntl.ioctl(dst_fd, FICLONERANGE, CLONE_RANGE.pack(source.node.data_fd(), src_offset, count, dst_offset))
        target.backend.usage.add(charged_bytes(os.fstat(dst_fd)) - charged_bytes(dst_st))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.ENOSYS):
            raise Nfs4Error(Nfs4Stat.NOTSUPP, "the file system cannot clone ranges") from exc
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    return b""


OPS = {
    Op.SEEK: OpSpec("SEEK", op_seek, minor_min=2),
    Op.ALLOCATE: OpSpec("ALLOCATE", op_allocate, minor_min=2),
    Op.DEALLOCATE: OpSpec("DEALLOCATE", op_deallocate, minor_min=2),
    Op.CLONE: OpSpec("CLONE", op_clone, minor_min=2),
}
