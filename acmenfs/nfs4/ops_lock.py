"""NFSv4 LOCK, LOCKT, LOCKU (RFC 7530 §16.10-16.12, RFC 8881 §18.10-18.12): XDR in, XDR out.

Owns decoding these operations, choosing the owner whose seqid sequences them
(the open owner for a new lock owner, ``open_to_lock_owner4``; the lock owner
otherwise), and encoding LOCK4denied with the conflicting lock.  Ranges and
conflicts are ``locks.py``'s; stateids, grace and leases are ``StateManager``'s.
Blocking lock types (READW/WRITEW) are answered like their plain types: DENIED
at once, the client polls.
"""

from __future__ import annotations

from acmenfs.nfs4.compound import CompoundState, OpSpec
from acmenfs.nfs4.const import Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.locks import Lock, RangeError, is_write, lock_range
from acmenfs.nfs4.ops_client import OPAQUE_LIMIT, current_client, resolve_stateid
from acmenfs.nfs4.ops_open import seqid_op
from acmenfs.nfs4.state import LockState, OpenState
from acmenfs.nfs4.xdr4 import U32, U64, decode_stateid, encode_opaque
from acmenfs.oncrpc.xdr import Unpacker

S = Nfs4Stat


def encode_denied(conflict: Lock) -> bytes:
    """LOCK4denied: offset, length, locktype, lock_owner4 of the conflicting lock."""
    owner = conflict.owner
    return (U64.pack(conflict.start) + U64.pack(conflict.length) + U32.pack(conflict.locktype)
            + U64.pack(owner.client.clientid) + encode_opaque(owner.owner))


def _range(offset: int, length: int) -> tuple[int, int]:
    try:
        return lock_range(offset, length)
    except RangeError as exc:
        raise Nfs4Error(S.INVAL, str(exc)) from exc


def _locktype(value: int) -> bool:
    if not 1 <= value <= 4:
        raise Nfs4Error(S.INVAL, f"nfs_lock_type4 {value}")
    return is_write(value)


def _lock_file_key(cs: CompoundState) -> tuple:
    """The current fh must be a regular file of an export: ISDIR for a directory, INVAL else."""
    scope = cs.require_file()
    if scope.node.is_dir:
        raise Nfs4Error(S.ISDIR, "byte-range lock on a directory")
    if not scope.node.is_reg:
        raise Nfs4Error(S.INVAL, "byte-range lock on a special file")
    return cs.file_key()


def _take(cs: CompoundState, lock_state: LockState, write: bool, start: int, end: int) -> bytes:
    state = cs.server.state
    try:
        stateid = state.lock(lock_state, write, start, end)
    except Nfs4Error as exc:
        if exc.status == S.DENIED:
            exc.body = encode_denied(exc.conflict)
        raise
    cs.current_stateid = stateid
    return stateid


def op_lock(cs: CompoundState, args: Unpacker) -> bytes:
    locktype = args.unpack_uint()
    reclaim = args.unpack_bool()
    offset = args.unpack_uhyper()
    length = args.unpack_uhyper()
    new_owner = args.unpack_bool()
    if new_owner:
        open_seqid = args.unpack_uint()
        open_sid = resolve_stateid(cs, decode_stateid(args))
        lock_seqid = args.unpack_uint()
        clientid = args.unpack_uhyper()
        owner_name = args.unpack_opaque(OPAQUE_LIMIT)
    else:
        lock_sid = resolve_stateid(cs, decode_stateid(args))
        lock_seqid = args.unpack_uint()
    key = _lock_file_key(cs)
    state = cs.server.state
    minor = cs.minorversion
    if not new_owner:
        lock_state = state.find_state(lock_sid, key, LockState, check_seqid=False, minorversion=minor)

        def run_existing() -> bytes:
            state.check_stateid_seqid(lock_state, lock_sid)
            write = _locktype(locktype)
            start, end = _range(offset, length)
            state.check_grace(lock_state.client, reclaim)
            return _take(cs, lock_state, write, start, end)
        return seqid_op(cs, lock_state.owner, lock_seqid, "LOCK", run_existing)

    open_state = state.find_state(open_sid, key, OpenState, check_seqid=False, minorversion=minor)
    client = open_state.client
    if minor == 0 and clientid != client.clientid:
        raise Nfs4Error(S.STALE_CLIENTID, "lock owner's clientid is not the open's")

    def run_new() -> bytes:
        state.check_stateid_seqid(open_state, open_sid)
        write = _locktype(locktype)
        start, end = _range(offset, length)
        state.check_grace(client, reclaim)
        existing = client.lock_owners.get(owner_name)
        if minor == 0 and existing is not None and key in existing.states:
            raise Nfs4Error(S.BAD_SEQID, "lock owner already has a stateid for this file")
        lock_owner = state.lock_owner(client, owner_name)
        lock_state = state.lock_state_for(lock_owner, open_state)
        try:
            body = _take(cs, lock_state, write, start, end)
        except Nfs4Error:
            state.discard_lock_state(lock_state)
            raise
        state.record_reply(lock_owner, lock_seqid, "LOCK", S.OK, body)
        return body
    return seqid_op(cs, open_state.owner, open_seqid, "LOCK", run_new)


def op_lockt(cs: CompoundState, args: Unpacker) -> bytes:
    locktype = args.unpack_uint()
    offset = args.unpack_uhyper()
    length = args.unpack_uhyper()
    clientid = args.unpack_uhyper()
    owner_name = args.unpack_opaque(OPAQUE_LIMIT)
    write = _locktype(locktype)
    start, end = _range(offset, length)
    key = _lock_file_key(cs)
    state = cs.server.state
    with state.mutex:
        client = current_client(cs) if cs.minorversion >= 1 else state.client_for(clientid)
        if state.grace.active():
            raise Nfs4Error(S.GRACE, "grace period")
        owner = client.lock_owners.get(owner_name) or object()
        try:
            state.lockt(key, owner, start, end, write)
        except Nfs4Error as exc:
            if exc.status == S.DENIED:
                exc.body = encode_denied(exc.conflict)
            raise
    return b""


def op_locku(cs: CompoundState, args: Unpacker) -> bytes:
    locktype = args.unpack_uint()
    seqid = args.unpack_uint()
    stateid = resolve_stateid(cs, decode_stateid(args))
    offset = args.unpack_uhyper()
    length = args.unpack_uhyper()
    key = _lock_file_key(cs)
    state = cs.server.state
    lock_state = state.find_state(stateid, key, LockState, check_seqid=False,
                                  minorversion=cs.minorversion)

    def run() -> bytes:
        state.check_stateid_seqid(lock_state, stateid)
        _locktype(locktype)
        start, end = _range(offset, length)
        answer = state.locku(lock_state, start, end)
        cs.current_stateid = answer
        return answer
    return seqid_op(cs, lock_state.owner, seqid, "LOCKU", run)


OPS = {
    Op.LOCK: OpSpec("LOCK", op_lock),
    Op.LOCKT: OpSpec("LOCKT", op_lockt),
    Op.LOCKU: OpSpec("LOCKU", op_locku),
}
