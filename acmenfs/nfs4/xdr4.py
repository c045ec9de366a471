"""NFSv4 XDR helpers on top of ``acmenfs.oncrpc.xdr``: bitmap4, stateid4, utf8 strings, component4,
nfstime4, fsid4, change_info4.

Owns only encodings shared by several operations; each operation decodes its own
arguments with an ``Unpacker``.  Invalid names raise ``Nfs4Error`` with the
status RFC 8881 §14 asks for (INVAL, BADCHAR, BADNAME, NAMETOOLONG).  No I/O.
"""

from __future__ import annotations

import struct

from acmenfs.nfs4.const import MAX_NAME, STATEID_SIZE, Nfs4Stat
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.oncrpc.xdr import Unpacker, XdrError

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
NFSTIME = struct.Struct(">qI")
FSID = struct.Struct(">QQ")
CHANGE_INFO = struct.Struct(">IQQ")
OK = U32.pack(0)
TRUE, FALSE = U32.pack(1), U32.pack(0)
ANONYMOUS_STATEID = b"\0" * STATEID_SIZE
BYPASS_STATEID = b"\xff" * STATEID_SIZE
CURRENT_STATEID = U32.pack(1) + b"\0" * 12   # 4.1: seqid 1, other all zeros
MAX_BITMAP_WORDS = 8


# ----- bitmap4 ----------------------------------------------------------------------
_BITMAPS: dict[tuple, frozenset] = {}
_WORDS = [struct.Struct(f">{count}I") for count in range(MAX_BITMAP_WORDS + 1)]


def decode_bitmap_words(args: Unpacker) -> tuple[int, ...]:
    """A bitmap4 as its words (what GETATTR keys its remembered encoder on)."""
    count = args.unpack_uint()
    if count > MAX_BITMAP_WORDS:
        raise XdrError(f"bitmap4 of {count} words")
    start = args.offset
    args.unpack_fopaque_view(4 * count)          # bounds check and advance
    return _WORDS[count].unpack_from(args.view, start)


def bitmap_attrs(words: tuple[int, ...]) -> frozenset[int]:
    """The attribute numbers of bitmap4 words (clients repeat a few bitmaps: remembered)."""
    attrs = _BITMAPS.get(words)
    if attrs is None:
        attrs = frozenset(index * 32 + bit for index, word in enumerate(words) for bit in range(32)
                          if word >> bit & 1)
        if len(_BITMAPS) < 4096:
            _BITMAPS[words] = attrs
    return attrs


def decode_bitmap(args: Unpacker) -> frozenset[int]:
    """A bitmap4 as the set of attribute numbers."""
    return bitmap_attrs(decode_bitmap_words(args))


def encode_bitmap(attrs) -> bytes:
    attrs = sorted(attrs)
    if not attrs:
        return U32.pack(0)
    words = [0] * (attrs[-1] // 32 + 1)
    for attr in attrs:
        words[attr // 32] |= 1 << (attr % 32)
    return U32.pack(len(words)) + b"".join(U32.pack(word) for word in words)


# ----- opaque and strings -------------------------------------------------------------
def encode_opaque(data: bytes) -> bytes:
    return U32.pack(len(data)) + data + b"\0" * (-len(data) & 3)


def encode_utf8(text: str) -> bytes:
    return encode_opaque(text.encode("utf-8", "surrogateescape"))


def decode_utf8(args: Unpacker, max_length: int = 4096) -> str:
    """utf8str_cs / utf8str_cis; invalid UTF-8 -> NFS4ERR_INVAL."""
    raw = args.unpack_opaque_view(max_length)
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise Nfs4Error(Nfs4Stat.INVAL, "string is not UTF-8") from exc


def decode_component(args: Unpacker) -> str:
    """component4 with RFC 8881 §14.2 checks: empty -> INVAL, not UTF-8 -> INVAL,
    '/' or NUL -> BADCHAR, '.'/'..' -> BADNAME, longer than maxname -> NAMETOOLONG."""
    raw = args.unpack_opaque_view(64 * 1024)
    if len(raw) == 0:
        raise Nfs4Error(Nfs4Stat.INVAL, "empty component name")
    try:
        name = str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise Nfs4Error(Nfs4Stat.INVAL, "component name is not UTF-8") from exc
    if len(raw) > MAX_NAME:
        raise Nfs4Error(Nfs4Stat.NAMETOOLONG, "component name too long")
    if "/" in name or "\0" in name:
        raise Nfs4Error(Nfs4Stat.BADCHAR, "component name contains '/' or NUL")
    if name in (".", ".."):
        raise Nfs4Error(Nfs4Stat.BADNAME, f"component name {name!r}")
    return name


# ----- stateid4, nfstime4, fsid4, change_info4 -------------------------------------------
def decode_stateid(args: Unpacker) -> bytes:
    return args.unpack_fopaque(STATEID_SIZE)


def encode_time(ns: int) -> bytes:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return NFSTIME.pack(seconds, nanos)


def decode_time(args: Unpacker) -> int:
    seconds, nanos = args.unpack_hyper(), args.unpack_uint()
    if nanos >= 1_000_000_000:
        raise Nfs4Error(Nfs4Stat.INVAL, "nseconds out of range")
    return seconds * 1_000_000_000 + nanos


def encode_fsid(major: int, minor: int) -> bytes:
    return FSID.pack(major, minor)


def encode_change_info(before: int, after: int, atomic: bool = True) -> bytes:
    return CHANGE_INFO.pack(1 if atomic else 0, before, after)


def stat_change(st) -> int:
    """change attribute of a stat result: ctime in ns (changes on every data or metadata change)."""
    return st.st_ctime_ns if st is not None else 0


__all__ = ["XdrError"]
