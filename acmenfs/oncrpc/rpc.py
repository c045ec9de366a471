"""ONC RPC version 2 messages (RFC 5531): call and reply headers, authentication.

Owns the wire layout of RPC call headers (decoded into ``CallHeader``), of reply
headers for every accept/reject status, and of the AUTH_NONE / AUTH_SYS
credentials (decoded into a ``Credential``). Pure functions over bytes: no
sockets, no dispatch decisions (those live in ``dispatch``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from acmenfs.oncrpc.xdr import Packer, Unpacker, XdrError

RPC_VERSION = 2
MAX_AUTH_BYTES = 400
MAX_MACHINE_NAME = 255
MAX_AUTH_SYS_GIDS = 16
NOBODY = 65534


class MsgType(IntEnum):
    CALL = 0
    REPLY = 1


class ReplyStat(IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(IntEnum):
    OK = 0
    BADCRED = 1
    REJECTEDCRED = 2
    BADVERF = 3
    REJECTEDVERF = 4
    TOOWEAK = 5
    INVALIDRESP = 6
    FAILED = 7


class AuthFlavor(IntEnum):
    NONE = 0
    SYS = 1
    SHORT = 2
    DH = 3
    RPCSEC_GSS = 6


@dataclass(frozen=True, slots=True)
class Credential:
    """Who is calling: decoded AUTH_SYS, or the anonymous identity for AUTH_NONE."""

    flavor: int
    uid: int
    gid: int
    gids: tuple[int, ...] = ()
    machine: str = ""


ANONYMOUS = Credential(AuthFlavor.NONE, NOBODY, NOBODY, (), "")


class AuthError(Exception):
    """The call's credential or verifier is unacceptable; answered with AUTH_ERROR."""

    def __init__(self, stat: AuthStat, message: str) -> None:
        super().__init__(message)
        self.stat = stat


@dataclass(slots=True)
class CallHeader:
    """A decoded call header; ``args_offset`` is where the procedure arguments start."""

    xid: int
    rpcvers: int
    prog: int
    vers: int
    proc: int
    cred_flavor: int
    cred_body: memoryview
    verf_flavor: int
    args_offset: int


_CALL_FIXED = struct.Struct(">IIIIIIII")  # xid mtype rpcvers prog vers proc cred_flavor cred_len
_CALL_START = struct.Struct(">IIIIII")  # xid mtype rpcvers prog vers proc
_VERIFIER_HEAD = struct.Struct(">II")  # verf_flavor verf_len

# Plain ints for the per-call path: an IntEnum member lookup costs more than a global.
_CALL = int(MsgType.CALL)
_AUTH_NONE = int(AuthFlavor.NONE)
_AUTH_SYS = int(AuthFlavor.SYS)


def peek_xid(record: bytes | memoryview) -> int | None:
    """The xid of a record, if it is long enough to have one."""
    if len(record) < 4:
        return None
    return struct.unpack_from(">I", record, 0)[0]


def _truncated(need: int, start: int, size: int) -> XdrError:
    return XdrError(f"truncated data: need {need} bytes at offset {start}, have {size - start}")


def parse_call_header(record: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int, int, int]:
    """The fields of a call header as a tuple, without building objects (the per-call path).

    Returns ``(xid, rpcvers, prog, vers, proc, cred_flavor, cred_end, args_offset)``:
    the credential body is ``record[32:cred_end]`` and the arguments start at
    ``args_offset``.  Raises ``XdrError`` for anything malformed, checking every
    length against the limit and the record size before anything is sliced.
    """
    size = len(record)
    if size < 40:  # 8 fixed words + verifier flavor and length
        raise XdrError(f"record of {size} bytes is too short for an RPC call")
    xid, mtype, rpcvers, prog, vers, proc, cred_flavor, cred_len = _CALL_FIXED.unpack_from(record, 0)
    if mtype != _CALL:
        raise XdrError(f"message type {mtype} is not CALL")
    if cred_len > MAX_AUTH_BYTES:
        raise XdrError(f"credential of {cred_len} bytes exceeds {MAX_AUTH_BYTES}")
    cred_end = 32 + cred_len
    verifier_at = cred_end + (-cred_len & 3)
    if verifier_at + 8 > size:
        raise _truncated(verifier_at + 8 - 32, 32, size)
    verf_len = _VERIFIER_HEAD.unpack_from(record, verifier_at)[1]
    if verf_len > MAX_AUTH_BYTES:
        raise XdrError(f"verifier of {verf_len} bytes exceeds {MAX_AUTH_BYTES}")
    args_offset = verifier_at + 8 + verf_len + (-verf_len & 3)
    if args_offset > size:
        raise _truncated(args_offset - verifier_at - 8, verifier_at + 8, size)
    return xid, rpcvers, prog, vers, proc, cred_flavor, cred_end, args_offset


def decode_call_header(record: bytes | memoryview) -> CallHeader:
    """Decode an RPC call header. Raises ``XdrError`` for anything malformed."""
    view = record if isinstance(record, memoryview) else memoryview(record)
    xid, rpcvers, prog, vers, proc, cred_flavor, cred_end, args_offset = parse_call_header(view)
    verifier_at = cred_end + (-cred_end & 3)
    verf_flavor = _VERIFIER_HEAD.unpack_from(view, verifier_at)[0]
    return CallHeader(xid, rpcvers, prog, vers, proc, cred_flavor, view[32:cred_end], verf_flavor,
                      args_offset)


def decode_auth_sys(body: bytes | memoryview) -> Credential:
    """Decode an AUTH_SYS (AUTH_UNIX) credential body."""
    unpacker = Unpacker(body)
    unpacker.unpack_uint()  # stamp
    machine = unpacker.unpack_string(MAX_MACHINE_NAME)
    uid = unpacker.unpack_uint()
    gid = unpacker.unpack_uint()
    gids = tuple(unpacker.unpack_array(unpacker.unpack_uint, MAX_AUTH_SYS_GIDS))
    unpacker.done()
    return Credential(AuthFlavor.SYS, uid, gid, gids, machine)


# Clients send the same few credentials over and over: decode each body once.
_AUTH_SYS_CACHE_SIZE = 4096
_auth_sys_cache: dict[bytes, Credential] = {}


def credential_from(flavor: int, body: bytes | bytearray | memoryview) -> Credential:
    """The caller identity for a credential flavor and body, or ``AuthError``.

    An AUTH_SYS body already seen is answered from the cache by its raw bytes,
    before anything is decoded.
    """
    if flavor == _AUTH_SYS:
        if type(body) is not bytes:
            body = bytes(body)
        cached = _auth_sys_cache.get(body)
        if cached is not None:
            return cached
        return _decode_and_cache_auth_sys(body)
    if flavor == _AUTH_NONE:
        return ANONYMOUS
    raise AuthError(AuthStat.BADCRED if flavor > 0xFFFF else AuthStat.TOOWEAK,
                    f"unsupported auth flavor {flavor}")


def _decode_and_cache_auth_sys(body: bytes) -> Credential:
    try:
        credential = decode_auth_sys(body)
    except XdrError as exc:
        raise AuthError(AuthStat.BADCRED, f"malformed AUTH_SYS credential: {exc}") from exc
    if len(_auth_sys_cache) >= _AUTH_SYS_CACHE_SIZE:
        _auth_sys_cache.clear()
    _auth_sys_cache[body] = credential
    return credential


def credential_of(header: CallHeader) -> Credential:
    """The caller identity of a decoded call, or ``AuthError`` for unsupported flavors."""
    return credential_from(header.cred_flavor, header.cred_body)


def encode_auth_sys(uid: int, gid: int, gids: tuple[int, ...] = (), machine: str = "acmenfs",
                    stamp: int = 0) -> bytes:
    packer = Packer()
    packer.pack_uint(stamp)
    packer.pack_string(machine, MAX_MACHINE_NAME)
    packer.pack_uint(uid)
    packer.pack_uint(gid)
    packer.pack_array(gids[:MAX_AUTH_SYS_GIDS], packer.pack_uint)
    return packer.get_buffer()


def encode_call(xid: int, prog: int, vers: int, proc: int, args: bytes = b"",
                cred_flavor: int = AuthFlavor.NONE, cred_body: bytes = b"") -> bytes:
    """A complete call message (without record marking)."""
    packer = Packer()
    packer.buffer += _CALL_START.pack(xid, MsgType.CALL, RPC_VERSION, prog, vers, proc)
    packer.pack_uint(cred_flavor)
    packer.pack_opaque(cred_body, MAX_AUTH_BYTES)
    packer.pack_uint(AuthFlavor.NONE)
    packer.pack_uint(0)
    packer.buffer += args
    return packer.get_buffer()


# Reply headers ---------------------------------------------------------------

_ACCEPTED = struct.Struct(">IIIIII")  # xid REPLY MSG_ACCEPTED verf_flavor verf_len accept_stat
# The success header is SUCCESS_HEADER.pack(xid, REPLY): two words, then four zero words
# (MSG_ACCEPTED, AUTH_NONE verifier, verifier length 0, SUCCESS). One pack, two arguments.
SUCCESS_HEADER = struct.Struct(">II16x")
_REPLY = int(MsgType.REPLY)
assert ReplyStat.MSG_ACCEPTED == AuthFlavor.NONE == AcceptStat.SUCCESS == 0


def encode_success_header(xid: int) -> bytes:
    """Header of an accepted, successful reply; the procedure's results follow it."""
    return SUCCESS_HEADER.pack(xid, _REPLY)


def encode_accept_error(xid: int, stat: AcceptStat, low: int = 0, high: int = 0) -> bytes:
    """A complete accepted-but-failed reply (PROG_UNAVAIL, PROG_MISMATCH, ...)."""
    head = _ACCEPTED.pack(xid, MsgType.REPLY, ReplyStat.MSG_ACCEPTED, AuthFlavor.NONE, 0, stat)
    if stat == AcceptStat.PROG_MISMATCH:
        return head + struct.pack(">II", low, high)
    return head


def encode_rpc_mismatch(xid: int, low: int = RPC_VERSION, high: int = RPC_VERSION) -> bytes:
    return struct.pack(">IIIIII", xid, MsgType.REPLY, ReplyStat.MSG_DENIED,
                       RejectStat.RPC_MISMATCH, low, high)


def encode_auth_error(xid: int, stat: AuthStat) -> bytes:
    return struct.pack(">IIIII", xid, MsgType.REPLY, ReplyStat.MSG_DENIED,
                       RejectStat.AUTH_ERROR, stat)


@dataclass(frozen=True, slots=True)
class ReplyHeader:
    """A decoded reply header (client side)."""

    xid: int
    reply_stat: int
    accept_stat: int | None = None
    reject_stat: int | None = None
    auth_stat: int | None = None
    mismatch: tuple[int, int] | None = None
    body_offset: int = 0


def decode_reply_header(record: bytes | memoryview) -> ReplyHeader:
    """Decode a reply message header. Raises ``XdrError`` when malformed."""
    unpacker = Unpacker(record)
    xid = unpacker.unpack_uint()
    mtype = unpacker.unpack_uint()
    if mtype != MsgType.REPLY:
        raise XdrError(f"message type {mtype} is not REPLY")
    reply_stat = unpacker.unpack_uint()
    if reply_stat == ReplyStat.MSG_ACCEPTED:
        unpacker.unpack_uint()  # verifier flavor
        unpacker.unpack_opaque_view(MAX_AUTH_BYTES)
        accept_stat = unpacker.unpack_uint()
        mismatch = None
        if accept_stat == AcceptStat.PROG_MISMATCH:
            mismatch = (unpacker.unpack_uint(), unpacker.unpack_uint())
        return ReplyHeader(xid, reply_stat, accept_stat=accept_stat, mismatch=mismatch,
                           body_offset=unpacker.offset)
    if reply_stat == ReplyStat.MSG_DENIED:
        reject_stat = unpacker.unpack_uint()
        if reject_stat == RejectStat.RPC_MISMATCH:
            return ReplyHeader(xid, reply_stat, reject_stat=reject_stat,
                               mismatch=(unpacker.unpack_uint(), unpacker.unpack_uint()),
                               body_offset=unpacker.offset)
        if reject_stat == RejectStat.AUTH_ERROR:
            return ReplyHeader(xid, reply_stat, reject_stat=reject_stat,
                               auth_stat=unpacker.unpack_uint(), body_offset=unpacker.offset)
        raise XdrError(f"unknown reject status {reject_stat}")
    raise XdrError(f"unknown reply status {reply_stat}")
