"""NFSv4.1 client IDs and sessions (RFC 8881 §2.4, §2.10, §18.35-18.37, §18.46, §18.49-18.51).

Owns EXCHANGE_ID's client record rules, CREATE_SESSION (with its own one-slot
replay cache, ``csa_sequence``), the sessions and their fore-channel slot
tables with the reply cache that gives exactly-once semantics (SEQUENCE: a retry
with the slot's seqid gets the cached COMPOUND reply, seqid + 1 proceeds,
anything else is misordered), DESTROY_SESSION, DESTROY_CLIENTID,
BIND_CONN_TO_SESSION and RECLAIM_COMPLETE.

Sans-IO and XDR-free: the op handlers decode and encode; this module holds
state under the ``StateManager``'s lock.  No backchannel: sessions never get
one and no flags promise it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from acmenfs.nfs4.clients import Client
from acmenfs.nfs4.const import Nfs4Stat
from acmenfs.nfs4.errors import Nfs4Error, SlotReplay

if TYPE_CHECKING:
    from acmenfs.nfs4.state import StateManager

S = Nfs4Stat
# EXCHANGE_ID flags (RFC 8881 §18.35)
EXCHGID4_FLAG_SUPP_MOVED_REFER = 0x00000001
EXCHGID4_FLAG_SUPP_MOVED_MIGR = 0x00000002
EXCHGID4_FLAG_SUPP_FENCE_OPS = 0x00000004
EXCHGID4_FLAG_BIND_PRINC_STATEID = 0x00000100
EXCHGID4_FLAG_USE_NON_PNFS = 0x00010000
EXCHGID4_FLAG_USE_PNFS_MDS = 0x00020000
EXCHGID4_FLAG_USE_PNFS_DS = 0x00040000
EXCHGID4_FLAG_UPD_CONFIRMED_REC_A = 0x40000000
EXCHGID4_FLAG_CONFIRMED_R = 0x80000000
EXCHGID4_FLAG_MASK_A = 0x40070107
# CREATE_SESSION flags
CREATE_SESSION4_FLAG_PERSIST = 0x1
CREATE_SESSION4_FLAG_CONN_BACK_CHAN = 0x2
CREATE_SESSION4_FLAG_CONN_RDMA = 0x4

MAX_SLOTS = 64
MAX_REQUEST = 1024 * 1024 + 64 * 1024
MAX_RESPONSE = 2 * 1024 * 1024 + 64 * 1024
MAX_RESPONSE_CACHED = 64 * 1024
MAX_OPERATIONS = 128
MAX_CACHED_REPLY = MAX_RESPONSE        # replies larger than this are not kept (RETRY_UNCACHED_REP)
# The smallest fore channel a session can be used on (else CREATE_SESSION answers TOOSMALL, RFC 8881
# §18.36.3): SEQUENCE and one more operation; a COMPOUND of a bare SEQUENCE (RPC call header with an
# AUTH_NONE credential 40 bytes, COMPOUND4args header 12, SEQUENCE4args 36) and its reply (RPC reply
# header 24, COMPOUND4res header 12, SEQUENCE4res 44).
MIN_OPERATIONS = 2
MIN_REQUEST = 40 + 12 + 36
MIN_RESPONSE = 24 + 12 + 44


@dataclass
class ChannelAttrs:
    """channel_attrs4 (no RDMA: ird is never sent back)."""

    headerpadsize: int
    maxrequestsize: int
    maxresponsesize: int
    maxresponsesize_cached: int
    maxoperations: int
    maxrequests: int

    def too_small(self) -> str | None:
        """Why a fore channel with these attributes could not carry a SEQUENCE and an operation."""
        if self.maxoperations < MIN_OPERATIONS:
            return f"ca_maxoperations {self.maxoperations}: a COMPOUND needs SEQUENCE and one more operation"
        if self.maxrequestsize < MIN_REQUEST:
            return f"ca_maxrequestsize {self.maxrequestsize} is below a bare SEQUENCE request ({MIN_REQUEST})"
        if self.maxresponsesize < MIN_RESPONSE:
            return f"ca_maxresponsesize {self.maxresponsesize} is below a bare SEQUENCE reply ({MIN_RESPONSE})"
        return None

    def negotiated(self) -> "ChannelAttrs":
        return ChannelAttrs(0, min(self.maxrequestsize, MAX_REQUEST),
                            min(self.maxresponsesize, MAX_RESPONSE),
                            min(self.maxresponsesize_cached, MAX_RESPONSE_CACHED),
                            min(self.maxoperations, MAX_OPERATIONS),
                            max(1, min(self.maxrequests, MAX_SLOTS)))


class Slot:
    """One fore-channel slot: the last seqid and the reply it got."""

    __slots__ = ("slotid", "session", "seqid", "reply", "in_progress", "digest")

    def __init__(self, slotid: int, session: "Session") -> None:
        self.slotid = slotid
        self.session = session
        self.seqid = 0
        self.reply: bytes | None = None
        self.in_progress = False
        self.digest: int | None = None      # of the request's ops: a retry must repeat them


class Session:
    def __init__(self, sessionid: bytes, client: Client, fore: ChannelAttrs, back: ChannelAttrs,
                 flags: int) -> None:
        self.sessionid = sessionid
        self.client = client
        self.fore = fore
        self.back = back
        self.flags = flags
        self.slots = [Slot(i, self) for i in range(fore.maxrequests)]
        self.destroyed = False

    @property
    def max_response_size(self) -> int:
        """The negotiated ca_maxresponsesize (compound.py answers REP_TOO_BIG beyond it)."""
        return self.fore.maxresponsesize

    def refusal(self, op_count: int, request_size: int) -> Nfs4Error | None:
        """What SEQUENCE answers a COMPOUND beyond this session's fore channel (RFC 8881
        §2.10.6.4, §18.36.3) before its slot is used: TOO_MANY_OPS past ca_maxoperations,
        REQ_TOO_BIG past ca_maxrequestsize (``request_size``: the RPC message); None within."""
        fore = self.fore
        if op_count > fore.maxoperations:
            return Nfs4Error(S.TOO_MANY_OPS, f"{op_count} ops, the session allows {fore.maxoperations}")
        if request_size > fore.maxrequestsize:
            return Nfs4Error(S.REQ_TOO_BIG, f"{request_size}-byte request, the session allows {fore.maxrequestsize}")
        return None


@dataclass
class SequenceResult:
    session: Session
    slot: Slot
    highest_slotid: int
    target_highest_slotid: int
    status_flags: int


class Sessions:
    """4.1 client IDs and sessions of one ``StateManager`` (shares its lock and maps)."""

    def __init__(self, manager: "StateManager") -> None:
        self.m = manager
        self.by_id: dict[bytes, Session] = {}

    # ----- EXCHANGE_ID (RFC 8881 §18.35.5) ------------------------------------------------
    def exchange_id(self, owner: bytes, verifier: bytes, principal, flags: int,
                    minorversion: int = 1) -> tuple[Client, int, int]:
        """-> (client, eir_sequenceid, eir_flags)."""
        m = self.m
        if flags & ~EXCHGID4_FLAG_MASK_A or flags & EXCHGID4_FLAG_CONFIRMED_R:
            raise Nfs4Error(S.INVAL, f"EXCHANGE_ID flags {flags:#x}")
        with m.mutex:
            now = m.clock()
            conf = m.confirmed_by_owner.get(owner)
            if conf is not None and m.lease_expired(conf, now):
                m.expire_client(conf)
                conf = None
            if conf is not None and conf.minorversion == 0:
                conf = None            # a 4.0 record of this owner: replaced once this one is confirmed
            if flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A:
                if conf is None:
                    raise Nfs4Error(S.NOENT, "no confirmed client record to update")
                if conf.principal != principal:
                    raise Nfs4Error(S.PERM, "update from another principal")
                if conf.verifier != verifier:
                    raise Nfs4Error(S.NOT_SAME, "update with another verifier")
                m.renew_client(conf)
                return conf, conf.cs_seqid + 1, self._flags(conf)
            if conf is not None and conf.principal != principal and conf.has_state():
                raise Nfs4Error(S.CLID_INUSE, "client owner in use by another principal")
            if conf is not None and conf.principal == principal and conf.verifier == verifier:
                m.renew_client(conf)                          # the same client again
                return conf, conf.cs_seqid + 1, self._flags(conf)
            m._drop_unconfirmed(owner)
            client = Client(m.new_clientid(), owner, verifier, principal, minorversion, now)
            m._register(client)
            return client, 1, self._flags(client)

    @staticmethod
    def _flags(client: Client) -> int:
        return EXCHGID4_FLAG_USE_NON_PNFS | (EXCHGID4_FLAG_CONFIRMED_R if client.confirmed else 0)

    # ----- CREATE_SESSION (RFC 8881 §18.36) --------------------------------------------------
    def create_session(self, clientid: int, sequence: int, principal, flags: int,
                       fore: ChannelAttrs, back: ChannelAttrs,
                       encode: Callable[[Session, int], bytes]) -> bytes:
        """Returns the encoded CREATE_SESSION4resok (``encode(session, flags)``), replayed
        as is when ``sequence`` repeats the client's last one."""
        m = self.m
        with m.mutex:
            client = m.clients.get(clientid)
            if client is None or client.minorversion == 0:
                raise Nfs4Error(S.STALE_CLIENTID, f"unknown clientid {clientid:#x}")
            if client.confirmed and m.lease_expired(client):
                m.expire_client(client)
                raise Nfs4Error(S.STALE_CLIENTID, "lease expired")
            if sequence == client.cs_seqid and client.cs_reply is not None:
                if isinstance(client.cs_reply, Nfs4Error):  # a replayed refusal is refused again
                    raise client.cs_reply
                return client.cs_reply
            if sequence != (client.cs_seqid + 1) & 0xFFFFFFFF:
                raise Nfs4Error(S.SEQ_MISORDERED, f"csa_sequence {sequence}, expected "
                                                   f"{(client.cs_seqid + 1) & 0xFFFFFFFF}")
            if client.principal != principal:
                raise Nfs4Error(S.CLID_INUSE, "CREATE_SESSION from another principal")
            too_small = fore.too_small()
            if too_small is not None:  # the client counts this csa_sequence as used (RFC 8881 §18.36.4)
                client.cs_seqid = sequence
                client.cs_reply = Nfs4Error(S.TOOSMALL, too_small)
                raise client.cs_reply
            if not client.confirmed:
                m.confirm_client(client)
            session = Session(os.urandom(16), client, fore.negotiated(), back.negotiated(), 0)
            client.sessions[session.sessionid] = session
            self.by_id[session.sessionid] = session
            m.renew_client(client)
            client.cs_seqid = sequence
            client.cs_reply = encode(session, flags & 0)
            return client.cs_reply

    def lookup(self, sessionid: bytes) -> Session:
        session = self.by_id.get(bytes(sessionid))
        if session is None:
            raise Nfs4Error(S.BADSESSION, "unknown session")
        return session

    def destroy_session(self, sessionid: bytes) -> None:
        with self.m.mutex:
            session = self.lookup(sessionid)
            self._drop(session)

    def _drop(self, session: Session) -> None:
        session.destroyed = True
        self.by_id.pop(session.sessionid, None)
        session.client.sessions.pop(session.sessionid, None)

    def drop_all(self, client: Client) -> None:
        for session in list(client.sessions.values()):
            self._drop(session)

    # ----- SEQUENCE (RFC 8881 §18.46, §2.10.6) ------------------------------------------------
    def sequence(self, sessionid: bytes, seqid: int, slotid: int, highest_slotid: int,
                 digest: int | None = None, op_count: int = 0, request_size: int = 0) -> SequenceResult:
        """``digest``: of the request's ops from SEQUENCE on; a "retry" whose ops differ is
        SEQ_FALSE_RETRY (RFC 8881 §2.10.6.1.3.1) instead of the cached reply of other ops.
        ``op_count``, ``request_size``: of the COMPOUND, checked by ``Session.refusal``."""
        m = self.m
        with m.mutex:
            session = self.lookup(sessionid)
            refused = session.refusal(op_count, request_size)
            if refused is not None:
                raise refused
            now = m.clock()
            if m.lease_expired(session.client, now):
                m.expire_client(session.client)
                raise Nfs4Error(S.BADSESSION, "client lease expired")
            if slotid >= len(session.slots):
                raise Nfs4Error(S.BADSLOT, f"slot {slotid} >= {len(session.slots)}")
            slot = session.slots[slotid]
            if seqid == slot.seqid:
                if digest is not None and slot.digest is not None and digest != slot.digest:
                    raise Nfs4Error(S.SEQ_FALSE_RETRY, "same slot and seqid, other operations")
                if slot.in_progress:
                    raise Nfs4Error(S.DELAY, "retry of a request still in progress")
                if slot.reply is None:
                    raise Nfs4Error(S.RETRY_UNCACHED_REP, "reply of this retry was not kept")
                m.renew_client(session.client)
                raise SlotReplay(slot.reply)
            if seqid != (slot.seqid + 1) & 0xFFFFFFFF:
                raise Nfs4Error(S.SEQ_MISORDERED, f"slot {slotid}: seqid {seqid}, last {slot.seqid}")
            slot.seqid = seqid
            slot.reply = None
            slot.in_progress = True
            slot.digest = digest
            session.client.last_renew = now   # StateManager.renew_client, with the clock read above
            top = len(session.slots) - 1
            return SequenceResult(session, slot, top, top, 0)

    def next_in_slot(self, sessionid: bytes, seqid: int, slotid: int, digest: int) -> Slot | None:
        """``sequence``'s common case only (live session and lease, slot in range, seqid = the
        slot's + 1), with the same effects, for ``fastpath``; None, having changed nothing,
        for anything else (a retry, a misordered seqid, an error), which ``sequence`` answers."""
        m = self.m
        with m.mutex:
            session = self.by_id.get(sessionid)
            if session is None:
                return None
            now = m.clock()
            client = session.client
            if m.lease_expired(client, now):
                return None
            slots = session.slots
            if slotid >= len(slots):
                return None
            slot = slots[slotid]
            if seqid != (slot.seqid + 1) & 0xFFFFFFFF:
                return None
            slot.seqid = seqid
            slot.reply = None
            slot.in_progress = True
            slot.digest = digest
            client.last_renew = now
            return slot

    def slot_done(self, slot: Slot | None, reply: bytes | None) -> None:
        """The slot's request is answered; ``reply`` None: not kept (a retry gets
        RETRY_UNCACHED_REP, RFC 8881 §2.10.6.1.3)."""
        if slot is None:
            return
        with self.m.mutex:
            slot.in_progress = False
            slot.reply = bytes(reply) if reply is not None and len(reply) <= MAX_CACHED_REPLY else None

    # ----- DESTROY_CLIENTID, BIND_CONN_TO_SESSION, RECLAIM_COMPLETE --------------------------
    def destroy_clientid(self, clientid: int, current: Client | None = None) -> None:
        m = self.m
        with m.mutex:
            client = m.clients.get(clientid)
            if client is None or client.minorversion == 0:
                raise Nfs4Error(S.STALE_CLIENTID, f"unknown clientid {clientid:#x}")
            if client.sessions or client.has_state():
                raise Nfs4Error(S.CLIENTID_BUSY, "client still has sessions or state")
            m.expire_client(client)
            m.grace.complete(client.owner)
            m.records.remove(client.owner)

    def bind_conn(self, sessionid: bytes) -> Session:
        with self.m.mutex:
            session = self.lookup(sessionid)
            self.m.renew_client(session.client)
            return session

    def reclaim_complete(self, client: Client, one_fs: bool) -> None:
        m = self.m
        with m.mutex:
            if one_fs:
                return
            if client.reclaim_complete:
                raise Nfs4Error(S.COMPLETE_ALREADY, "RECLAIM_COMPLETE already done")
            client.reclaim_complete = True
            m.grace.complete(client.owner)
