"""NFSv4 OPEN, OPEN_CONFIRM, CLOSE, OPEN_DOWNGRADE (RFC 7530 §16.16-16.19, RFC 8881 §18.16-18.20),
and DELEGRETURN / DELEGPURGE (answered BAD_STATEID / NOTSUPP: no delegations).

Owns decoding and encoding these operations and running them through the open
owner's seqid (``seqid_op``: a 4.0 retransmission gets the cached reply, RFC 7530
§9.1.7).  Files are found or created by engineer A's ``open_lookup`` /
``open_create``; share reservations, stateids and grace rules are
``StateManager``'s.  Claims: CLAIM_NULL, CLAIM_PREVIOUS (reclaim), CLAIM_FH (4.1);
the delegation claims answer NOTSUPP (no delegation is ever granted: every OPEN
answers OPEN_DELEGATE_NONE, or NONE_EXT to a 4.1 client that stated a wish).
"""

from __future__ import annotations

from typing import Callable

from acmenfs.nfs4.attrs import decode_fattr4_setattrs, encode_change_info
from acmenfs.nfs4.compound import CompoundState, OpSpec
from acmenfs.nfs4.const import Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.ops_client import OPAQUE_LIMIT, current_client, resolve_stateid
from acmenfs.nfs4.state import OpenState, Owner
from acmenfs.nfs4.xdr4 import U32, decode_component, decode_stateid, encode_bitmap
from acmenfs.oncrpc.xdr import Unpacker, XdrError

S = Nfs4Stat
OPEN4_NOCREATE, OPEN4_CREATE = 0, 1
CREATE_HOW = {0: "unchecked", 1: "guarded", 2: "exclusive", 3: "exclusive41"}
CLAIM_NULL, CLAIM_PREVIOUS, CLAIM_DELEGATE_CUR, CLAIM_DELEGATE_PREV = 0, 1, 2, 3
CLAIM_FH, CLAIM_DELEG_PREV_FH, CLAIM_DELEG_CUR_FH = 4, 5, 6
OPEN4_RESULT_CONFIRM = 0x2
OPEN4_RESULT_LOCKTYPE_POSIX = 0x4
OPEN_DELEGATE_NONE, OPEN_DELEGATE_NONE_EXT = 0, 3
WND4_NOT_WANTED, WND4_RESOURCE = 0, 2
WANT_DELEG_MASK = 0xFF00
WANT_NO_DELEG, WANT_CANCEL = 0x0400, 0x0500
SHARE_ACCESS_MASK = 0x3 | WANT_DELEG_MASK | 0x30000


def seqid_op(cs: CompoundState, owner: Owner, seqid: int, op: str, run: Callable[[], bytes]) -> bytes:
    """Run an owner-sequenced op once: a 4.0 retransmission answers the cached reply.
    Serialised per owner (``owner.mutex``), never under the StateManager's mutex, so that
    file I/O (OPEN's lookup or create) does not hold up other clients; the state methods
    take that mutex themselves and re-check that the state they were given is still alive."""
    state = cs.server.state
    with owner.mutex:
        cached = state.check_seqid(owner, seqid, op)
        if cached is not None:
            status, body = cached
            if owner.last_fh is not None:
                cs.current_fh = owner.last_fh
            if status != S.OK:
                raise Nfs4Error(status, f"replay of {op}", body)
            return body
        try:
            body = run()
        except Exception as exc:   # noqa: BLE001 - every outcome is recorded for replay
            error = exc if isinstance(exc, Nfs4Error) else Nfs4Error(status_for(exc), str(exc))
            state.record_reply(owner, seqid, op, error.status, error.body)
            if error is exc:
                raise
            raise error from exc
        state.record_reply(owner, seqid, op, S.OK, body, cs.current_fh if op == "OPEN" else None)
        return body


def check_share_args(access: int, deny: int, minor: int) -> None:
    if access & ~SHARE_ACCESS_MASK or not access & 3 or deny & ~3 or (minor == 0 and access & ~3):
        raise Nfs4Error(S.INVAL, f"share_access {access:#x} / share_deny {deny:#x}")


# ----- OPEN -----------------------------------------------------------------------------------
def _decode_openhow(args: Unpacker, minor: int):
    opentype = args.unpack_uint()
    if opentype == OPEN4_NOCREATE:
        return None
    if opentype != OPEN4_CREATE:
        raise XdrError(f"opentype4 {opentype}")
    mode = args.unpack_uint()
    how = CREATE_HOW.get(mode)
    if how is None or (how == "exclusive41" and minor == 0):
        raise XdrError(f"createmode4 {mode}")
    verifier = b"\0" * 8
    attrs, bits = None, set()
    if how in ("exclusive", "exclusive41"):
        verifier = args.unpack_fopaque(8)
    if how != "exclusive":
        attrs, bits = decode_fattr4_setattrs(args, minor)
    return how, attrs, bits, verifier


def _decode_claim(args: Unpacker):
    claim = args.unpack_uint()
    if claim in (CLAIM_NULL, CLAIM_DELEGATE_PREV):
        return claim, decode_component(args)
    if claim == CLAIM_PREVIOUS:
        return claim, args.unpack_uint()
    if claim == CLAIM_DELEGATE_CUR:
        decode_stateid(args)
        return claim, decode_component(args)
    if claim == CLAIM_DELEG_CUR_FH:
        return claim, decode_stateid(args)
    if claim in (CLAIM_FH, CLAIM_DELEG_PREV_FH):
        return claim, None
    raise XdrError(f"open_claim_type4 {claim}")


def _dir_change(cs: CompoundState) -> bytes:
    scope = cs.scope()
    st = scope.backend.stat(scope.node) if scope is not None else None
    return encode_change_info(st, st)


def _require_regular(cs: CompoundState) -> None:
    scope = cs.require_file()
    if scope.node.is_dir:
        raise Nfs4Error(S.ISDIR, "OPEN of a directory")
    if not scope.node.is_reg:
        raise Nfs4Error(S.SYMLINK if cs.minorversion == 0 else S.WRONG_TYPE, "OPEN of a special file")


def op_open(cs: CompoundState, args: Unpacker) -> bytes:
    seqid = args.unpack_uint()
    access = args.unpack_uint()
    deny = args.unpack_uint()
    clientid = args.unpack_uhyper()
    owner_name = args.unpack_opaque(OPAQUE_LIMIT)
    openhow = _decode_openhow(args, cs.minorversion)
    claim, claim_arg = _decode_claim(args)
    cs.require_fh()
    state = cs.server.state
    if cs.minorversion >= 1:
        clientid = current_client(cs).clientid
    owner = state.open_owner(clientid, owner_name)
    run = lambda: _open(cs, owner, access, deny, openhow, claim, claim_arg)  # noqa: E731
    return seqid_op(cs, owner, seqid, "OPEN", run)


def _open(cs: CompoundState, owner, access: int, deny: int, openhow, claim: int, claim_arg) -> bytes:
    state = cs.server.state
    minor = cs.minorversion
    check_share_args(access, deny, minor)
    if claim in (CLAIM_DELEGATE_CUR, CLAIM_DELEGATE_PREV, CLAIM_DELEG_CUR_FH, CLAIM_DELEG_PREV_FH):
        raise Nfs4Error(S.NOTSUPP, "no delegations on this server")
    if claim == CLAIM_FH and minor == 0:
        raise Nfs4Error(S.BADXDR, "CLAIM_FH is 4.1")
    state.check_grace(owner.client, reclaim=claim == CLAIM_PREVIOUS)
    attrset = encode_bitmap(())
    created = False
    if claim == CLAIM_NULL:
        cs.scope(write=openhow is not None)                 # a directory of an export
        if openhow is not None:
            how, attrs, bits, verifier = openhow
            if attrs is None:
                from acmenfs.fs.backend import SetAttributes
                attrs = SetAttributes()
            fh, created, attrset = _helpers().open_create(cs, claim_arg, how, attrs, verifier, bits)
            cinfo = getattr(cs, "cinfo", None) or _dir_change(cs)
        else:
            cinfo = _dir_change(cs)
            fh = _helpers().open_lookup(cs, claim_arg)
        cs.current_fh = fh
    else:                                                   # CLAIM_PREVIOUS, CLAIM_FH
        if claim == CLAIM_PREVIOUS and claim_arg != OPEN_DELEGATE_NONE:
            raise Nfs4Error(S.RECLAIM_BAD, "no delegation was granted before the restart")
        if openhow is not None and claim == CLAIM_FH:
            raise Nfs4Error(S.INVAL, "CLAIM_FH cannot create")
        _require_regular(cs)
        cinfo = encode_change_info(None, None)
    if access & 2:
        cs.scope(write=True)                                # read-only export: ROFS
    if not created:
        _check_permission(cs, access)
    open_state: OpenState = state.open(owner, cs.file_key(), access & 3, deny)
    stateid = open_state.stateid()
    cs.current_stateid = stateid
    rflags = OPEN4_RESULT_LOCKTYPE_POSIX | (0 if owner.confirmed else OPEN4_RESULT_CONFIRM)
    return stateid + cinfo + U32.pack(rflags) + attrset + _delegation(access, minor)


def _check_permission(cs: CompoundState, access: int) -> None:
    """OPEN checks the mode bits for the access asked (the file's owner may always open it,
    as knfsd's owner override allows, so a client's own 0444 file can still be written)."""
    scope = cs.require_file()
    try:
        rwx, st = scope.backend.access(scope.node, scope.who)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    if scope.who.uid == st.st_uid:
        return
    if (access & 1 and not rwx & 4) or (access & 2 and not rwx & 2):
        raise Nfs4Error(S.ACCESS, "mode bits refuse this open")


def _delegation(access: int, minor: int) -> bytes:
    want = access & WANT_DELEG_MASK
    if minor == 0 or want == 0:
        return U32.pack(OPEN_DELEGATE_NONE)
    if want in (WANT_NO_DELEG, WANT_CANCEL):
        return U32.pack(OPEN_DELEGATE_NONE_EXT) + U32.pack(WND4_NOT_WANTED)
    return U32.pack(OPEN_DELEGATE_NONE_EXT) + U32.pack(WND4_RESOURCE) + U32.pack(0)


def _helpers():
    from acmenfs.nfs4 import ops_dir
    return ops_dir


# ----- OPEN_CONFIRM, CLOSE, OPEN_DOWNGRADE ----------------------------------------------------------
def _open_state(cs: CompoundState, stateid: bytes) -> OpenState:
    return cs.server.state.find_state(stateid, cs.file_key(), OpenState, check_seqid=False,
                                      minorversion=cs.minorversion)


def op_open_confirm(cs: CompoundState, args: Unpacker) -> bytes:
    stateid = decode_stateid(args)
    seqid = args.unpack_uint()
    state = cs.server.state
    open_state = _open_state(cs, stateid)

    def run() -> bytes:
        state.check_stateid_seqid(open_state, stateid)
        return state.open_confirm(open_state)
    return seqid_op(cs, open_state.owner, seqid, "OPEN_CONFIRM", run)


def _closed_by(cs: CompoundState, stateid: bytes, seqid: int) -> Owner | None:
    """4.0: the open owner whose last seqid-mutating op was the CLOSE of ``stateid`` with
    ``seqid`` -- a retransmitted CLOSE, whose state the first CLOSE freed, is answered from the
    owner's cached reply (RFC 7530 §9.1.7).  Only looked for after ``find_state`` refused."""
    state = cs.server.state
    other = bytes(stateid[4:])
    with state.mutex:
        for client in list(state.clients.values()):
            if client.minorversion:
                continue
            for owner in list(client.open_owners.values()):
                last = owner.last_reply
                if (owner.seqid == seqid and last is not None and last[0] == "CLOSE"
                        and last[1] == S.OK and last[2][4:] == other):
                    return owner
    return None


def op_close(cs: CompoundState, args: Unpacker) -> bytes:
    seqid = args.unpack_uint()
    stateid = resolve_stateid(cs, decode_stateid(args))
    state = cs.server.state
    try:
        open_state = _open_state(cs, stateid)
    except Nfs4Error as exc:
        owner = _closed_by(cs, stateid, seqid) if exc.status == S.BAD_STATEID and cs.minorversion == 0 else None
        if owner is None:
            raise
        return seqid_op(cs, owner, seqid, "CLOSE", lambda error=exc: _raise(error))

    def run() -> bytes:
        state.check_stateid_seqid(open_state, stateid)
        answer = state.close(open_state)
        cs.current_stateid = answer
        return answer
    return seqid_op(cs, open_state.owner, seqid, "CLOSE", run)


def _raise(exc: Exception) -> bytes:
    raise exc


def op_open_downgrade(cs: CompoundState, args: Unpacker) -> bytes:
    stateid = resolve_stateid(cs, decode_stateid(args))
    seqid = args.unpack_uint()
    access = args.unpack_uint()
    deny = args.unpack_uint()
    state = cs.server.state
    open_state = _open_state(cs, stateid)

    def run() -> bytes:
        state.check_stateid_seqid(open_state, stateid)
        check_share_args(access, deny, cs.minorversion)
        answer = state.open_downgrade(open_state, access & 3, deny)
        cs.current_stateid = answer
        return answer
    return seqid_op(cs, open_state.owner, seqid, "OPEN_DOWNGRADE", run)


def op_delegreturn(cs: CompoundState, args: Unpacker) -> bytes:
    """No delegation is ever granted, so no stateid can name one."""
    decode_stateid(args)
    cs.require_fh()
    raise Nfs4Error(S.BAD_STATEID, "no delegations on this server")


def op_delegpurge(cs: CompoundState, args: Unpacker) -> bytes:
    args.unpack_uhyper()
    raise Nfs4Error(S.NOTSUPP, "no CLAIM_DELEGATE_PREV: nothing to purge")


OPS = {
    Op.DELEGRETURN: OpSpec("DELEGRETURN", op_delegreturn),
    Op.DELEGPURGE: OpSpec("DELEGPURGE", op_delegpurge),
    Op.OPEN: OpSpec("OPEN", op_open),
    Op.OPEN_CONFIRM: OpSpec("OPEN_CONFIRM", op_open_confirm, 0, 0),
    Op.CLOSE: OpSpec("CLOSE", op_close),
    Op.OPEN_DOWNGRADE: OpSpec("OPEN_DOWNGRADE", op_open_downgrade),
}
