"""NFSv4 client ID, session and stateid-housekeeping operations: XDR in, XDR out.

SETCLIENTID, SETCLIENTID_CONFIRM, RENEW, RELEASE_LOCKOWNER (4.0; RFC 7530 §16);
EXCHANGE_ID, CREATE_SESSION, DESTROY_SESSION, SEQUENCE, DESTROY_CLIENTID,
RECLAIM_COMPLETE, BIND_CONN_TO_SESSION, TEST_STATEID, FREE_STATEID, BACKCHANNEL_CTL and SET_SSV (accepted / refused: no backchannel,
no SP4_SSV) (4.1; RFC 8881 §18).
Each handler decodes its arguments, calls ``StateManager`` / ``Sessions`` and encodes
the resok body; the rules themselves live in state.py and sessions.py.
"""

from __future__ import annotations

import socket
import struct
import zlib

from acmenfs.nfs4.compound import CompoundState, OpSpec
from acmenfs.nfs4.const import STATEID_SIZE, Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.sessions import ChannelAttrs, Session
from acmenfs.nfs4.xdr4 import U32, U64, decode_stateid, encode_opaque
from acmenfs.oncrpc.xdr import Unpacker, XdrError

S = Nfs4Stat
OPAQUE_LIMIT = 1024
SP4_NONE, SP4_MACH_CRED, SP4_SSV = 0, 1, 2
CDFC4_FORE, CDFC4_BACK, CDFC4_FORE_OR_BOTH, CDFC4_BACK_OR_BOTH = 1, 2, 3, 7
CDFS4_FORE = 1
CHANNEL = struct.Struct(">6I")
SERVER_MAJOR = socket.gethostname().encode()[:OPAQUE_LIMIT] or b"acmenfs"
IMPL_DOMAIN, IMPL_NAME = b"acmenfs.example", b"acmenfs"


def principal_of(cs: CompoundState) -> tuple:
    """Who owns a client ID: the AUTH_SYS flavor, uid and gid of the call."""
    cred = cs.ctx.cred
    return (int(cred.flavor), cred.uid, cred.gid)


def current_client(cs: CompoundState):
    """The client a 4.1 COMPOUND's SEQUENCE named (its lease is live)."""
    if cs.session is None:
        raise Nfs4Error(S.OP_NOT_IN_SESSION, "needs SEQUENCE")
    return cs.session.client


# ----- 4.0 ------------------------------------------------------------------------------------
def op_setclientid(cs: CompoundState, args: Unpacker) -> bytes:
    verifier = args.unpack_fopaque(8)
    owner = args.unpack_opaque(OPAQUE_LIMIT)
    args.unpack_uint()                       # cb_program
    args.unpack_string(1024)                 # r_netid
    args.unpack_string(1024)                 # r_addr
    args.unpack_uint()                       # callback_ident
    try:
        clientid, confirm = cs.server.state.setclientid(owner, verifier, principal_of(cs))
    except Nfs4Error as exc:
        if exc.status == S.CLID_INUSE:        # clientaddr4 of the holder: we do not track it
            exc.body = encode_opaque(b"tcp") + encode_opaque(b"")
        raise
    return U64.pack(clientid) + confirm


def op_setclientid_confirm(cs: CompoundState, args: Unpacker) -> bytes:
    clientid = args.unpack_uhyper()
    confirm = args.unpack_fopaque(8)
    cs.server.state.setclientid_confirm(clientid, confirm, principal_of(cs))
    return b""


def op_renew(cs: CompoundState, args: Unpacker) -> bytes:
    cs.server.state.renew(args.unpack_uhyper())
    return b""


def op_release_lockowner(cs: CompoundState, args: Unpacker) -> bytes:
    clientid = args.unpack_uhyper()
    owner = args.unpack_opaque(OPAQUE_LIMIT)
    cs.server.state.release_lockowner(clientid, owner)
    return b""


# ----- 4.1 client ID and sessions ---------------------------------------------------------------
def _skip_state_protect(args: Unpacker) -> int:
    how = args.unpack_uint()
    if how == SP4_MACH_CRED:
        args.unpack_array(args.unpack_uint, 8)
        args.unpack_array(args.unpack_uint, 8)
    elif how == SP4_SSV:
        args.unpack_array(args.unpack_uint, 8)
        args.unpack_array(args.unpack_uint, 8)
        args.unpack_array(lambda: args.unpack_opaque(1024), 16)
        args.unpack_array(lambda: args.unpack_opaque(1024), 16)
        args.unpack_uint()
        args.unpack_uint()
    elif how != SP4_NONE:
        raise XdrError(f"state_protect_how4 {how}")
    return how


def _skip_impl_id(args: Unpacker) -> None:
    def one() -> None:
        args.unpack_opaque(1024)
        args.unpack_opaque(1024)
        args.unpack_hyper()
        args.unpack_uint()
    args.unpack_array(one, 1)


def op_exchange_id(cs: CompoundState, args: Unpacker) -> bytes:
    verifier = args.unpack_fopaque(8)
    owner = args.unpack_opaque(OPAQUE_LIMIT)
    flags = args.unpack_uint()
    how = _skip_state_protect(args)
    _skip_impl_id(args)
    if not owner:
        raise Nfs4Error(S.INVAL, "empty co_ownerid")
    if how != SP4_NONE:
        raise Nfs4Error(S.NOTSUPP, "only SP4_NONE state protection")
    client, sequence, eir_flags = cs.server.state.sessions.exchange_id(
        owner, verifier, principal_of(cs), flags, cs.minorversion)
    impl = (U32.pack(1) + encode_opaque(IMPL_DOMAIN) + encode_opaque(IMPL_NAME)
            + struct.pack(">qI", 0, 0))
    return (U64.pack(client.clientid) + U32.pack(sequence) + U32.pack(eir_flags) + U32.pack(SP4_NONE)
            + U64.pack(0) + encode_opaque(SERVER_MAJOR) + encode_opaque(SERVER_MAJOR) + impl)


def _decode_channel(args: Unpacker) -> ChannelAttrs:
    values = [args.unpack_uint() for _ in range(6)]
    args.unpack_array(args.unpack_uint, 1)          # ca_rdma_ird
    return ChannelAttrs(*values)


def _encode_channel(attrs: ChannelAttrs) -> bytes:
    return CHANNEL.pack(attrs.headerpadsize, attrs.maxrequestsize, attrs.maxresponsesize,
                        attrs.maxresponsesize_cached, attrs.maxoperations, attrs.maxrequests) + U32.pack(0)


def _skip_cb_sec(args: Unpacker) -> None:
    def one() -> None:
        flavor = args.unpack_uint()
        if flavor == 1:                              # AUTH_SYS authsys_parms
            args.unpack_uint()
            args.unpack_opaque(255)
            args.unpack_uint()
            args.unpack_uint()
            args.unpack_array(args.unpack_uint, 16)
        elif flavor == 6:                            # RPCSEC_GSS gss_cb_handles4
            args.unpack_uint()
            args.unpack_opaque(1024)
            args.unpack_opaque(1024)
        elif flavor != 0:
            raise XdrError(f"callback security flavor {flavor}")
    args.unpack_array(one, 16)


def op_create_session(cs: CompoundState, args: Unpacker) -> bytes:
    clientid = args.unpack_uhyper()
    sequence = args.unpack_uint()
    flags = args.unpack_uint()
    fore = _decode_channel(args)
    back = _decode_channel(args)
    args.unpack_uint()                               # csa_cb_program
    _skip_cb_sec(args)

    def encode(session: Session, granted_flags: int) -> bytes:
        return (session.sessionid + U32.pack(sequence) + U32.pack(granted_flags)
                + _encode_channel(session.fore) + _encode_channel(session.back))

    return cs.server.state.sessions.create_session(clientid, sequence, principal_of(cs), flags,
                                                   fore, back, encode)


def op_destroy_session(cs: CompoundState, args: Unpacker) -> bytes:
    cs.server.state.sessions.destroy_session(args.unpack_fopaque(16))
    return b""


_SEQUENCE_ARGS = struct.Struct(">16sIIII")   # sessionid, seqid, slotid, highest_slotid, cachethis
_SEQUENCE_RES = struct.Struct(">16sIIIII")   # sessionid, seqid, slotid, highest, target, flags


def op_sequence(cs: CompoundState, args: Unpacker) -> bytes:
    start = args.offset
    if start + _SEQUENCE_ARGS.size > args.end:
        raise XdrError("truncated SEQUENCE4args")
    digest = zlib.crc32(args.view[max(start - 4, 0):args.end])   # this op and the rest
    sessionid, seqid, slotid, highest, cachethis = _SEQUENCE_ARGS.unpack_from(args.view, start)
    if cachethis > 1:   # sa_cachethis: every reply is kept, but READ data only if asked (compound.py)
        raise XdrError(f"bad boolean value {cachethis}")
    cs.cachethis = cachethis == 1
    args.offset = start + _SEQUENCE_ARGS.size
    result = cs.server.state.sessions.sequence(sessionid, seqid, slotid, highest, digest, cs.op_count, args.end)
    cs.session, cs.slot, cs.clientid = result.session, result.slot, result.session.client.clientid
    return _SEQUENCE_RES.pack(sessionid, seqid, slotid, result.highest_slotid, result.target_highest_slotid,
                              result.status_flags)


def op_destroy_clientid(cs: CompoundState, args: Unpacker) -> bytes:
    cs.server.state.sessions.destroy_clientid(args.unpack_uhyper())
    return b""


def op_reclaim_complete(cs: CompoundState, args: Unpacker) -> bytes:
    one_fs = args.unpack_bool()
    if one_fs:
        cs.require_fh()
    cs.server.state.sessions.reclaim_complete(current_client(cs), one_fs)
    return b""


def op_bind_conn_to_session(cs: CompoundState, args: Unpacker) -> bytes:
    sessionid = args.unpack_fopaque(16)
    direction = args.unpack_uint()
    args.unpack_bool()                               # use RDMA mode: never
    if direction not in (CDFC4_FORE, CDFC4_BACK, CDFC4_FORE_OR_BOTH, CDFC4_BACK_OR_BOTH):
        raise Nfs4Error(S.INVAL, f"channel_dir_from_client4 {direction}")
    if direction == CDFC4_BACK:
        raise Nfs4Error(S.INVAL, "no backchannel on this server")
    session = cs.server.state.sessions.bind_conn(sessionid)
    return session.sessionid + U32.pack(CDFS4_FORE) + U32.pack(0)


def op_backchannel_ctl(cs: CompoundState, args: Unpacker) -> bytes:
    """No backchannel is ever used: the new program and security are accepted and ignored."""
    args.unpack_uint()                               # bca_cb_program
    _skip_cb_sec(args)
    current_client(cs)
    return b""


def op_set_ssv(cs: CompoundState, args: Unpacker) -> bytes:
    args.unpack_opaque(1024)                         # ssa_ssv
    args.unpack_opaque(1024)                         # ssa_digest
    current_client(cs)
    raise Nfs4Error(S.INVAL, "client ID not established with SP4_SSV")


# ----- TEST_STATEID, FREE_STATEID -----------------------------------------------------------------
def op_test_stateid(cs: CompoundState, args: Unpacker) -> bytes:
    stateids = args.unpack_array(lambda: decode_stateid(args), 1024)
    client = current_client(cs)
    codes = [cs.server.state.test_stateid(client, sid) for sid in stateids]
    return U32.pack(len(codes)) + b"".join(U32.pack(code) for code in codes)


def op_free_stateid(cs: CompoundState, args: Unpacker) -> bytes:
    stateid = resolve_stateid(cs, decode_stateid(args))
    cs.server.state.free_stateid(current_client(cs), stateid)
    return b""


CURRENT_STATEID = U32.pack(1) + b"\0" * 12


def resolve_stateid(cs: CompoundState, stateid: bytes) -> bytes:
    """4.1 special "current stateid" (seqid 1, other zero) -> the COMPOUND's current stateid."""
    if cs.minorversion >= 1 and stateid == CURRENT_STATEID:
        if cs.current_stateid is None:
            raise Nfs4Error(S.BAD_STATEID, "no current stateid")
        return cs.current_stateid
    return stateid


assert STATEID_SIZE == len(CURRENT_STATEID)

OPS = {
    Op.SETCLIENTID: OpSpec("SETCLIENTID", op_setclientid, 0, 0),
    Op.SETCLIENTID_CONFIRM: OpSpec("SETCLIENTID_CONFIRM", op_setclientid_confirm, 0, 0),
    Op.RENEW: OpSpec("RENEW", op_renew, 0, 0),
    Op.RELEASE_LOCKOWNER: OpSpec("RELEASE_LOCKOWNER", op_release_lockowner, 0, 0),
    Op.EXCHANGE_ID: OpSpec("EXCHANGE_ID", op_exchange_id, 1),
    Op.CREATE_SESSION: OpSpec("CREATE_SESSION", op_create_session, 1),
    Op.DESTROY_SESSION: OpSpec("DESTROY_SESSION", op_destroy_session, 1),
    Op.SEQUENCE: OpSpec("SEQUENCE", op_sequence, 1),
    Op.DESTROY_CLIENTID: OpSpec("DESTROY_CLIENTID", op_destroy_clientid, 1),
    Op.RECLAIM_COMPLETE: OpSpec("RECLAIM_COMPLETE", op_reclaim_complete, 1),
    Op.BIND_CONN_TO_SESSION: OpSpec("BIND_CONN_TO_SESSION", op_bind_conn_to_session, 1),
    Op.TEST_STATEID: OpSpec("TEST_STATEID", op_test_stateid, 1),
    Op.BACKCHANNEL_CTL: OpSpec("BACKCHANNEL_CTL", op_backchannel_ctl, 1),
    Op.SET_SSV: OpSpec("SET_SSV", op_set_ssv, 1),
    Op.FREE_STATEID: OpSpec("FREE_STATEID", op_free_stateid, 1),
}
