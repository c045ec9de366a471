"""XDR encoders/decoders of NFSv3 structures (RFC 1813 section 2.5-2.6).

Owns the byte layout of fattr3, wcc_attr / wcc_data, post_op_attr, post_op_fh3,
sattr3, nfs_fh3 and diropargs3, with precompiled ``struct.Struct`` objects so
the hot replies (GETATTR, READ, WRITE, LOOKUP) are a few C calls.  Attributes
come in as ``os.stat_result`` plus the export's fsid; it does no I/O and
decides nothing.
"""

from __future__ import annotations

import os
import stat
import struct

from acmenfs.fs.backend import SetAttributes

NO_CHANGES = SetAttributes()
from acmenfs.nfs3.const import NFS3_FHSIZE, FileType
from acmenfs.oncrpc.xdr import Unpacker, XdrError

UINT32 = struct.Struct(">I")
TWO_UINT32 = struct.Struct(">II")
UINT64 = struct.Struct(">Q")
# type mode nlink uid gid size used rdev(major minor) fsid fileid atime mtime ctime
FATTR3 = struct.Struct(">IIIIIQQIIQQIIIIII")
POST_OP_FATTR3 = struct.Struct(">IIIIIIQQIIQQIIIIII")  # value_follows TRUE + fattr3
WCC_ATTR = struct.Struct(">IQIIII")  # value_follows TRUE + size, mtime, ctime
STATUS_OK = UINT32.pack(0)
FALSE = UINT32.pack(0)
TRUE = UINT32.pack(1)
NO_ATTRS = FALSE
NO_WCC = FALSE + FALSE
FATTR3_SIZE = FATTR3.size
POST_OP_ATTR_SIZE = POST_OP_FATTR3.size

_FILE_TYPE = {
    stat.S_IFREG: FileType.REG,
    stat.S_IFDIR: FileType.DIR,
    stat.S_IFBLK: FileType.BLK,
    stat.S_IFCHR: FileType.CHR,
    stat.S_IFLNK: FileType.LNK,
    stat.S_IFSOCK: FileType.SOCK,
    stat.S_IFIFO: FileType.FIFO,
}
MAX_NAME_BYTES = 4096
MAX_PATH_BYTES = 4096
_UINT32_MASK = 0xFFFFFFFF
_major, _minor = os.major, os.minor


def file_type(st_mode: int) -> FileType:
    return _FILE_TYPE.get(stat.S_IFMT(st_mode), FileType.REG)


def fileid_of(st: os.stat_result, root_dev: int) -> int:
    """Unique non-zero fileid: st_ino, mixed with the device for objects on another device (btrfs subvolumes)."""
    if st.st_dev == root_dev:
        return st.st_ino or 1
    return ((st.st_dev * 0x9E3779B97F4A7C15) ^ st.st_ino) & 0xFFFFFFFFFFFFFFFF or 1


def word_and_fattr3(word: int, st: os.stat_result, fsid: int, root_dev: int) -> bytes:
    """One XDR word followed by the fattr3 of ``st``, in a single ``pack`` (the hot path).

    With word 1 this is a present post_op_attr; with word 0 (NFS3_OK) a GETATTR reply.
    """
    rdev, ino = st.st_rdev, st.st_ino
    atime, mtime, ctime = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
    return POST_OP_FATTR3.pack(
        word,
        _FILE_TYPE.get(st.st_mode & 0o170000, 1),
        st.st_mode & 0o7777,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_blocks * 512,
        _major(rdev) if rdev else 0,  # most objects are not devices: skip two calls
        _minor(rdev) if rdev else 0,
        fsid,
        ino if ino and st.st_dev == root_dev else fileid_of(st, root_dev),
        (atime // 1_000_000_000) & _UINT32_MASK,
        atime % 1_000_000_000,
        (mtime // 1_000_000_000) & _UINT32_MASK,
        mtime % 1_000_000_000,
        (ctime // 1_000_000_000) & _UINT32_MASK,
        ctime % 1_000_000_000,
    )


def encode_fattr3(st: os.stat_result, fsid: int, root_dev: int) -> bytes:
    return word_and_fattr3(0, st, fsid, root_dev)[4:]


def encode_post_op_attr(st: os.stat_result | None, fsid: int, root_dev: int) -> bytes:
    if st is None:
        return NO_ATTRS
    return word_and_fattr3(1, st, fsid, root_dev)


def encode_pre_op_attr(st: os.stat_result | None) -> bytes:
    if st is None:
        return FALSE
    mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
    return WCC_ATTR.pack(
        1,
        st.st_size,
        (mtime // 1_000_000_000) & _UINT32_MASK,
        mtime % 1_000_000_000,
        (ctime // 1_000_000_000) & _UINT32_MASK,
        ctime % 1_000_000_000,
    )


def encode_wcc_data(pre: os.stat_result | None, post: os.stat_result | None, fsid: int, root_dev: int) -> bytes:
    return encode_pre_op_attr(pre) + encode_post_op_attr(post, fsid, root_dev)


def encode_opaque(data: bytes) -> bytes:
    """Variable-length opaque / string: length, bytes, zero padding."""
    return UINT32.pack(len(data)) + data + b"\0" * (-len(data) & 3)


def encode_fh(handle: bytes) -> bytes:
    return encode_opaque(handle)


def encode_post_op_fh(handle: bytes | None) -> bytes:
    return FALSE if handle is None else TRUE + encode_fh(handle)


# The decoders below read the Unpacker's buffer directly (they run on every call).
def _opaque_bounds(args: Unpacker, limit: int) -> tuple[int, int]:
    """(start, stop) of the variable-length opaque at the offset; advances past its padding."""
    start = args.offset
    if start + 4 > args.end:
        raise XdrError(f"truncated data: need 4 bytes at offset {start}, have {args.end - start}")
    length = UINT32.unpack_from(args.view, start)[0]
    if length > limit:
        raise XdrError(f"opaque of {length} bytes exceeds limit {limit}")
    stop = start + 4 + length
    padded = stop + (-length & 3)
    if padded > args.end:
        raise XdrError(f"truncated data: need {padded - start} bytes at offset {start}, have {args.end - start}")
    args.offset = padded
    return start + 4, stop


def decode_fh(args: Unpacker) -> bytes:
    start, stop = _opaque_bounds(args, NFS3_FHSIZE)
    return args.view[start:stop].tobytes()


_READ_ARGS = struct.Struct(">QI")     # READ3args after the handle: offset, count
_WRITE_ARGS = struct.Struct(">QIII")  # WRITE3args after the handle: offset, count, stable, data length


def decode_read_args(args: Unpacker) -> tuple[bytes, int, int]:
    """READ3args: (file handle, offset, count), one unpack after the handle."""
    fh = decode_fh(args)
    start = args.offset
    if start + 12 > args.end:
        raise XdrError(f"truncated data: need 12 bytes at offset {start}, have {args.end - start}")
    args.offset = start + 12
    offset, count = _READ_ARGS.unpack_from(args.view, start)
    return fh, offset, count


def decode_write_args(args: Unpacker) -> tuple[bytes, int, int, int, memoryview]:
    """WRITE3args: (file handle, offset, count, stable_how, data) with ``data`` a view into the
    record (no copy); data past the end of the record is an XdrError."""
    fh = decode_fh(args)
    start = args.offset
    if start + 20 > args.end:
        raise XdrError(f"truncated data: need 20 bytes at offset {start}, have {args.end - start}")
    offset, count, stable, length = _WRITE_ARGS.unpack_from(args.view, start)
    data_start = start + 20
    padded = data_start + length + (-length & 3)
    if padded > args.end:
        raise XdrError(f"truncated data: need {padded - start} bytes at offset {start}, have {args.end - start}")
    args.offset = padded
    return fh, offset, count, stable, args.view[data_start:data_start + length]


def decode_name(args: Unpacker) -> str:
    start, stop = _opaque_bounds(args, MAX_NAME_BYTES)
    return str(args.view[start:stop], "utf-8", "surrogateescape")


def decode_diropargs(args: Unpacker) -> tuple[bytes, str]:
    return decode_fh(args), decode_name(args)


def _word(view, offset: int) -> int:
    try:
        return UINT32.unpack_from(view, offset)[0]
    except struct.error:
        raise XdrError(f"truncated data: need 4 bytes at offset {offset}") from None


def _decode_time(view, offset: int):
    """(set_time value, next offset): None = leave, "server" = now, int = ns since epoch."""
    how = _word(view, offset)
    if how == 0:
        return None, offset + 4
    if how == 1:
        return "server", offset + 4
    if how == 2:
        seconds, nanoseconds = _word(view, offset + 4), _word(view, offset + 8)
        if nanoseconds >= 1_000_000_000:
            raise XdrError(f"nanoseconds out of range: {nanoseconds}")
        return seconds * 1_000_000_000 + nanoseconds, offset + 12
    raise XdrError(f"bad time_how {how}")


_unpack_word = UINT32.unpack_from
_unpack_hyper = UINT64.unpack_from
_unpack_two_words = TWO_UINT32.unpack_from


def decode_sattr3(args: Unpacker) -> SetAttributes:
    # Reads words straight from the buffer (no helper call per field): CREATE and SETATTR run this.
    view, offset = args.view, args.offset
    values: list = []
    try:
        for _ in range(3):  # mode, uid, gid
            flag = _unpack_word(view, offset)[0]
            if flag == 0:
                values.append(None)
                offset += 4
            elif flag == 1:
                values.append(_unpack_word(view, offset + 4)[0])
                offset += 8
            else:
                raise XdrError(f"bad boolean value {flag}")
        flag = _unpack_word(view, offset)[0]
        if flag == 0:
            size = None
            offset += 4
        elif flag == 1:
            size = _unpack_hyper(view, offset + 4)[0]
            offset += 12
        else:
            raise XdrError(f"bad boolean value {flag}")
        times = _unpack_two_words(view, offset)
    except struct.error:
        raise XdrError(f"truncated sattr3 at offset {offset}") from None
    if times == (0, 0):  # neither time set: the common case
        atime = mtime = None
        offset += 8
    else:
        atime, offset = _decode_time(view, offset)
        mtime, offset = _decode_time(view, offset)
    if offset > args.end:
        raise XdrError(f"truncated data at offset {offset}")
    args.offset = offset
    if values[0] is None and values[1] is None and values[2] is None and size is None \
            and atime is None and mtime is None:
        return NO_CHANGES
    return SetAttributes(values[0], values[1], values[2], size, atime, mtime)


def encode_sattr3(changes: SetAttributes) -> bytes:
    """Used by tests and clients: the inverse of ``decode_sattr3``."""
    out = bytearray()
    for value in (changes.mode, changes.uid, changes.gid):
        out += FALSE if value is None else TRUE + UINT32.pack(value)
    out += FALSE if changes.size is None else TRUE + UINT64.pack(changes.size)
    for value in (changes.atime, changes.mtime):
        if value is None:
            out += UINT32.pack(0)
        elif value == "server":
            out += UINT32.pack(1)
        else:
            out += UINT32.pack(2) + TWO_UINT32.pack(value // 1_000_000_000, value % 1_000_000_000)
    return bytes(out)
