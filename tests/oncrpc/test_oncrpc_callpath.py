"""Tests of the fast call path: header parsing, credentials, call objects, reply header, DRC keys.

Owns checking, with bytes only, that the per-call shortcuts (one-struct header
parse, credential cache keyed by raw bytes, one ``PendingCall`` per call that is
also its context, precomputed success header, tuple ``RequestKey``) give exactly
what the straightforward decoding gives. The reference decoder below is the
plain Unpacker walk of RFC 5531's ``call_body``. Must not assert on timing.
"""

from __future__ import annotations

import array
import os
import struct
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import CallContext, FileRegion, PendingCall, Procedure, Program, RpcDispatcher
from acmenfs.oncrpc.drc import DrcStatus, DuplicateRequestCache, RequestKey, make_request_key
from acmenfs.oncrpc.rpc import AuthFlavor, XdrError
from acmenfs.oncrpc.xdr import Unpacker

CLIENT = ("192.0.2.7", 801)
PROG, VERS = 0x20000077, 1


def reference_header(record: bytes) -> tuple:
    """The call header decoded field by field with an Unpacker (the specification's way)."""
    unpacker = Unpacker(record)
    xid, mtype, rpcvers, prog, vers, proc, cred_flavor = (unpacker.unpack_uint() for _ in range(7))
    if mtype != 0:
        raise XdrError("not a call")
    cred_body = bytes(unpacker.unpack_opaque_view(rpc.MAX_AUTH_BYTES))
    unpacker.unpack_uint()  # verifier flavor
    unpacker.unpack_opaque_view(rpc.MAX_AUTH_BYTES)
    return xid, rpcvers, prog, vers, proc, cred_flavor, cred_body, unpacker.offset


def fast_header(record: bytes) -> tuple:
    xid, rpcvers, prog, vers, proc, cred_flavor, cred_end, args_offset = rpc.parse_call_header(record)
    return xid, rpcvers, prog, vers, proc, cred_flavor, record[32:cred_end], args_offset


def outcome(decode, record: bytes):
    try:
        return decode(record)
    except XdrError:
        return "XdrError"


call_records = st.builds(
    lambda xid, proc, flavor, cred, verf, args: (
        struct.pack(">6I", xid, 0, 2, PROG, VERS, proc) + struct.pack(">II", flavor, len(cred)) + cred
        + b"\0" * (-len(cred) % 4) + struct.pack(">II", 0, len(verf)) + verf + b"\0" * (-len(verf) % 4) + args),
    st.integers(0, 2**32 - 1), st.integers(0, 30), st.sampled_from([0, 1, 6]),
    st.binary(max_size=60), st.binary(max_size=20), st.binary(max_size=20))


@settings(max_examples=400, deadline=None)
@given(record=call_records, cut=st.integers(0, 200), position=st.integers(0, 200), word=st.integers(0, 2**32 - 1))
def test_header_parse_agrees_with_the_reference_on_damaged_records(record, cut, position, word):
    damaged = bytearray(record)
    if position + 4 <= len(damaged):
        damaged[position:position + 4] = struct.pack(">I", word)  # e.g. a forged length
    damaged = bytes(damaged[:len(damaged) - cut % (len(damaged) + 1)])
    for candidate in (record, damaged):
        assert outcome(fast_header, candidate) == outcome(reference_header, candidate)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=120))
def test_header_parse_agrees_with_the_reference_on_random_bytes(raw):
    assert outcome(fast_header, raw) == outcome(reference_header, raw)


def test_forged_credential_and_verifier_lengths_are_refused():
    head = struct.pack(">6I", 1, 0, 2, PROG, VERS, 0)
    with pytest.raises(XdrError, match="credential of 401 bytes"):
        rpc.parse_call_header(head + struct.pack(">II", 1, 401) + bytes(500))
    with pytest.raises(XdrError, match="verifier of 4294967295 bytes"):
        rpc.parse_call_header(head + struct.pack(">IIII", 0, 0, 0, 0xFFFFFFFF))
    with pytest.raises(XdrError, match="truncated"):
        rpc.parse_call_header(head + struct.pack(">IIII", 0, 0, 0, 8) + b"1234")


def test_decode_call_header_keeps_its_fields():
    cred = rpc.encode_auth_sys(5, 6, (7,), "m")
    record = rpc.encode_call(0xABC, PROG, VERS, 3, b"ARGS", AuthFlavor.SYS, cred)
    header = rpc.decode_call_header(record)
    assert (header.xid, header.rpcvers, header.prog, header.vers, header.proc) == (0xABC, 2, PROG, VERS, 3)
    assert (header.cred_flavor, bytes(header.cred_body), header.verf_flavor) == (AuthFlavor.SYS, cred, 0)
    assert record[header.args_offset:] == b"ARGS"
    assert rpc.credential_of(header) == rpc.Credential(AuthFlavor.SYS, 5, 6, (7,), "m")


def test_auth_sys_cache_answers_by_raw_bytes_from_any_buffer_type():
    body = rpc.encode_auth_sys(1234, 55, (1, 2, 3), "cache-host")
    first = rpc.credential_from(AuthFlavor.SYS, body)
    assert first == rpc.Credential(AuthFlavor.SYS, 1234, 55, (1, 2, 3), "cache-host")
    assert rpc.credential_from(AuthFlavor.SYS, memoryview(body)) is first
    assert rpc.credential_from(AuthFlavor.SYS, bytearray(body)) is first
    assert rpc.credential_from(AuthFlavor.NONE, b"") is rpc.ANONYMOUS
    with pytest.raises(rpc.AuthError) as info:
        rpc.credential_from(AuthFlavor.SYS, body + b"\0\0\0\0")  # trailing garbage
    assert info.value.stat == rpc.AuthStat.BADCRED


def test_success_header_bytes():
    assert rpc.encode_success_header(0x01020304) == struct.pack(">6I", 0x01020304, 1, 0, 0, 0, 0)


def test_unpacker_still_casts_views_of_other_formats():
    words = array.array("I", [0, 0])
    unpacker = Unpacker(memoryview(words))
    assert unpacker.view.format == "B" and unpacker.end == 8
    assert Unpacker(array.array("B", [0, 0, 0, 9])).unpack_uint() == 9
    assert Unpacker(bytearray(b"\0\0\0\x07"), 0).unpack_uint() == 7


# -- dispatcher: one object per call, reply parts ------------------------------


class Recorder:
    """Procedures that return each kind of reply body and remember their context."""

    def __init__(self, region_file) -> None:
        self.region_file = region_file
        self.contexts: list = []

    def program(self) -> Program:
        return Program(PROG, VERS, "RECORDER", {
            1: Procedure("BYTES", self.body_bytes),
            2: Procedure("PARTS", self.body_parts),
            3: Procedure("CACHED_PARTS", self.body_parts, cached=True),
            4: Procedure("CACHED_VIEW", self.body_view, cached=True),
        })

    def body_bytes(self, ctx, args):
        self.contexts.append(ctx)
        return b"body" + args.unpack_fopaque(args.remaining())

    def body_parts(self, ctx, args):
        return [b"a", memoryview(b"bc"), FileRegion(self.region_file, 2, 3)]

    def body_view(self, ctx, args):
        return memoryview(b"view")


@pytest.fixture
def recorder():
    with tempfile.TemporaryFile() as region_file:
        region_file.write(b"0123456789")
        region_file.flush()
        yield Recorder(region_file)


def join(parts) -> bytes:
    return b"".join(p.read() if isinstance(p, FileRegion) else bytes(p) for p in parts)


def test_pending_call_is_its_own_context(recorder):
    dispatcher = RpcDispatcher([recorder.program()])
    cred = rpc.encode_auth_sys(10, 20, (), "ctx-host")
    pending = dispatcher.begin(rpc.encode_call(77, PROG, VERS, 1, b"XY\0\0", AuthFlavor.SYS, cred), CLIENT, "udp")
    assert isinstance(pending, PendingCall) and isinstance(pending, CallContext)
    assert pending.context is pending
    parts = dispatcher.run_sync(pending)
    ctx = recorder.contexts[-1]
    assert (ctx.xid, ctx.prog, ctx.vers, ctx.proc, ctx.client, ctx.transport) == (77, PROG, VERS, 1, CLIENT, "udp")
    assert (ctx.cred.uid, ctx.cred.gid, ctx.cred.machine) == (10, 20, "ctx-host")
    assert join(parts) == rpc.encode_success_header(77) + b"bodyXY\0\0"
    assert "xid=0x4d" in repr(ctx)


@pytest.mark.parametrize("record_type", [bytes, bytearray, memoryview])
def test_records_of_every_buffer_type_give_the_same_reply(recorder, record_type):
    dispatcher = RpcDispatcher([recorder.program()])
    record = rpc.encode_call(5, PROG, VERS, 1, b"1234")
    parts = dispatcher.run_sync(dispatcher.begin(record_type(record), CLIENT, "tcp"))
    assert join(parts) == rpc.encode_success_header(5) + b"body1234"


def test_sequence_body_keeps_its_parts_after_the_header(recorder):
    dispatcher = RpcDispatcher([recorder.program()])
    parts = dispatcher.run_sync(dispatcher.begin(rpc.encode_call(6, PROG, VERS, 2), CLIENT, "tcp"))
    assert parts[0] == rpc.encode_success_header(6)
    assert isinstance(parts[-1], FileRegion)
    assert join(parts) == rpc.encode_success_header(6) + b"abc234"


@pytest.mark.parametrize("proc, body", [(3, b"abc234"), (4, b"view")])
def test_cached_replies_are_whole_bytes_and_replayed_identically(recorder, proc, body):
    dispatcher = RpcDispatcher([recorder.program()], drc=DuplicateRequestCache(max_entries=8))
    record = rpc.encode_call(9, PROG, VERS, proc, b"args")
    first = dispatcher.run_sync(dispatcher.begin(record, CLIENT, "tcp"))
    assert first == [rpc.encode_success_header(9) + body]
    assert dispatcher.begin(record, CLIENT, "tcp") == first
    assert dispatcher.counters()["drc_replays"] == 1


# -- DRC keys -------------------------------------------------------------------


def test_request_key_fields_equality_and_repr():
    args = b"\0\0\0\x03abc\0" + bytes(300)
    key = make_request_key(42, CLIENT, 100003, 3, 8, memoryview(args))
    assert (key.xid, key.client, key.prog, key.vers, key.proc, key.arg_length) == (42, CLIENT, 100003, 3, 8, 308)
    assert key.identity == (42, CLIENT)
    assert key.fingerprint == (100003, 3, 8, 308, key.checksum)
    assert key == RequestKey(42, CLIENT, 100003, 3, 8, 308, key.checksum)
    assert hash(key) == hash(RequestKey(42, CLIENT, 100003, 3, 8, 308, key.checksum))
    assert key != make_request_key(43, CLIENT, 100003, 3, 8, args)
    assert repr(key).startswith("RequestKey(xid=42, client=('192.0.2.7', 801), prog=100003")
    with pytest.raises(AttributeError):
        key.xid = 1


def test_hand_built_request_key_works_with_the_cache():
    cache = DuplicateRequestCache(max_entries=4)
    status, token = cache.check(RequestKey(1, CLIENT, 2, 3, 4, 5, 6))
    assert status is DrcStatus.NEW
    cache.done(token, b"reply")
    assert cache.check(RequestKey(1, CLIENT, 2, 3, 4, 5, 6)) == (DrcStatus.DONE, b"reply")
    status, other = cache.check(RequestKey(1, CLIENT, 2, 3, 4, 5, 7))  # other checksum: reused xid
    assert status is DrcStatus.NEW
    cache.drop(other)
    assert cache.stats().payload_misses == 1

def test_write_sized_arguments_are_keyed_without_copying_the_record(recorder):
    dispatcher = RpcDispatcher([recorder.program()], drc=DuplicateRequestCache(max_entries=8))
    payload = os.urandom(60000)
    record = rpc.encode_call(11, PROG, VERS, 4, payload)
    pending = dispatcher.begin(record, CLIENT, "tcp")
    assert pending.drc_token is not None
    assert pending.record is record  # the record travels as received
    dispatcher.abandon(pending)
    assert pending.drc_token is None
    assert isinstance(dispatcher.begin(record, CLIENT, "tcp"), PendingCall)  # dropped entry: runs again


def test_call_here_runs_inline_first_then_the_fallback_and_refuses_async_procedures():
    from acmenfs.oncrpc.dispatch import RunInPool

    ran = []

    def inline(ctx, args):
        ran.append("inline")
        raise RunInPool

    def fallback(ctx, args):
        ran.append("fallback")
        return b"\0\0\0\7"

    async def later(ctx, args):
        return b""

    dispatcher = RpcDispatcher([Program(0x20000077, 1, "T", {
        1: Procedure("HYBRID", inline, fallback=fallback), 2: Procedure("ASYNC", later)})])
    reply = b"".join(bytes(p) for p in dispatcher.call_here(rpc.encode_call(9, 0x20000077, 1, 1, b""), ("h", 1)))
    assert ran == ["inline", "fallback"] and reply.endswith(b"\0\0\0\7")
    with pytest.raises(TypeError, match="async"):
        dispatcher.call_here(rpc.encode_call(10, 0x20000077, 1, 2, b""), ("h", 1))
