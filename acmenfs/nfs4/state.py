"""NFSv4 client state (RFC 7530 §9, RFC 8881 §8-9): clients, leases, open and lock state.

Owns the ``StateManager``: client records and the 4.0 SETCLIENTID /
SETCLIENTID_CONFIRM / RENEW rules, leases and the expiry of idle clients, open
owners and lock owners with their seqids and last replies (RFC 7530 §9.1.7),
open state with share reservations (access/deny), lock state over the range
table of ``locks.py``, stateids (seqid bumps, OLD/BAD/STALE/EXPIRED), the check
READ/WRITE make (``check_io``; ``check_io_fast``, its common case for the
COMPOUND fast path), and the grace rules (with ``grace.py``).
4.1 sessions and their client ID rules live in ``sessions.py`` (``self.sessions``).

Sans-IO: no XDR, no sockets; the only I/O is the durable client records that
``grace.ClientRecords`` writes.  Thread-safe: one re-entrant lock
(``self.mutex``) guards everything; the clock is injected.  Errors are raised as
``Nfs4Error``; a seqid replay is returned by ``check_seqid`` as the cached
(status, body) for the op handler to answer again.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from acmenfs.nfs4.const import Nfs4Stat
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.clients import Client, LockOwner, LockState, OpenOwner, OpenState, Owner, Stateid
from acmenfs.nfs4.grace import ClientRecords, Grace
from acmenfs.nfs4.locks import Lock, LockTable
from acmenfs.nfs4.sessions import Sessions

S = Nfs4Stat
U32 = struct.Struct(">I")
ZERO_OTHER = b"\0" * 12
ONES_OTHER = b"\xff" * 12
ANONYMOUS = b"\0" * 16
BYPASS = b"\xff" * 16
INVALID_STATEID = U32.pack(0xFFFFFFFF) + ZERO_OTHER     # 4.1: what CLOSE answers
ACCESS_READ, ACCESS_WRITE = 1, 2
# RFC 7530 §9.1.7: these errors neither advance an owner's seqid nor replace its last reply
NO_SEQID_BUMP = frozenset({S.STALE_CLIENTID, S.STALE_STATEID, S.BAD_STATEID, S.BAD_SEQID,
                           S.BADXDR, S.RESOURCE, S.NOFILEHANDLE, S.MOVED})
MAX_EXPIRED_REMEMBERED = 4096


def fail(status: Nfs4Stat, message: str = "", body: bytes = b"") -> Nfs4Error:
    return Nfs4Error(status, message, body)


class StateManager:
    """All NFSv4 state of one server instance (see module docstring)."""

    def __init__(self, lease_seconds: float = 90, grace_seconds: float | None = None,
                 records_dir: str | Path | None = None, clock: Callable[[], float] = time.monotonic,
                 boot_id: int | None = None) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.mutex = threading.RLock()
        self.records = ClientRecords(records_dir)
        if boot_id is None:     # unique per instance, even for restarts within one second
            boot_id = max(int(time.time()), max(self.records.previous_boots, default=0) + 1)
        self.boot = boot_id & 0xFFFFFFFF
        self.boot_tag = U32.pack(self.boot)
        self.records.note_boot(self.boot)
        self._ids = itertools.count(1)
        self.clients: dict[int, Client] = {}
        self.confirmed_by_owner: dict[bytes, Client] = {}
        self.unconfirmed_by_owner: dict[bytes, Client] = {}
        self.states: dict[bytes, OpenState | LockState] = {}
        self.file_opens: dict[object, set[OpenState]] = {}
        self.locks = LockTable()
        self.expired_others: OrderedDict[bytes, None] = OrderedDict()
        self.expired_clientids: OrderedDict[int, None] = OrderedDict()
        self.grace = Grace(self.records, lease_seconds if grace_seconds is None else grace_seconds, clock)
        self.sessions = Sessions(self)
        self.slot_done = self.sessions.slot_done   # the method below without its call (every 4.1 COMPOUND)

    def configure(self, lease_seconds: float, grace_seconds: float | None = None) -> None:
        """Set the lease (and the grace period, default = lease) before clients arrive."""
        with self.mutex:
            self.lease_seconds = lease_seconds
            self.grace = Grace(self.records, lease_seconds if grace_seconds is None else grace_seconds,
                               self.clock)

    def slot_done(self, slot, reply: bytes) -> None:
        """After a COMPOUND that passed SEQUENCE: keep its reply in the slot (compound.py)."""
        self.sessions.slot_done(slot, reply)

    # ----- identifiers ----------------------------------------------------------------
    def new_clientid(self) -> int:
        return self.boot << 32 | (next(self._ids) & 0xFFFFFFFF)

    def new_other(self) -> bytes:
        return self.boot_tag + struct.pack(">Q", next(self._ids))

    @staticmethod
    def new_verifier() -> bytes:
        return os.urandom(8)

    # ----- leases ---------------------------------------------------------------------
    def in_grace(self) -> bool:
        with self.mutex:
            return self.grace.active()

    def lease_expired(self, client: Client, now: float | None = None) -> bool:
        return (self.clock() if now is None else now) - client.last_renew > self.lease_seconds

    def renew_client(self, client: Client) -> None:
        client.last_renew = self.clock()

    def expire_idle(self, now: float | None = None) -> list[int]:
        """Free every client whose lease ran out; returns their clientids."""
        with self.mutex:
            now = self.clock() if now is None else now
            gone = [c for c in self.clients.values() if self.lease_expired(c, now)]
            for client in gone:
                self.expire_client(client)
            self.grace.active()
            return [c.clientid for c in gone]

    def expire_client(self, client: Client, *, forget_record: bool = True) -> None:
        """Free a client and all its state (lease expiry, or replaced by a restarted client)."""
        with self.mutex:
            for owner in list(client.open_owners.values()):
                for open_state in list(owner.opens.values()):
                    self._free_open(open_state, expired=True)
            for lock_owner in list(client.lock_owners.values()):
                for lock_state in list(lock_owner.states.values()):
                    self._free_lock_state(lock_state, expired=True)
            client.open_owners.clear()
            client.lock_owners.clear()
            self.sessions.drop_all(client)
            self.clients.pop(client.clientid, None)
            for index in (self.confirmed_by_owner, self.unconfirmed_by_owner):
                if index.get(client.owner) is client:
                    del index[client.owner]
            self._remember(self.expired_clientids, client.clientid)
            if forget_record and client.confirmed and client.owner not in self.confirmed_by_owner:
                self.records.remove(client.owner)

    def _remember(self, table: OrderedDict, key) -> None:
        table[key] = None
        while len(table) > MAX_EXPIRED_REMEMBERED:
            table.popitem(last=False)

    # ----- client lookup ----------------------------------------------------------------
    def client_for(self, clientid: int, *, renew: bool = True) -> Client:
        """A confirmed, live client; STALE_CLIENTID / EXPIRED otherwise."""
        client = self.clients.get(clientid)
        if client is None or not client.confirmed:
            if clientid in self.expired_clientids:
                raise fail(S.EXPIRED, f"clientid {clientid:#x} expired")
            raise fail(S.STALE_CLIENTID, f"unknown clientid {clientid:#x}")
        if self.lease_expired(client):
            self.expire_client(client)
            raise fail(S.EXPIRED, f"clientid {clientid:#x}: lease expired")
        if renew:
            self.renew_client(client)
        return client

    def _register(self, client: Client) -> None:
        self.clients[client.clientid] = client
        index = self.confirmed_by_owner if client.confirmed else self.unconfirmed_by_owner
        index[client.owner] = client

    def _drop_unconfirmed(self, owner: bytes) -> None:
        old = self.unconfirmed_by_owner.pop(owner, None)
        if old is not None:
            self.clients.pop(old.clientid, None)
            self.sessions.drop_all(old)

    def confirm_client(self, client: Client) -> None:
        """Unconfirmed -> confirmed; a confirmed record of the same owner (the client
        restarted) is freed with all its state."""
        old = self.confirmed_by_owner.get(client.owner)
        if old is not None and old is not client:
            self.expire_client(old, forget_record=False)
        if self.unconfirmed_by_owner.get(client.owner) is client:
            del self.unconfirmed_by_owner[client.owner]
        client.confirmed = True
        self.confirmed_by_owner[client.owner] = client
        self.grace.came_back(client.owner)
        self.renew_client(client)

    # ----- 4.0 SETCLIENTID / SETCLIENTID_CONFIRM / RENEW (RFC 7530 §16.33-16.34) ---------
    def setclientid(self, owner: bytes, verifier: bytes, principal) -> tuple[int, bytes]:
        with self.mutex:
            now = self.clock()
            conf = self.confirmed_by_owner.get(owner)
            if conf is not None and conf.minorversion != 0:
                conf = None            # a 4.1 record of this owner: replaced on SETCLIENTID_CONFIRM
            if conf is not None and conf.principal != principal:
                if conf.has_state() and not self.lease_expired(conf, now):
                    raise fail(S.CLID_INUSE, "client owner in use by another principal")
            self._drop_unconfirmed(owner)
            if conf is not None:
                conf.pending_confirm = None
            confirm = self.new_verifier()
            if conf is not None and conf.principal == principal and conf.verifier == verifier:
                conf.pending_confirm = confirm           # callback update, same clientid
                return conf.clientid, confirm
            client = Client(self.new_clientid(), owner, verifier, principal, 0, now)
            client.confirm = confirm
            self._register(client)
            return client.clientid, confirm

    def setclientid_confirm(self, clientid: int, confirm: bytes, principal) -> None:
        with self.mutex:
            client = self.clients.get(clientid)
            if client is None:
                raise fail(S.STALE_CLIENTID, f"unknown clientid {clientid:#x}")
            if client.principal != principal:
                raise fail(S.CLID_INUSE, "SETCLIENTID_CONFIRM from another principal")
            if client.confirmed:
                if client.pending_confirm == confirm:
                    client.confirm, client.pending_confirm = confirm, None
                elif client.confirm != confirm:
                    raise fail(S.STALE_CLIENTID, "confirm verifier does not match")
                self.renew_client(client)
                return
            if client.confirm != confirm:
                raise fail(S.STALE_CLIENTID, "confirm verifier does not match")
            self.confirm_client(client)

    def renew(self, clientid: int) -> None:
        with self.mutex:
            client = self.client_for(clientid)
            if client.minorversion != 0:
                raise fail(S.STALE_CLIENTID, "RENEW of a 4.1 client ID")

    # ----- grace ----------------------------------------------------------------------
    def check_grace(self, client: Client, reclaim: bool) -> None:
        """RFC 7530 §9.14 / RFC 8881 §8.4.2: reclaims only in grace and only by clients
        with a record; other locking ops wait for grace (and, 4.1, for RECLAIM_COMPLETE)."""
        with self.mutex:
            self._check_grace(client, reclaim)

    def _check_grace(self, client: Client, reclaim: bool) -> None:
        if reclaim:
            if client.reclaim_complete or not self.grace.may_reclaim(client.owner):
                raise fail(S.NO_GRACE, "nothing to reclaim (no grace, no record, or reclaim complete)")
            return
        if self.grace.active():
            raise fail(S.GRACE, "grace period: only reclaims")
        if client.minorversion >= 1 and not client.reclaim_complete:
            raise fail(S.GRACE, "4.1 client has not sent RECLAIM_COMPLETE")

    def note_state(self, client: Client) -> None:
        """The client holds state: keep its record on disk for reclaim after a restart.
        Waits for the disk: call it without holding ``self.mutex`` (SEQUENCE and check_io
        run on the event loop and take it)."""
        self.records.add(client.owner)

    # ----- owners and seqids (RFC 7530 §9.1.7) --------------------------------------------
    def open_owner(self, clientid: int, owner: bytes) -> OpenOwner:
        with self.mutex:
            client = self.client_for(clientid)
            found = client.open_owners.get(owner)
            if found is None:
                found = client.open_owners[owner] = OpenOwner(client, owner)
            return found

    def lock_owner(self, client: Client, owner: bytes, *, create: bool = True) -> LockOwner | None:
        with self.mutex:
            found = client.lock_owners.get(owner)
            if found is None and create:
                found = client.lock_owners[owner] = LockOwner(client, owner)
            return found

    def check_seqid(self, owner: Owner, seqid: int, op: str) -> tuple[int, bytes] | None:
        """None: go ahead; (status, body): the cached reply of a retransmission."""
        with self.mutex:
            return self._check_seqid(owner, seqid, op)

    def _check_seqid(self, owner: Owner, seqid: int, op: str) -> tuple[int, bytes] | None:
        if owner.client.minorversion >= 1 or owner.seqid is None:
            return None
        if seqid == owner.seqid:
            if owner.last_reply is not None and owner.last_reply[0] == op:
                return owner.last_reply[1], owner.last_reply[2]
            raise fail(S.BAD_SEQID, f"seqid {seqid} replays another operation")
        if seqid != (owner.seqid + 1) & 0xFFFFFFFF:
            if op == "OPEN" and isinstance(owner, OpenOwner) and not owner.confirmed:
                self._reset_open_owner(owner)   # an unconfirmed owner is taken as a new one
                return None
            raise fail(S.BAD_SEQID, f"seqid {seqid}, expected {(owner.seqid + 1) & 0xFFFFFFFF}")
        return None

    def record_reply(self, owner: Owner, seqid: int, op: str, status: int, body: bytes,
                     fh=None) -> None:
        if owner.client.minorversion >= 1 or status in NO_SEQID_BUMP:
            return
        with self.mutex:
            owner.seqid = seqid
            owner.last_reply = (op, int(status), bytes(body))
            owner.last_fh = fh

    def _reset_open_owner(self, owner: OpenOwner) -> None:
        for open_state in list(owner.opens.values()):
            self._free_open(open_state)
        owner.seqid = None
        owner.last_reply = None

    # ----- stateids ---------------------------------------------------------------------
    def find_state(self, stateid: bytes, file_key=None, kind: type | None = None,
                   *, check_seqid: bool = True, minorversion: int = 0) -> OpenState | LockState:
        """The state a stateid names, after RFC 8881 §8.2.4 / RFC 7530 §9.1.4 checks."""
        with self.mutex:
            other = bytes(stateid[4:])
            if other in (ZERO_OTHER, ONES_OTHER):
                raise fail(S.BAD_STATEID, "special stateid not allowed here")
            state = self.states.get(other)
            if state is None:
                if other in self.expired_others:
                    raise fail(S.EXPIRED, "stateid of an expired client")
                if (minorversion == 0 and other[:4] != self.boot_tag
                        and U32.unpack_from(other)[0] in self.records.previous_boots):
                    raise fail(S.STALE_STATEID, "stateid of a previous server instance")
                raise fail(S.BAD_STATEID, "unknown stateid")
            if kind is not None and not isinstance(state, kind):
                raise fail(S.BAD_STATEID, f"not a {kind.__name__} stateid")
            if file_key is not None and state.file_key != file_key:
                raise fail(S.BAD_STATEID, "stateid is for another file")
            if self.lease_expired(state.client):
                self.expire_client(state.client)
                raise fail(S.EXPIRED, "lease expired")
            if check_seqid:
                self.check_stateid_seqid(state, stateid)
            self.renew_client(state.client)
            return state

    @staticmethod
    def check_stateid_seqid(state: Stateid, stateid: bytes) -> None:
        seqid = U32.unpack_from(stateid)[0]
        if seqid == 0 and state.client.minorversion >= 1:
            return                                   # 4.1: "the current seqid"
        if seqid > state.seqid:
            raise fail(S.BAD_STATEID, f"stateid seqid {seqid} from the future ({state.seqid})")
        if seqid < state.seqid:
            raise fail(S.OLD_STATEID, f"stateid seqid {seqid} < {state.seqid}")

    def test_stateid(self, client: Client, stateid: bytes) -> int:
        """TEST_STATEID's per-stateid status."""
        with self.mutex:
            try:
                state = self.find_state(stateid, minorversion=1)
            except Nfs4Error as exc:
                return int(exc.status)
            return int(S.OK) if state.client is client else int(S.BAD_STATEID)

    def free_stateid(self, client: Client, stateid: bytes) -> None:
        with self.mutex:
            state = self.find_state(stateid, minorversion=1)
            if state.client is not client:
                raise fail(S.BAD_STATEID, "stateid of another client")
            if isinstance(state, OpenState) or self.locks.holds(state.file_key, state.owner):
                raise fail(S.LOCKS_HELD, "stateid still holds an open or locks")
            self._free_lock_state(state)

    # ----- I/O check (called by READ/WRITE/SETATTR of size) ---------------------------------
    def check_io(self, stateid: bytes, file_key, write: bool) -> None:
        with self.mutex:
            stateid = bytes(stateid)
            if stateid == ANONYMOUS:
                self._check_share(file_key, ACCESS_WRITE if write else ACCESS_READ, None)
                return
            if stateid == BYPASS:
                if write:
                    raise fail(S.BAD_STATEID, "the READ-bypass stateid is for READ only")
                return
            # A stateid this server knows is checked against its own client's minor version
            # (check_stateid_seqid); only an unknown one is judged by find_state's v4.0 rule.
            state = self.find_state(stateid, file_key)
            open_state = state if isinstance(state, OpenState) else state.open
            if write and not open_state.access & ACCESS_WRITE:
                raise fail(S.OPENMODE, "file not open for writing")

    def check_io_fast(self, stateid: bytes, file_key, write: bool) -> bool:
        """``check_io``'s common case, for ``fastpath``: True, with check_io's effect (the lease
        renewed), for a live stateid of this file whose seqid is current (or 0 from a 4.1
        client) and whose open mode allows the I/O; False, having changed nothing, for anything
        else (special stateids too: none is a key of ``states``), which check_io answers.
        The checks are find_state's, in its order; the renewal takes the time the lease was
        checked at (find_state reads the clock again)."""
        with self.mutex:
            state = self.states.get(stateid[4:])
            if state is None or state.file_key != file_key:
                return False
            client = state.client
            now = self.clock()
            if self.lease_expired(client, now):
                return False
            seqid = U32.unpack_from(stateid)[0]
            if seqid != state.seqid and (seqid or client.minorversion < 1):
                return False
            if write and not (state if isinstance(state, OpenState) else state.open).access & ACCESS_WRITE:
                return False
            client.last_renew = now
            return True

    def _check_share(self, file_key, access: int, skip: OpenOwner | None) -> None:
        for other in self.file_opens.get(file_key, ()):
            if other.owner is not skip and other.deny & access:
                raise fail(S.LOCKED, "a share reservation denies this access")

    # ----- OPEN / OPEN_CONFIRM / OPEN_DOWNGRADE / CLOSE --------------------------------------
    def open(self, owner: OpenOwner, file_key, access: int, deny: int) -> OpenState:
        """Share reservation check, then a new open state or an upgrade of the owner's one."""
        with self.mutex:
            if self.clients.get(owner.client.clientid) is not owner.client:
                raise fail(S.EXPIRED, "client freed meanwhile")
            owner.client.open_owners.setdefault(owner.owner, owner)
            self.check_share_conflict(owner, file_key, access, deny)
            state = owner.opens.get(file_key)
            if state is None:
                state = OpenState(self.new_other(), file_key, owner)
                owner.opens[file_key] = state
                self.states[state.other] = state
                self.file_opens.setdefault(file_key, set()).add(state)
                owner.client.states_held += 1
            else:
                state.bump()
            state.access |= access
            state.deny |= deny
            state.access_bmap.add(access)
            state.deny_bmap.add(deny)
        self.note_state(owner.client)           # durable, outside the mutex
        return state

    def check_share_conflict(self, owner: OpenOwner, file_key, access: int, deny: int) -> None:
        for other in list(self.file_opens.get(file_key, ())):
            if other.owner is owner:
                continue
            if other.deny & access or other.access & deny:
                if self.lease_expired(other.client):
                    self.expire_client(other.client)
                    continue
                raise fail(S.SHARE_DENIED, f"share reservation conflict (access {other.access}, "
                                            f"deny {other.deny})")

    def require_live(self, state: Stateid) -> None:
        """A state found earlier may have been freed since (lease expiry, CLOSE): refuse it."""
        if self.states.get(state.other) is not state:
            if state.other in self.expired_others:
                raise fail(S.EXPIRED, "stateid of an expired client")
            raise fail(S.BAD_STATEID, "stateid freed meanwhile")

    def open_confirm(self, state: OpenState) -> bytes:
        with self.mutex:
            self.require_live(state)
            if state.owner.confirmed:
                raise fail(S.BAD_STATEID, "open owner already confirmed")
            state.owner.confirmed = True
            state.bump()
            return state.stateid()

    def open_downgrade(self, state: OpenState, access: int, deny: int) -> bytes:
        with self.mutex:
            self.require_live(state)
            if (access not in state.access_bmap or deny not in state.deny_bmap
                    or access & ~state.access or deny & ~state.deny):
                raise fail(S.INVAL, "OPEN_DOWNGRADE to modes never opened with")
            state.access, state.deny = access, deny
            state.access_bmap, state.deny_bmap = {access}, {deny}
            state.bump()
            return state.stateid()

    def close(self, state: OpenState) -> bytes:
        with self.mutex:
            self.require_live(state)
            for lock_state in list(state.lock_states):
                if self.locks.holds(lock_state.file_key, lock_state.owner):
                    raise fail(S.LOCKS_HELD, "locks still held on this file")
            state.bump()
            answer = state.stateid() if state.client.minorversion == 0 else INVALID_STATEID
            self._free_open(state)
            owner = state.owner
            if owner.client.minorversion >= 1 and not owner.opens:   # 4.1: no replay to keep
                if owner.client.open_owners.get(owner.owner) is owner:
                    del owner.client.open_owners[owner.owner]
            return answer

    def _free_open(self, state: OpenState, expired: bool = False) -> None:
        for lock_state in list(state.lock_states):
            self._free_lock_state(lock_state, expired)
        if self.states.pop(state.other, None) is not None:
            state.client.states_held -= 1
        if expired:
            self._remember(self.expired_others, state.other)
        state.owner.opens.pop(state.file_key, None)
        opens = self.file_opens.get(state.file_key)
        if opens is not None:
            opens.discard(state)
            if not opens:
                del self.file_opens[state.file_key]

    # ----- LOCK / LOCKT / LOCKU / RELEASE_LOCKOWNER --------------------------------------------
    def lock_state_for(self, lock_owner: LockOwner, open_state: OpenState) -> LockState:
        """The lock owner's state on the open's file, created (seqid 1) on first use."""
        with self.mutex:
            self.require_live(open_state)
            lock_owner.client.lock_owners.setdefault(lock_owner.owner, lock_owner)
            state = lock_owner.states.get(open_state.file_key)
            if state is None:
                state = LockState(self.new_other(), open_state.file_key, lock_owner, open_state)
                state.seqid = 0                  # the first LOCK bumps it to 1
                lock_owner.states[open_state.file_key] = state
                open_state.lock_states.add(state)
                self.states[state.other] = state
                lock_owner.client.states_held += 1
            return state

    def discard_lock_state(self, state: LockState) -> None:
        """Undo ``lock_state_for`` after a first LOCK that failed (no stateid was given out)."""
        with self.mutex:
            if state.seqid == 0:
                self._free_lock_state(state)
                owner = state.owner
                if not owner.states and owner.client.lock_owners.get(owner.owner) is owner:
                    del owner.client.lock_owners[owner.owner]

    def lock(self, state: LockState, write: bool, start: int, end: int) -> bytes:
        """Take the range or raise DENIED with the conflicting Lock in ``exc.conflict``."""
        with self.mutex:
            self.require_live(state)
            if write and not state.open.access & ACCESS_WRITE:
                raise fail(S.OPENMODE, "WRITE lock on a file not open for writing")
            conflict = self._conflict(state.file_key, state.owner, start, end, write)
            if conflict is not None:
                raise denied(conflict)
            self.locks.lock(state.file_key, state.owner, start, end, write)
            state.bump()
            answer = state.stateid()
        self.note_state(state.client)           # durable, outside the mutex
        return answer

    def lockt(self, file_key, owner_key, start: int, end: int, write: bool) -> None:
        with self.mutex:
            conflict = self._conflict(file_key, owner_key, start, end, write)
            if conflict is not None:
                raise denied(conflict)

    def locku(self, state: LockState, start: int, end: int) -> bytes:
        with self.mutex:
            self.require_live(state)
            self.locks.unlock(state.file_key, state.owner, start, end)
            state.bump()
            return state.stateid()

    def _conflict(self, file_key, owner_key, start: int, end: int, write: bool) -> Lock | None:
        """The first conflicting lock of a live owner; owners whose lease ran out are freed."""
        while True:
            conflict = self.locks.test(file_key, owner_key, start, end, write)
            if conflict is None or not self.lease_expired(conflict.owner.client):
                return conflict
            self.expire_client(conflict.owner.client)

    def release_lockowner(self, clientid: int, owner: bytes) -> None:
        with self.mutex:
            client = self.client_for(clientid)
            lock_owner = client.lock_owners.get(owner)
            if lock_owner is None:
                return
            if any(self.locks.holds(key, lock_owner) for key in lock_owner.states):
                raise fail(S.LOCKS_HELD, "lock owner still holds locks")
            for state in list(lock_owner.states.values()):
                self._free_lock_state(state)
            del client.lock_owners[owner]

    def _free_lock_state(self, state: LockState, expired: bool = False) -> None:
        self.locks.release(state.file_key, state.owner)
        if self.states.pop(state.other, None) is not None:
            state.client.states_held -= 1
        if expired:
            self._remember(self.expired_others, state.other)
        owner = state.owner
        owner.states.pop(state.file_key, None)
        state.open.lock_states.discard(state)
        if owner.client.minorversion >= 1 and not owner.states:   # 4.1 has no RELEASE_LOCKOWNER
            if owner.client.lock_owners.get(owner.owner) is owner:
                del owner.client.lock_owners[owner.owner]


def denied(conflict: Lock) -> Nfs4Error:
    """NFS4ERR_DENIED carrying the conflicting lock (the handler encodes LOCK4denied)."""
    exc = fail(S.DENIED, f"range held by another lock owner ({conflict.start}-{conflict.end})")
    exc.conflict = conflict
    return exc
