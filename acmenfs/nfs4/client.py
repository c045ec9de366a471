"""A small synchronous NFSv4.0 / 4.1 client for tests and tools: COMPOUND builder, reply parser,
and the client ID, session, open and lock flows.

Owns the client side of NFSv4 as the tests need it: ``Ops`` builds ``nfs_argop4``
bytes, ``parse_compound`` splits a COMPOUND4res into per-op results (decoding the
resok, or the resfail body of LOCK/LOCKT DENIED), and ``Nfs4Client`` runs the 4.0
SETCLIENTID / SETCLIENTID_CONFIRM flow (open and lock owner seqids, OPEN_CONFIRM)
or the 4.1 EXCHANGE_ID / CREATE_SESSION / SEQUENCE flow (slot 0, seqid per call)
over any ``send(args) -> COMPOUND4res bytes`` callable: TCP through
``acmenfs.oncrpc.client.RpcClient`` (``Nfs4Client.connect``) or a sans-IO
dispatcher.  It is not a general client: one slot, one open owner, no callbacks.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Callable

from acmenfs.oncrpc.xdr import Unpacker

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
ZERO_STATEID = b"\0" * 16
ALL_ONES = 0xFFFFFFFFFFFFFFFF
READ_LT, WRITE_LT = 1, 2
OK, DENIED = 0, 10010
NO_SEQID_BUMP = {10022, 10023, 10025, 10026, 10036, 10018, 10020, 10019}


def u32(*values: int) -> bytes:
    return b"".join(U32.pack(v) for v in values)


def opaque(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return U32.pack(len(data)) + data + b"\0" * (-len(data) & 3)


def bitmap(*attrs: int) -> bytes:
    if not attrs:
        return u32(0)
    words = [0] * (max(attrs) // 32 + 1)
    for a in attrs:
        words[a // 32] |= 1 << (a % 32)
    return u32(len(words), *words)


class Ops:
    """nfs_argop4 builders (each returns bytes)."""

    putrootfh = staticmethod(lambda: u32(24))
    getfh = staticmethod(lambda: u32(10))
    putfh = staticmethod(lambda fh: u32(22) + opaque(fh))
    lookup = staticmethod(lambda name: u32(15) + opaque(name))
    remove = staticmethod(lambda name: u32(28) + opaque(name))
    getattr = staticmethod(lambda *attrs: u32(9) + bitmap(*attrs))
    renew = staticmethod(lambda clientid: u32(30) + U64.pack(clientid))

    @staticmethod
    def setclientid(verifier: bytes, owner: bytes) -> bytes:
        return u32(35) + verifier + opaque(owner) + u32(0x40000000) + opaque("tcp") + opaque("127.0.0.1.0.0") + u32(1)

    @staticmethod
    def setclientid_confirm(clientid: int, confirm: bytes) -> bytes:
        return u32(36) + U64.pack(clientid) + confirm

    @staticmethod
    def exchange_id(verifier: bytes, owner: bytes, flags: int = 0) -> bytes:
        return u32(42) + verifier + opaque(owner) + u32(flags, 0) + u32(0)

    @staticmethod
    def create_session(clientid: int, sequence: int, slots: int = 8, flags: int = 0, *, max_ops: int = 16,
                       max_request: int = 1 << 20, max_response: int = 1 << 20) -> bytes:
        fore = u32(0, max_request, max_response, 64 * 1024, max_ops, slots, 0)
        back = u32(0, 4096, 4096, 0, 2, 1, 0)
        return u32(43) + U64.pack(clientid) + u32(sequence, flags) + fore + back + u32(0x40000000) + u32(1, 0)

    @staticmethod
    def sequence(sessionid: bytes, seqid: int, slot: int = 0, highest: int = 0, cache: bool = True) -> bytes:
        return u32(53) + sessionid + u32(seqid, slot, highest, int(cache))

    destroy_session = staticmethod(lambda sessionid: u32(44) + sessionid)
    destroy_clientid = staticmethod(lambda clientid: u32(57) + U64.pack(clientid))
    reclaim_complete = staticmethod(lambda one_fs=False: u32(58, int(one_fs)))
    bind_conn = staticmethod(lambda sessionid, direction=3: u32(41) + sessionid + u32(direction, 0))
    test_stateid = staticmethod(lambda *sids: u32(55, len(sids)) + b"".join(sids))
    free_stateid = staticmethod(lambda sid: u32(45) + sid)

    @staticmethod
    def open(seqid: int, clientid: int, owner: bytes, name: str | None = None, *, access: int = 3,
             deny: int = 0, create: str | None = None, verifier: bytes = b"v" * 8,
             claim: str = "null", attrs: bytes = u32(0) + opaque(b"")) -> bytes:
        """create: None, 'unchecked', 'guarded', 'exclusive', 'exclusive41';
        claim: 'null' (name), 'previous' (reclaim, current fh = the file), 'fh' (4.1)."""
        how = u32(0)
        if create is not None:
            mode = ("unchecked", "guarded", "exclusive", "exclusive41").index(create)
            how = u32(1, mode)
            if create in ("exclusive", "exclusive41"):
                how += verifier
            if create != "exclusive":
                how += attrs
        claims = {"null": lambda: u32(0) + opaque(name), "previous": lambda: u32(1, 0), "fh": lambda: u32(4)}
        return u32(18, seqid, access, deny) + U64.pack(clientid) + opaque(owner) + how + claims[claim]()

    open_confirm = staticmethod(lambda sid, seqid: u32(20) + sid + u32(seqid))
    close = staticmethod(lambda seqid, sid: u32(4, seqid) + sid)
    open_downgrade = staticmethod(lambda sid, seqid, access, deny: u32(21) + sid + u32(seqid, access, deny))

    @staticmethod
    def lock_new(locktype: int, offset: int, length: int, open_seqid: int, open_sid: bytes, lock_seqid: int,
                 clientid: int, owner: bytes, reclaim: bool = False) -> bytes:
        return (u32(12, locktype, int(reclaim)) + U64.pack(offset) + U64.pack(length) + u32(1, open_seqid)
                + open_sid + u32(lock_seqid) + U64.pack(clientid) + opaque(owner))

    @staticmethod
    def lock_existing(locktype: int, offset: int, length: int, lock_sid: bytes, lock_seqid: int,
                      reclaim: bool = False) -> bytes:
        return u32(12, locktype, int(reclaim)) + U64.pack(offset) + U64.pack(length) + u32(0) + lock_sid + u32(lock_seqid)

    @staticmethod
    def lockt(locktype: int, offset: int, length: int, clientid: int, owner: bytes) -> bytes:
        return u32(13, locktype) + U64.pack(offset) + U64.pack(length) + U64.pack(clientid) + opaque(owner)

    @staticmethod
    def locku(locktype: int, seqid: int, sid: bytes, offset: int, length: int) -> bytes:
        return u32(14, locktype, seqid) + sid + U64.pack(offset) + U64.pack(length)

    release_lockowner = staticmethod(lambda clientid, owner: u32(39) + U64.pack(clientid) + opaque(owner))

    @staticmethod
    def read(sid: bytes, offset: int, count: int) -> bytes:
        return u32(25) + sid + U64.pack(offset) + u32(count)

    @staticmethod
    def write(sid: bytes, offset: int, data: bytes, stable: int = 2) -> bytes:
        return u32(38) + sid + U64.pack(offset) + u32(stable) + opaque(data)


# ----- reply parsing -------------------------------------------------------------------------
def _fattr(u: Unpacker):
    return u.unpack_array(u.unpack_uint), u.unpack_opaque()


def _cinfo(u: Unpacker):
    return u.unpack_uint(), u.unpack_uhyper(), u.unpack_uhyper()


def _channel(u: Unpacker):
    values = [u.unpack_uint() for _ in range(6)]
    u.unpack_array(u.unpack_uint)
    return values


def _open(u: Unpacker) -> dict:
    out = {"stateid": u.unpack_fopaque(16), "cinfo": _cinfo(u), "rflags": u.unpack_uint(),
           "attrset": u.unpack_array(u.unpack_uint)}
    kind = u.unpack_uint()
    out["delegation"] = kind
    if kind == 3:
        why = u.unpack_uint()
        if why in (1, 2):
            u.unpack_bool()
    elif kind != 0:
        raise ValueError("client does not parse delegations")
    return out


def _exchange_id(u: Unpacker) -> dict:
    out = {"clientid": u.unpack_uhyper(), "sequenceid": u.unpack_uint(), "flags": u.unpack_uint()}
    out["state_protect"] = u.unpack_uint()
    out["server_owner"] = (u.unpack_uhyper(), u.unpack_opaque())
    out["server_scope"] = u.unpack_opaque()
    out["impl"] = u.unpack_array(lambda: (u.unpack_opaque(), u.unpack_opaque(), u.unpack_hyper(), u.unpack_uint()))
    return out


def _create_session(u: Unpacker) -> dict:
    return {"sessionid": u.unpack_fopaque(16), "sequence": u.unpack_uint(), "flags": u.unpack_uint(),
            "fore": _channel(u), "back": _channel(u)}


def _sequence(u: Unpacker) -> dict:
    return {"sessionid": u.unpack_fopaque(16), "seqid": u.unpack_uint(), "slotid": u.unpack_uint(),
            "highest_slotid": u.unpack_uint(), "target_highest_slotid": u.unpack_uint(),
            "status_flags": u.unpack_uint()}


def _denied(u: Unpacker) -> dict:
    return {"offset": u.unpack_uhyper(), "length": u.unpack_uhyper(), "locktype": u.unpack_uint(),
            "clientid": u.unpack_uhyper(), "owner": u.unpack_opaque()}


_sid = lambda u: u.unpack_fopaque(16)  # noqa: E731
OK_PARSERS: dict[int, Callable[[Unpacker], object]] = {
    3: lambda u: (u.unpack_uint(), u.unpack_uint()), 4: _sid, 5: lambda u: u.unpack_fopaque(8),  # COMMIT: verifier
    9: _fattr, 10: lambda u: u.unpack_opaque(),
    12: _sid, 14: _sid, 18: _open, 20: _sid, 21: _sid, 25: lambda u: (u.unpack_bool(), u.unpack_opaque()),
    28: _cinfo, 35: lambda u: (u.unpack_uhyper(), u.unpack_fopaque(8)),
    38: lambda u: (u.unpack_uint(), u.unpack_uint(), u.unpack_fopaque(8)),
    41: lambda u: (u.unpack_fopaque(16), u.unpack_uint(), u.unpack_bool()),
    42: _exchange_id, 43: _create_session, 53: _sequence,
    55: lambda u: u.unpack_array(u.unpack_uint),
}
FAIL_PARSERS = {(12, DENIED): _denied, (13, DENIED): _denied,
                (35, 10017): lambda u: (u.unpack_string(), u.unpack_string())}


@dataclass
class OpResult:
    op: int
    status: int
    value: object = None


@dataclass
class Reply:
    status: int
    tag: bytes
    results: list[OpResult] = field(default_factory=list)
    raw: bytes = b""

    def op(self, opnum: int) -> OpResult:
        return next(r for r in self.results if r.op == opnum)

    @property
    def last(self) -> OpResult:
        return self.results[-1]

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.results]


def parse_compound(body: bytes) -> Reply:
    u = Unpacker(body)
    reply = Reply(u.unpack_uint(), u.unpack_opaque(), raw=bytes(body))
    for _ in range(u.unpack_uint()):
        op, status = u.unpack_uint(), u.unpack_uint()
        parser = OK_PARSERS.get(op) if status == OK else FAIL_PARSERS.get((op, status))
        reply.results.append(OpResult(op, status, parser(u) if parser else None))
    u.done()
    return reply


class Nfs4Failed(Exception):
    def __init__(self, reply: Reply) -> None:
        last = reply.last if reply.results else OpResult(-1, reply.status)
        super().__init__(f"op {last.op} failed with nfsstat4 {last.status}")
        self.reply = reply
        self.status = last.status
        self.value = last.value


def compound_args(ops: list[bytes], minor: int = 0, tag: bytes = b"") -> bytes:
    return opaque(tag) + u32(minor, len(ops)) + b"".join(ops)


# ----- the client ----------------------------------------------------------------------------
class Nfs4Client:
    """One NFSv4 client ID (and, 4.1, one session using slot 0)."""

    def __init__(self, send: Callable[[bytes], bytes], minor: int = 1, owner: bytes | None = None,
                 verifier: bytes | None = None) -> None:
        self.send = send
        self.minor = minor
        self.owner = owner or b"acmenfs-test-" + os.urandom(6).hex().encode()
        self.verifier = verifier or os.urandom(8)
        self.clientid = 0
        self.sessionid = b""
        self.slot_seqid = 0
        self.open_owner = b"open-owner-1"
        self.open_seqid = 0
        self.lock_seqids: dict[bytes, int] = {}     # lock stateid other -> next lock seqid
        self.rpc = None

    @classmethod
    def connect(cls, host: str, port: int, minor: int = 1, uid: int = 0, gid: int = 0, **kw) -> "Nfs4Client":
        from acmenfs.oncrpc.client import AuthSys, RpcClient
        rpc = RpcClient(host, port, auth=AuthSys(uid=uid, gid=gid), timeout=30)
        client = cls(lambda args: rpc.call(100003, 4, 1, args), minor, **kw)
        client.rpc = rpc
        return client

    def close(self) -> None:
        if self.rpc is not None:
            self.rpc.close()

    # raw COMPOUNDs
    def raw(self, ops: list[bytes], tag: bytes = b"") -> Reply:
        return parse_compound(self.send(compound_args(ops, self.minor, tag)))

    def call(self, *ops: bytes, check: bool = True) -> Reply:
        """A COMPOUND; 4.1 prefixes SEQUENCE on slot 0 with the next seqid."""
        ops = list(ops)
        if self.minor >= 1 and self.sessionid:
            self.slot_seqid += 1
            ops.insert(0, Ops.sequence(self.sessionid, self.slot_seqid))
        reply = self.raw(ops)
        if check and reply.status != OK:
            raise Nfs4Failed(reply)
        return reply

    # client ID and session
    def establish(self, reclaim_complete: bool = True) -> None:
        if self.minor == 0:
            reply = self.raw([Ops.setclientid(self.verifier, self.owner)])
            if reply.status != OK:
                raise Nfs4Failed(reply)
            self.clientid, confirm = reply.last.value
            self.call(Ops.setclientid_confirm(self.clientid, confirm))
            return
        reply = self.raw([Ops.exchange_id(self.verifier, self.owner)])
        if reply.status != OK:
            raise Nfs4Failed(reply)
        self.clientid = reply.last.value["clientid"]
        reply = self.raw([Ops.create_session(self.clientid, reply.last.value["sequenceid"])])
        if reply.status != OK:
            raise Nfs4Failed(reply)
        self.sessionid = reply.last.value["sessionid"]
        self.slot_seqid = 0
        if reclaim_complete:
            self.call(Ops.reclaim_complete())

    def renew(self) -> Reply:
        return self.call(Ops.renew(self.clientid)) if self.minor == 0 else self.call()

    def lookup_ops(self, path: str) -> list[bytes]:
        return [Ops.putrootfh()] + [Ops.lookup(part) for part in path.split("/") if part]

    def fh_of(self, path: str) -> bytes:
        return self.call(*self.lookup_ops(path), Ops.getfh()).last.value

    # open owner sequenced ops (4.0 seqids; 4.1 ignores them)
    def _seq_call(self, *ops: bytes, bump: bool = True) -> Reply:
        reply = self.call(*ops, check=False)
        status = reply.last.status if reply.results else reply.status
        if bump and status not in NO_SEQID_BUMP:
            self.open_seqid += 1
        if reply.status != OK:
            raise Nfs4Failed(reply)
        return reply

    def open(self, path: str, *, access: int = 3, deny: int = 0, create: str | None = None,
             reclaim: bool = False) -> tuple[bytes, bytes]:
        """-> (file handle, open stateid); confirms the open owner (4.0) when asked to."""
        directory, _, name = path.rpartition("/")
        if reclaim:
            prefix = [Ops.putfh(self.fh_of(path))]
            open_op = Ops.open(self.open_seqid, self.clientid, self.open_owner, access=access, deny=deny,
                               claim="previous")
        else:
            prefix = self.lookup_ops(directory)
            open_op = Ops.open(self.open_seqid, self.clientid, self.open_owner, name, access=access,
                               deny=deny, create=create)
        reply = self._seq_call(*prefix, open_op, Ops.getfh())
        result = reply.op(18).value
        fh, stateid = reply.last.value, result["stateid"]
        if result["rflags"] & 0x2:
            stateid = self._seq_call(Ops.putfh(fh), Ops.open_confirm(stateid, self.open_seqid)).last.value
        return fh, stateid

    def close_file(self, fh: bytes, stateid: bytes) -> bytes:
        return self._seq_call(Ops.putfh(fh), Ops.close(self.open_seqid, stateid)).last.value

    def lock(self, fh: bytes, open_sid: bytes, offset: int, length: int, *, write: bool = True,
             lock_sid: bytes | None = None, owner: bytes = b"lock-owner-1", reclaim: bool = False) -> bytes:
        """LOCK (a new lock owner when ``lock_sid`` is None); Nfs4Failed carries LOCK4denied."""
        locktype = WRITE_LT if write else READ_LT
        if lock_sid is None:
            op = Ops.lock_new(locktype, offset, length, self.open_seqid, open_sid, 0, self.clientid, owner, reclaim)
            reply = self._seq_call(Ops.putfh(fh), op)
            self.lock_seqids[reply.last.value[4:]] = 1
        else:
            other = lock_sid[4:]
            op = Ops.lock_existing(locktype, offset, length, lock_sid, self.lock_seqids[other], reclaim)
            reply = self.call(Ops.putfh(fh), op, check=False)
            if reply.last.status not in NO_SEQID_BUMP:
                self.lock_seqids[other] += 1
            if reply.status != OK:
                raise Nfs4Failed(reply)
        return reply.last.value

    def unlock(self, fh: bytes, lock_sid: bytes, offset: int, length: int) -> bytes:
        other = lock_sid[4:]
        reply = self.call(Ops.putfh(fh), Ops.locku(WRITE_LT, self.lock_seqids[other], lock_sid, offset, length),
                          check=False)
        if reply.last.status not in NO_SEQID_BUMP:
            self.lock_seqids[other] += 1
        if reply.status != OK:
            raise Nfs4Failed(reply)
        return reply.last.value

    def test_lock(self, fh: bytes, offset: int, length: int, write: bool = True,
                  owner: bytes = b"lock-owner-1") -> Reply:
        return self.call(Ops.putfh(fh), Ops.lockt(WRITE_LT if write else READ_LT, offset, length,
                                                   self.clientid, owner), check=False)

    def write(self, fh: bytes, stateid: bytes, offset: int, data: bytes) -> Reply:
        return self.call(Ops.putfh(fh), Ops.write(stateid, offset, data))

    def read(self, fh: bytes, stateid: bytes, offset: int, count: int) -> bytes:
        return self.call(Ops.putfh(fh), Ops.read(stateid, offset, count)).last.value[1]
