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
from typing import Callable

from acmenfs.fs.backend import SetAttributes
from acmenfs.nfs4.const import (
    FH4_PERSISTENT, MAX_IO, MAX_NAME, SET_TO_CLIENT_TIME4,
    SET_TO_SERVER_TIME4, Attr, FType, Nfs4Stat,
)
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.xdr4 import (
    CHANGE_INFO, FALSE, TRUE, U32, U64, decode_bitmap, decode_time, decode_utf8, encode_bitmap,
    encode_fsid, encode_opaque, encode_time, encode_utf8,
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


def _bool(value: bool) -> bytes:
    return TRUE if value else FALSE


ENCODERS: dict[int, Callable[[AttrSource], bytes]] = {
    Attr.SUPPORTED_ATTRS: lambda s: SUPPORTED_BITMAPS[s.minor],
    Attr.TYPE: lambda s: U32.pack(ftype_of(s.st.st_mode)),
    Attr.FH_EXPIRE_TYPE: lambda s: U32.pack(FH4_PERSISTENT),
    Attr.CHANGE: lambda s: U64.pack(s.st.st_ctime_ns),
    Attr.SIZE: lambda s: U64.pack(s.st.st_size),
    Attr.LINK_SUPPORT: lambda s: TRUE,
    Attr.SYMLINK_SUPPORT: lambda s: TRUE,
    Attr.NAMED_ATTR: lambda s: FALSE,
    Attr.FSID: lambda s: encode_fsid(*s.fsid),
    Attr.UNIQUE_HANDLES: lambda s: _bool(s.unique_handles),
    Attr.LEASE_TIME: lambda s: U32.pack(s.lease),
    Attr.RDATTR_ERROR: lambda s: U32.pack(s.rdattr_error),
    Attr.CANSETTIME: lambda s: TRUE,
    Attr.CASE_INSENSITIVE: lambda s: FALSE,
    Attr.CASE_PRESERVING: lambda s: TRUE,
    Attr.CHOWN_RESTRICTED: lambda s: TRUE,
    Attr.FILEHANDLE: lambda s: encode_opaque(s.fh),
    Attr.FILEID: lambda s: U64.pack(s.fileid),
    Attr.FILES_AVAIL: lambda s: U64.pack(s.vfs()[5]),
    Attr.FILES_FREE: lambda s: U64.pack(s.vfs()[4]),
    Attr.FILES_TOTAL: lambda s: U64.pack(s.vfs()[3]),
    Attr.HOMOGENEOUS: lambda s: TRUE,
    Attr.MAXFILESIZE: lambda s: U64.pack(MAX_FILE_SIZE),
    Attr.MAXLINK: lambda s: U32.pack(65000),
    Attr.MAXNAME: lambda s: U32.pack(MAX_NAME),
    Attr.MAXREAD: lambda s: U64.pack(MAX_IO),
    Attr.MAXWRITE: lambda s: U64.pack(MAX_IO),
    Attr.MODE: lambda s: U32.pack(s.st.st_mode & 0o7777),
    Attr.NO_TRUNC: lambda s: TRUE,
    Attr.NUMLINKS: lambda s: U32.pack(s.st.st_nlink),
    Attr.OWNER: lambda s: _id_string(s.st.st_uid),
    Attr.OWNER_GROUP: lambda s: _id_string(s.st.st_gid),
    Attr.RAWDEV: lambda s: U32.pack(os.major(s.st.st_rdev)) + U32.pack(os.minor(s.st.st_rdev)),
    Attr.SPACE_AVAIL: lambda s: U64.pack(s.vfs()[2]),
    Attr.SPACE_FREE: lambda s: U64.pack(s.vfs()[1]),
    Attr.SPACE_TOTAL: lambda s: U64.pack(s.vfs()[0]),
    Attr.SPACE_USED: lambda s: U64.pack(s.st.st_blocks * 512),
    Attr.TIME_ACCESS: lambda s: encode_time(s.st.st_atime_ns),
    Attr.TIME_DELTA: lambda s: encode_time(1),
    Attr.TIME_METADATA: lambda s: encode_time(s.st.st_ctime_ns),
    Attr.TIME_MODIFY: lambda s: encode_time(s.st.st_mtime_ns),
    Attr.MOUNTED_ON_FILEID: lambda s: U64.pack(s.mounted_on_fileid),
    Attr.SUPPATTR_EXCLCREAT: lambda s: encode_bitmap(EXCLCREAT_SETTABLE),
    Attr.CLONE_BLKSIZE: lambda s: U32.pack(CLONE_BLKSIZE),
    Attr.SPACE_FREED: lambda s: U64.pack(s.st.st_blocks * 512 if s.st.st_nlink <= 1 else 0),
    Attr.CHANGE_ATTR_TYPE: lambda s: U32.pack(NFS4_CHANGE_TYPE_IS_TIME_METADATA),
}


_PLANS: dict[tuple, tuple] = {}


def _plan(requested, minor: int) -> tuple[frozenset, bytes, tuple]:
    """(attributes answered, their bitmap4, their encoders in order) for a request, remembered."""
    key = (requested if isinstance(requested, frozenset) else frozenset(requested), minor)
    plan = _PLANS.get(key)
    if plan is None:
        supported = SUPPORTED[minor]
        done = frozenset(attr for attr in key[0] if attr in supported
                         and attr not in (Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET))
        plan = (done, encode_bitmap(done), tuple(ENCODERS[attr] for attr in sorted(done)))
        if len(_PLANS) < 4096:
            _PLANS[key] = plan
    return plan


def encode_attrlist(requested, source: AttrSource) -> tuple[frozenset, bytes]:
    """(attributes encoded, their attrlist4 bytes), in attribute order; write-only and
    unsupported attributes are skipped."""
    done, _, encoders = _plan(requested, source.minor)
    return done, b"".join([encode(source) for encode in encoders])


def encode_fattr(requested, source: AttrSource) -> bytes:
    """fattr4: the bitmap of what is present, then attrlist4 as an opaque."""
    _, bitmap, encoders = _plan(requested, source.minor)
    data = b"".join([encode(source) for encode in encoders])
    return bitmap + U32.pack(len(data)) + data + b"\0" * (-len(data) & 3)


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
           "encode_fattr", "encode_attrlist", "encode_change_info", "ftype_of"]
