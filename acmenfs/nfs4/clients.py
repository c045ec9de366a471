"""The records NFSv4 state is made of (RFC 7530 §9.1, RFC 8881 §8.2): client IDs, open and
lock owners, open and lock stateids.

Owns only these data classes and the stateid's wire form (seqid + 12-byte other) and seqid
bump; every rule that reads or changes them is ``StateManager``'s (state.py), under its
mutex.  No I/O, no locking of its own.
"""

from __future__ import annotations

import struct
import threading

U32 = struct.Struct(">I")


class Client:
    """One client ID (4.0 SETCLIENTID or 4.1 EXCHANGE_ID)."""

    def __init__(self, clientid: int, owner: bytes, verifier: bytes, principal, minorversion: int,
                 now: float) -> None:
        self.clientid = clientid
        self.owner = owner
        self.verifier = verifier
        self.principal = principal
        self.minorversion = minorversion
        self.confirmed = False
        self.confirm = b""                  # 4.0 setclientid_confirm verifier
        self.pending_confirm: bytes | None = None   # 4.0 callback update awaiting its confirm
        self.last_renew = now
        self.open_owners: dict[bytes, OpenOwner] = {}
        self.lock_owners: dict[bytes, LockOwner] = {}
        self.sessions: dict[bytes, object] = {}     # 4.1: sessionid -> sessions.Session
        self.cs_seqid = 0                   # 4.1: CREATE_SESSION's own slot
        self.cs_reply: bytes | Exception | None = None  # the last CREATE_SESSION's reply, or its refusal
        self.reclaim_complete = False
        self.states_held = 0                # open + lock stateids alive

    def has_state(self) -> bool:
        return self.states_held > 0


class Owner:
    """An open owner or lock owner: seqid and last reply (4.0 replay detection)."""

    def __init__(self, client: Client, owner: bytes) -> None:
        self.client = client
        self.owner = owner
        self.seqid: int | None = None       # last seqid processed; None = new owner
        self.last_reply: tuple[str, int, bytes] | None = None   # (op, status, body)
        self.last_fh = None                 # current fh an OPEN left (set again on its replay)
        self.mutex = threading.Lock()       # one sequenced op of this owner at a time
        self.confirmed = client.minorversion >= 1


class OpenOwner(Owner):
    def __init__(self, client: Client, owner: bytes) -> None:
        super().__init__(client, owner)
        self.opens: dict[object, OpenState] = {}


class LockOwner(Owner):
    def __init__(self, client: Client, owner: bytes) -> None:
        super().__init__(client, owner)
        self.confirmed = True
        self.states: dict[object, LockState] = {}


class Stateid:
    """Common part of open and lock state: the stateid's other and seqid."""

    def __init__(self, other: bytes, file_key) -> None:
        self.other = other
        self.seqid = 1
        self.file_key = file_key

    def stateid(self) -> bytes:
        return U32.pack(self.seqid) + self.other

    def bump(self) -> None:
        self.seqid = self.seqid + 1 if self.seqid < 0xFFFFFFFF else 1


class OpenState(Stateid):
    def __init__(self, other: bytes, file_key, owner: OpenOwner) -> None:
        super().__init__(other, file_key)
        self.owner = owner
        self.access = 0
        self.deny = 0
        self.access_bmap: set[int] = set()   # access values requested (OPEN_DOWNGRADE check)
        self.deny_bmap: set[int] = set()
        self.lock_states: set[LockState] = set()

    @property
    def client(self) -> Client:
        return self.owner.client


class LockState(Stateid):
    def __init__(self, other: bytes, file_key, owner: LockOwner, open_state: OpenState) -> None:
        super().__init__(other, file_key)
        self.owner = owner
        self.open = open_state

    @property
    def client(self) -> Client:
        return self.owner.client
