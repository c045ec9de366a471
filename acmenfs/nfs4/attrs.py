"""NFSv4 attributes: fattr4 encoding from stat results, fattr4 decoding into ``SetAttributes``.

Owns the supported attribute set per minor version, ``AttrSource`` (what one object's
attributes are computed from: its stat or a pseudo directory's ``PseudoStat``, fh,
fsid, fileid, statvfs), ``encode_fattr`` (GETATTR, READDIR entries; unsupported
requested attributes are left out of the bitmap, RFC 8881 §5.6),
``decode_fattr4_setattrs`` (SETATTR, CREATE, OPEN: mode, size, owner, owner_group,
time_access_set, time_modify_set; owners as numeric strings or ``name@domain`` of a
local user, else NFS4ERR_BADOWNER) and ``encode_change_info``.  No file I/O besides
the statvfs callable it is handed.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat as statmod
import struct
from typing import Callable

from acmenfs.fs.backend import SetAttributes
from acmenfs.nfs4.const import (
    FH4_PERSISTENT, MAX_IO, MAX_NAME, SET_TO_CLIENT_TIME4,
    SET_TO_SERVER_TIME4, Attr, FType, Nfs4Stat,
)
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.xdr4 import (
    CHANGE_INFO, U32, bitmap_attrs, decode_bitmap, decode_time, decode_utf8, encode_bitmap, encode_opaque, encode_utf8,
)
from acmenfs.oncrpc.xdr import Unpacker

NFS4_CHANGE_TYPE_IS_TIME_METADATA = 3
CLONE_BLKSIZE = 4096

SUPPORTED_40 = frozenset({
    Attr.SUPPORTED_ATTRS, Attr.TYPE, Attr.FH_EXPIRE_TYPE, Attr.CHANGE, Attr.SIZE, Attr.LINK_SUPPORT,
    Attr.SYMLINK_SUPPORT, Attr.NAMED_ATTR, Attr.FSID, Attr.UNIQUE_HANDLES, Attr.LEASE_TIME,
    Attr.RDATTR_ERROR, Attr.CANSETTIME, Attr.CASE_INSENSITIVE, Attr.CASE_PRESERVING,
    Attr.CHOWN_RESTRICTED, Attr.FILEHANDLE, Attr.FILEID, Attr.FILES_AVAIL, Attr.FILES_FREE,
    Attr.FILES_TOTAL, Attr.HOMOGENEOUS, Attr.MAXFILESIZE, Attr.MAXLINK, Attr.MAXNAME, Attr.MAXREAD,
    Attr.MAXWRITE, Attr.MODE, Attr.NO_TRUNC, Attr.NUMLINKS, Attr.OWNER, Attr.OWNER_GROUP, Attr.RAWDEV,
    Attr.SPACE_AVAIL, Attr.SPACE_FREE, Attr.SPACE_TOTAL, Attr.SPACE_USED, Attr.TIME_ACCESS,
    Attr.TIME_ACCESS_SET, Attr.TIME_DELTA, Attr.TIME_METADATA, Attr.TIME_MODIFY, Attr.TIME_MODIFY_SET,
    Attr.MOUNTED_ON_FILEID,
})
SUPPORTED = {
    0: SUPPORTED_40,
    1: SUPPORTED_40 | {Attr.SUPPATTR_EXCLCREAT},
    2: SUPPORTED_40 | {Attr.SUPPATTR_EXCLCREAT, Attr.CLONE_BLKSIZE, Attr.SPACE_FREED, Attr.CHANGE_ATTR_TYPE},
}
WRITABLE = frozenset({Attr.SIZE, Attr.MODE, Attr.OWNER, Attr.OWNER_GROUP, Attr.TIME_ACCESS_SET,
                      Attr.TIME_MODIFY_SET})
EXCLCREAT_SETTABLE = frozenset({Attr.SIZE, Attr.MODE, Attr.OWNER, Attr.OWNER_GROUP})
SUPPORTED_BITMAPS = {minor: encode_bitmap(attrs) for minor, attrs in SUPPORTED.items()}
MAX_FILE_SIZE = 2**63 - 1

_TYPES = {statmod.S_IFREG: FType.REG, statmod.S_IFDIR: FType.DIR, statmod.S_IFBLK: FType.BLK,
          statmod.S_IFCHR: FType.CHR, statmod.S_IFLNK: FType.LNK, statmod.S_IFSOCK: FType.SOCK,
          statmod.S_IFIFO: FType.FIFO}
_NO_STATVFS = (0, 0, 0, 0, 0, 0)


def ftype_of(mode: int) -> FType:
    return _TYPES.get(statmod.S_IFMT(mode), FType.REG)


class AttrSource:
    """Everything one object's attributes are computed from."""

    __slots__ = ("st", "fh", "fsid", "fileid", "mounted_on_fileid", "statvfs", "lease", "minor",
                 "unique_handles", "rdattr_error", "_vfs")

    def __init__(self, st, fh: bytes, fsid: tuple[int, int], fileid: int, mounted_on_fileid: int,
                 statvfs: Callable[[], tuple] | None, lease: int, minor: int, unique_handles: bool = True,
                 rdattr_error: int = 0) -> None:
        self.st = st
        self.fh = fh
        self.fsid = fsid
        self.fileid = fileid
        self.mounted_on_fileid = mounted_on_fileid
        self.statvfs = statvfs
        self.lease = lease
        self.minor = minor
        self.unique_handles = unique_handles
        self.rdattr_error = rdattr_error
        self._vfs = None

    def vfs(self) -> tuple:
        if self._vfs is None:
            self._vfs = self.statvfs() if self.statvfs is not None else _NO_STATVFS
        return self._vfs


_ID_STRINGS: dict[int, bytes] = {}


def _id_string(number: int) -> bytes:
    """utf8str_mixed of a numeric owner or group (remembered: a few ids own most files)."""
    encoded = _ID_STRINGS.get(number)
    if encoded is None:
        encoded = encode_utf8(str(number))
        if len(_ID_STRINGS) < 65536:
            _ID_STRINGS[number] = encoded
    return encoded


_TYPE_NUMBERS = {fmt: int(ftype) for fmt, ftype in _TYPES.items()}
EXCLCREAT_BITMAP = encode_bitmap(EXCLCREAT_SETTABLE)

# How each attribute is encoded: (struct format of its fixed-size value, or None for an
# expression that yields its XDR bytes; the Python expression, over ``s`` the AttrSource and
# ``st`` its stat).  ``_compile`` turns a request's attributes into one function with one
# ``struct.pack`` per run of fixed-size values, so a GETATTR costs a few calls, not one per
# attribute.
FIELDS: dict[int, tuple[str | None, str]] = {
    Attr.SUPPORTED_ATTRS: (None, "SUPPORTED_BITMAPS[s.minor]"),
    Attr.TYPE: ("I", "_TYPE_NUMBERS.get(st.st_mode & 0o170000, 1)"),
    Attr.FH_EXPIRE_TYPE: ("I", "FH4_PERSISTENT"),
    Attr.CHANGE: ("Q", "st.st_ctime_ns"),
    Attr.SIZE: ("Q", "st.st_size"),
    Attr.LINK_SUPPORT: ("I", "1"),
    Attr.SYMLINK_SUPPORT: ("I", "1"),
    Attr.NAMED_ATTR: ("I", "0"),
    Attr.FSID: ("QQ", "s.fsid[0], s.fsid[1]"),
    Attr.UNIQUE_HANDLES: ("I", "1 if s.unique_handles else 0"),
    Attr.LEASE_TIME: ("I", "s.lease"),
    Attr.RDATTR_ERROR: ("I", "s.rdattr_error"),
    Attr.CANSETTIME: ("I", "1"),
    Attr.CASE_INSENSITIVE: ("I", "0"),
    Attr.CASE_PRESERVING: ("I", "1"),
    Attr.CHOWN_RESTRICTED: ("I", "1"),
    Attr.FILEHANDLE: (None, "encode_opaque(s.fh)"),
    Attr.FILEID: ("Q", "s.fileid"),
    Attr.FILES_AVAIL: ("Q", "s.vfs()[5]"),
    Attr.FILES_FREE: ("Q", "s.vfs()[4]"),
    Attr.FILES_TOTAL: ("Q", "s.vfs()[3]"),
    Attr.HOMOGENEOUS: ("I", "1"),
    Attr.MAXFILESIZE: ("Q", "MAX_FILE_SIZE"),
    Attr.MAXLINK: ("I", "65000"),
    Attr.MAXNAME: ("I", "MAX_NAME"),
    Attr.MAXREAD: ("Q", "MAX_IO"),
    Attr.MAXWRITE: ("Q", "MAX_IO"),
    Attr.MODE: ("I", "st.st_mode & 0o7777"),
    Attr.NO_TRUNC: ("I", "1"),
    Attr.NUMLINKS: ("I", "st.st_nlink"),
    Attr.OWNER: (None, "(_ID_STRINGS.get(st.st_uid) or _id_string(st.st_uid))"),
    Attr.OWNER_GROUP: (None, "(_ID_STRINGS.get(st.st_gid) or _id_string(st.st_gid))"),
    Attr.RAWDEV: ("II", "os.major(st.st_rdev) if st.st_rdev else 0, os.minor(st.st_rdev) if st.st_rdev else 0"),
    Attr.SPACE_AVAIL: ("Q", "s.vfs()[2]"),
    Attr.SPACE_FREE: ("Q", "s.vfs()[1]"),
    Attr.SPACE_TOTAL: ("Q", "s.vfs()[0]"),
    Attr.SPACE_USED: ("Q", "st.st_blocks * 512"),
    Attr.TIME_ACCESS: ("qI", "st.st_atime_ns // 1000000000, st.st_atime_ns % 1000000000"),
    Attr.TIME_DELTA: ("qI", "0, 1"),
    Attr.TIME_METADATA: ("qI", "st.st_ctime_ns // 1000000000, st.st_ctime_ns % 1000000000"),
    Attr.TIME_MODIFY: ("qI", "st.st_mtime_ns // 1000000000, st.st_mtime_ns % 1000000000"),
    Attr.MOUNTED_ON_FILEID: ("Q", "s.mounted_on_fileid"),
    Attr.SUPPATTR_EXCLCREAT: (None, "EXCLCREAT_BITMAP"),
    Attr.CLONE_BLKSIZE: ("I", "CLONE_BLKSIZE"),
    Attr.SPACE_FREED: ("Q", "st.st_blocks * 512 if st.st_nlink <= 1 else 0"),
    Attr.CHANGE_ATTR_TYPE: ("I", "NFS4_CHANGE_TYPE_IS_TIME_METADATA"),
}
# Imported for the expressions above only (pyflakes cannot see into them).
_NAMES_OF_THE_EXPRESSIONS = (FH4_PERSISTENT, MAX_IO, MAX_NAME, encode_opaque, os)


def _compile(attrs: list[int]) -> Callable[[AttrSource], bytes]:
    """One function encoding ``attrs`` (ascending) as attrlist4 bytes.  The source is built
    from the constant FIELDS table only, never from input."""
    namespace = dict(globals())
    pieces: list[str] = []
    formats: list[str] = []
    values: list[str] = []

    def flush() -> None:
        if formats:
            name = f"_S{len(pieces)}"
            namespace[name] = struct.Struct(">" + "".join(formats))
            pieces.append(f"{name}.pack({', '.join(values)})")
            formats.clear()
            values.clear()

    for attr in attrs:
        fmt, expression = FIELDS[attr]
        if fmt is None:
            flush()
            pieces.append(expression)
        else:
            formats.append(fmt)
            values.append(expression)
    flush()
    body = " + ".join(pieces) if pieces else 'b""'
    exec(f"def encode(s):\n    st = s.st\n    return {body}\n", namespace)  # noqa: S102
    return namespace["encode"]


_PLANS: dict[tuple, tuple] = {}


def _plan(requested, minor: int) -> tuple[frozenset, bytes, Callable[[AttrSource], bytes]]:
    """(attributes answered, their bitmap4, their compiled encoder) for a request, remembered."""
    key = (requested if isinstance(requested, frozenset) else frozenset(requested), minor)
    plan = _PLANS.get(key)
    if plan is None:
        supported = SUPPORTED[minor]
        done = frozenset(attr for attr in key[0] if attr in supported
                         and attr not in (Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET))
        plan = (done, encode_bitmap(done), _compile(sorted(done)))
        if len(_PLANS) < 4096:
            _PLANS[key] = plan
    return plan


def encode_attrlist(requested, source: AttrSource) -> tuple[frozenset, bytes]:
    """(attributes encoded, their attrlist4 bytes), in attribute order; write-only and
    unsupported attributes are skipped."""
    done, _, encode = _plan(requested, source.minor)
    return done, encode(source)


def encode_fattr(requested, source: AttrSource) -> bytes:
    """fattr4: the bitmap of what is present, then attrlist4 as an opaque (every value is
    a multiple of 4 bytes long: no padding)."""
    _, bitmap, encode = _plan(requested, source.minor)
    data = encode(source)
    return bitmap + U32.pack(len(data)) + data


_WORD_PLANS: dict[tuple, tuple] = {}


def encode_fattr_for_words(words: tuple[int, ...], source: AttrSource) -> bytes:
    """``encode_fattr`` of a request given as its bitmap4 words (GETATTR: one lookup per call)."""
    key = (words, source.minor)
    plan = _WORD_PLANS.get(key)
    if plan is None:
        plan = _plan(bitmap_attrs(words), source.minor)
        if len(_WORD_PLANS) < 4096:
            _WORD_PLANS[key] = plan
    data = plan[2](source)
    return plan[1] + U32.pack(len(data)) + data


def encode_change_info(before_stat, after_stat, atomic: bool = True) -> bytes:
    before = before_stat.st_ctime_ns if before_stat is not None else 0
    after = after_stat.st_ctime_ns if after_stat is not None else 0
    return CHANGE_INFO.pack(1 if atomic else 0, before, after)


# ----- decoding (SETATTR, CREATE, OPEN) ----------------------------------------------------------
def parse_owner(text: str, group: bool) -> int:
    """A numeric id, or name / name@domain of a local user (group); else BADOWNER."""
    if text.isdigit():
        return int(text)
    name = text.partition("@")[0]
    try:
        return grp.getgrnam(name).gr_gid if group else pwd.getpwnam(name).pw_uid
    except KeyError as exc:
        raise Nfs4Error(Nfs4Stat.BADOWNER, f"unknown {'group' if group else 'owner'} {text!r}") from exc


def _decode_settime(attrs: Unpacker):
    how = attrs.unpack_uint()
    if how == SET_TO_SERVER_TIME4:
        return "server"
    if how == SET_TO_CLIENT_TIME4:
        return decode_time(attrs)
    raise Nfs4Error(Nfs4Stat.BADXDR, f"time_how4 {how}")


def decode_fattr4_setattrs(args: Unpacker, minor: int = 2) -> tuple[SetAttributes, set[int]]:
    """A fattr4 to set: (SetAttributes, attributes it names).  Unsupported attribute ->
    ATTRNOTSUPP; supported but read-only -> INVAL (RFC 8881 §18.30.3)."""
    bits = decode_bitmap(args)
    data = args.unpack_opaque_view(64 * 1024)
    for attr in bits:
        if attr not in SUPPORTED[minor] and attr not in WRITABLE:
            raise Nfs4Error(Nfs4Stat.ATTRNOTSUPP, f"attribute {attr} not supported")
    for attr in bits:
        if attr not in WRITABLE:
            raise Nfs4Error(Nfs4Stat.INVAL, f"attribute {attr} is read-only")
    attrs = Unpacker(data)
    values: dict[str, object] = {}
    for attr in sorted(bits):
        if attr == Attr.SIZE:
            values["size"] = attrs.unpack_uhyper()
        elif attr == Attr.MODE:
            mode = attrs.unpack_uint()
            if mode > 0o7777:
                raise Nfs4Error(Nfs4Stat.INVAL, f"mode {mode:o}")
            values["mode"] = mode
        elif attr == Attr.OWNER:
            values["uid"] = parse_owner(decode_utf8(attrs), group=False)
        elif attr == Attr.OWNER_GROUP:
            values["gid"] = parse_owner(decode_utf8(attrs), group=True)
        elif attr == Attr.TIME_ACCESS_SET:
            values["atime"] = _decode_settime(attrs)
        elif attr == Attr.TIME_MODIFY_SET:
            values["mtime"] = _decode_settime(attrs)
    if attrs.remaining():
        raise Nfs4Error(Nfs4Stat.BADXDR, "trailing bytes in attrlist4")
    return SetAttributes(**values), bits


def decode_fattr4_raw(args: Unpacker) -> tuple[set[int], bytes]:
    """A fattr4 as (attributes, attrlist4 bytes) for VERIFY/NVERIFY."""
    bits = decode_bitmap(args)
    return bits, bytes(args.unpack_opaque_view(64 * 1024))


__all__ = ["AttrSource", "SUPPORTED", "WRITABLE", "decode_fattr4_setattrs", "decode_fattr4_raw",
           "encode_fattr", "encode_fattr_for_words", "encode_attrlist", "encode_change_info", "ftype_of"]
