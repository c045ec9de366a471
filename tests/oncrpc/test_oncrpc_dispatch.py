"""Dispatch with bytes only: every accept/reject status, auth parsing, the DRC in front."""

from __future__ import annotations

import struct

import pytest

from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.client import RpcAcceptError, RpcDeniedError, parse_reply
from acmenfs.oncrpc.dispatch import PendingCall, RpcDispatcher
from acmenfs.oncrpc.drc import DuplicateRequestCache
from acmenfs.oncrpc.rpc import AcceptStat, AuthFlavor, AuthStat
from acmenfs.oncrpc.xdr import Unpacker

from rpc_test_service import TEST_PROG, TEST_VERS, EchoService

CLIENT = ("192.0.2.7", 801)


@pytest.fixture
def dispatcher():
    service = EchoService()
    d = RpcDispatcher([service.program()], drc=DuplicateRequestCache(max_entries=64))
    d.service = service
    return d


def run(dispatcher, message: bytes):
    outcome = dispatcher.begin(message, CLIENT, "tcp")
    if isinstance(outcome, PendingCall):
        assert not outcome.procedure.is_async
        outcome = dispatcher.run_sync(outcome)
    return None if outcome is None else b"".join(bytes(p) for p in outcome)


def call(proc, args=b"", xid=1, prog=TEST_PROG, vers=TEST_VERS, flavor=AuthFlavor.NONE, cred=b""):
    return rpc.encode_call(xid, prog, vers, proc, args, flavor, cred)


def test_null_call_succeeds_with_exact_reply_bytes(dispatcher):
    assert run(dispatcher, call(0, xid=0x1234)) == struct.pack(">6I", 0x1234, 1, 0, 0, 0, 0)


def test_auth_sys_credential_reaches_the_procedure(dispatcher):
    cred = rpc.encode_auth_sys(1000, 100, (4, 5), "host-a")
    reply = run(dispatcher, call(2, flavor=AuthFlavor.SYS, cred=cred))
    body = Unpacker(parse_reply(reply)[1])
    assert (body.unpack_uint(), body.unpack_uint(), body.unpack_uint()) == (AuthFlavor.SYS, 1000, 100)
    assert body.unpack_array(body.unpack_uint) == [4, 5]
    assert body.unpack_string() == "host-a"


def test_auth_none_is_the_anonymous_identity(dispatcher):
    body = Unpacker(parse_reply(run(dispatcher, call(2)))[1])
    assert (body.unpack_uint(), body.unpack_uint(), body.unpack_uint()) == (0, 65534, 65534)


@pytest.mark.parametrize("message, stat, mismatch", [
    (call(0, prog=TEST_PROG + 1), AcceptStat.PROG_UNAVAIL, None),
    (call(0, vers=9), AcceptStat.PROG_MISMATCH, (1, 1)),
    (call(99), AcceptStat.PROC_UNAVAIL, None),
    (call(1, args=b"\0\0\0\x09ab"), AcceptStat.GARBAGE_ARGS, None),
    (call(6), AcceptStat.GARBAGE_ARGS, None),
    (call(5), AcceptStat.SYSTEM_ERR, None),
])
def test_accept_errors(dispatcher, message, stat, mismatch):
    with pytest.raises(RpcAcceptError) as info:
        parse_reply(run(dispatcher, message))
    assert info.value.accept_stat == stat
    assert info.value.mismatch == mismatch


def test_rpc_version_other_than_two_is_rpc_mismatch(dispatcher):
    message = bytearray(call(0))
    message[8:12] = struct.pack(">I", 3)
    with pytest.raises(RpcDeniedError) as info:
        parse_reply(run(dispatcher, bytes(message)))
    assert info.value.reject_stat == rpc.RejectStat.RPC_MISMATCH
    assert info.value.mismatch == (2, 2)


@pytest.mark.parametrize("flavor, cred, stat", [
    (AuthFlavor.DH, b"\0" * 8, AuthStat.TOOWEAK),
    (AuthFlavor.RPCSEC_GSS, b"", AuthStat.TOOWEAK),
    (AuthFlavor.SYS, b"\0\0\0\0\0\0\0\x10short", AuthStat.BADCRED),
])
def test_other_flavors_and_bad_credentials_are_auth_errors(dispatcher, flavor, cred, stat):
    with pytest.raises(RpcDeniedError) as info:
        parse_reply(run(dispatcher, call(0, flavor=flavor, cred=cred)))
    assert info.value.auth_stat == stat


def test_undecodable_records(dispatcher):
    assert run(dispatcher, b"") is None
    assert run(dispatcher, b"\0\0\0\x01") is None
    reply_message = struct.pack(">6I", 5, 1, 0, 0, 0, 0)  # a REPLY sent to a server: ignored
    assert run(dispatcher, reply_message) is None
    truncated = call(0)[:30]
    with pytest.raises(RpcAcceptError) as info:
        parse_reply(run(dispatcher, truncated))
    assert info.value.accept_stat == AcceptStat.GARBAGE_ARGS
    assert dispatcher.counters()["garbage_calls"] == 4


def bump(amount: int, xid: int) -> bytes:
    return call(3, args=struct.pack(">I", amount), xid=xid)


def test_retransmitted_non_idempotent_call_is_answered_from_the_cache(dispatcher):
    first = run(dispatcher, bump(5, xid=77))
    again = run(dispatcher, bump(5, xid=77))
    assert first == again
    assert dispatcher.service.counter == 5  # ran once
    assert dispatcher.drc.stats().hits == 1


def test_reused_xid_with_other_arguments_is_not_replayed(dispatcher):
    run(dispatcher, bump(5, xid=77))
    reply = run(dispatcher, bump(6, xid=77))
    assert Unpacker(parse_reply(reply)[1]).unpack_uint() == 11
    assert dispatcher.drc.stats().payload_misses == 1


def test_duplicate_of_call_in_progress_is_dropped(dispatcher):
    pending = dispatcher.begin(bump(1, xid=9), CLIENT, "tcp")
    assert isinstance(pending, PendingCall)
    assert dispatcher.begin(bump(1, xid=9), CLIENT, "tcp") is None
    dispatcher.run_sync(pending)
    assert run(dispatcher, bump(1, xid=9)) is not None
    assert dispatcher.service.counter == 1


def test_failed_call_is_not_cached(dispatcher):
    def broken(ctx, args):
        raise OSError("disk on fire")
    program = dispatcher.programs()[0]
    program.procedures[3] = type(program.procedures[3])("BUMP", broken, cached=True)
    for _ in range(2):
        with pytest.raises(RpcAcceptError):
            parse_reply(run(dispatcher, bump(1, xid=10)))
    assert dispatcher.drc.stats().hits == 0
