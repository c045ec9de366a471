"""COMPOUND framing and errors, with raw bytes through the dispatcher (sans-IO): tag echo, minor
versions, stop at first error, OP_ILLEGAL / NOTSUPP, 4.1 session rules, limits, NULL, PROG_MISMATCH
range, GARBAGE_ARGS, the per-call DRC decision."""

from __future__ import annotations

import struct

from nfs4_core_helpers import (
    SEQUENCE_STUB_BODY, compound_args, savefh, getattr_, getfh, lookup, opaque, parse_compound, putfh,
    putrootfh, read, remove, u32, write,
)

OK, NOENT, NOFILEHANDLE, MINOR_VERS_MISMATCH, OP_ILLEGAL = 0, 2, 10020, 10021, 10044
NOTSUPP, RESOURCE, BADXDR, OP_NOT_IN_SESSION, SEQUENCE_POS = 10004, 10018, 10036, 10071, 10064
TOO_MANY_OPS, NOT_ONLY_OP, BADHANDLE = 10070, 10081, 10001


def test_null_procedure_answers_empty(v4):
    assert v4.body(b"", proc=0) == b""


def test_empty_compound_echoes_tag_and_is_ok(v4):
    body = v4.body(compound_args([], tag=b"hello"))
    assert body == u32(0) + opaque(b"hello") + u32(0)


def test_tag_is_echoed_byte_for_byte_with_results(v4):
    reply = v4.compound([putrootfh(), getfh()], tag=b"\xff\x00abc")
    assert reply.tag == b"\xff\x00abc" and reply.status == OK and [r.op for r in reply.results] == [24, 10]


def test_minor_versions_0_1_2_accepted_3_refused_without_results(v4):
    assert v4.compound([putrootfh()], minor=0).status == OK
    assert v4.compound([], minor=1).status == OK
    assert v4.compound([], minor=2).status == OK
    body = v4.body(compound_args([putrootfh()], minor=3, tag=b"t"))
    assert body == u32(MINOR_VERS_MISMATCH) + opaque(b"t") + u32(0)


def test_stops_at_first_error_and_compound_status_is_that_ops(v4):
    reply = v4.compound([putrootfh(), lookup("nonexistent"), getfh(), getfh()])
    assert reply.status == NOENT
    assert [(r.op, r.status) for r in reply.results] == [(24, OK), (15, NOENT)]


def test_op_without_current_fh_is_nofilehandle(v4):
    reply = v4.compound([getfh()])
    assert reply.status == NOFILEHANDLE and reply.results[0].op == 10


def test_unknown_and_out_of_range_ops_are_op_illegal(v4):
    for opnum in (0, 1, 2, 99, 10044, 40):     # 40 (BACKCHANNEL_CTL) is not a 4.0 op
        body = v4.body(compound_args([putrootfh(), u32(opnum)]))
        reply = parse_compound(body)
        assert [(r.op, r.status) for r in reply.results] == [(24, OK), (10044, OP_ILLEGAL)], opnum
        assert reply.status == OP_ILLEGAL


def test_42_op_in_41_is_illegal_and_obsolete_40_op_in_41_is_notsupp(v4):
    # SEQUENCE is B's; without it a 4.1 COMPOUND cannot get past the first op, so test the
    # pre-checks directly through the first position rules.
    reply = v4.compound([u32(35) + b"\0" * 8], minor=1)          # SETCLIENTID in 4.1
    assert reply.results[0].status == NOTSUPP
    reply = v4.compound([u32(69)], minor=1)                       # SEEK in 4.1
    assert (reply.results[0].op, reply.results[0].status) == (10044, OP_ILLEGAL)


def test_41_first_op_must_be_sequence_or_a_lone_sessionless_op(v4):
    reply = v4.compound([putrootfh(), getfh()], minor=1)
    assert [(r.op, r.status) for r in reply.results] == [(24, OP_NOT_IN_SESSION)]
    reply = v4.compound([u32(42), putrootfh()], minor=1)           # EXCHANGE_ID not alone
    assert [(r.op, r.status) for r in reply.results] == [(42, NOT_ONLY_OP)]


def test_sequence_after_the_first_position_is_sequence_pos(v4):
    from acmenfs.nfs4.compound import CompoundState, _precheck
    cs = CompoundState(v4.nfs4, None, 1)
    assert _precheck(cs, 53, 1, 2, v4.nfs4.ops) == (53, SEQUENCE_POS)


def test_too_many_ops_answers_the_first_op_without_running_anything(v4, export_dir):
    (export_dir / "victim").write_text("x")
    e = v4.fh_of("/e")
    ops = [putfh(e), remove("victim")] + [getfh()] * 200
    reply = v4.compound(ops)
    assert [(r.op, r.status) for r in reply.results] == [(22, RESOURCE)]
    assert (export_dir / "victim").exists()


def test_reply_bigger_than_the_limit_is_resource_in_40(v4, monkeypatch):
    import acmenfs.nfs4.compound as compound
    monkeypatch.setattr(compound, "MAX_REPLY", 200)
    reply = v4.compound([putrootfh()] + [getfh()] * 10)
    assert reply.status == RESOURCE and reply.results[-1].status == RESOURCE and len(reply.results) < 11


def test_truncated_op_array_is_badxdr(v4):
    body = v4.body(opaque(b"") + u32(0, 3) + putrootfh())
    reply = parse_compound(body)
    assert reply.status == BADXDR and reply.results[-1].status == BADXDR


def test_truncated_op_arguments_are_badxdr_for_that_op(v4):
    reply = v4.compound([putrootfh(), u32(15, 100) + b"ab"])   # LOOKUP claims a 100-byte name
    assert [(r.op, r.status) for r in reply.results] == [(24, OK), (15, BADXDR)]


def test_undecodable_compound_header_is_garbage_args(v4):
    reply = v4.rpc(u32(5) + b"ab")   # tag claims 5 bytes, record ends
    assert struct.unpack_from(">IIIIII", reply)[1:] == (1, 0, 0, 0, 4)


def test_prog_mismatch_now_says_3_to_4(v4):
    reply = v4.rpc(b"", vers=2, proc=0)
    assert struct.unpack_from(">IIIIIIII", reply)[1:] == (1, 0, 0, 0, 2, 3, 4)


def test_v3_and_v4_handles_are_the_same_bytes(v4):
    fh4 = v4.fh_of("/e")
    mnt = v4.nfs4.nfs.exports.get("/e")
    backend = v4.nfs4.nfs.backend(mnt)
    assert fh4 == v4.nfs4.nfs.codec.encode(mnt.export_id, backend.root_handle)


def test_40_compound_with_write_op_is_kept_in_the_drc_and_replayed(v4, export_dir):
    (export_dir / "once").write_text("x")
    e = v4.fh_of("/e")
    args = compound_args([putfh(e), remove("once")])
    first = v4.rpc(args, xid=777)
    (export_dir / "once").write_text("again")
    second = v4.rpc(args, xid=777)        # a retransmission: answered from the DRC, not re-run
    assert first == second and parse_compound(first[24:]).status == OK
    assert (export_dir / "once").exists()


def test_40_compound_of_reads_only_is_not_kept_in_the_drc(v4):
    drc = v4.server.drc
    v4.rpc(compound_args([putrootfh(), getfh()]), xid=900)
    v4.rpc(compound_args([putrootfh(), getfh()]), xid=900)   # run again: not a cache hit
    stats = drc.stats()
    assert stats.checks == 0 and stats.hits == 0 and stats.entries == 0 and stats.in_progress == 0


def test_41_compounds_never_touch_the_drc(v4):
    calls = []
    original = v4.server.drc.check
    v4.server.drc.check = lambda key: calls.append(key) or original(key)
    v4.compound([], minor=1)
    v4.compound([u32(53) + b"\0" * 32, putrootfh(), remove("x")], minor=1)
    v4.compound([putrootfh(), remove("x")], minor=0)
    assert len(calls) == 1


def test_the_drc_decision_steps_over_read_only_ops_and_keeps_everything_else():
    from acmenfs.nfs4.program import needs_drc
    fh = b"\1" * 40
    read_only = [putfh(fh), putrootfh(), lookup("a"), getattr_(1, 4, 33, 55), u32(3, 0x3F), getfh(), savefh(),
                 u32(31), u32(16), u32(27), u32(25) + b"\0" * 28, u32(26) + b"\0" * 24 + u32(1, 3),
                 u32(37) + u32(1, 16) + opaque(b"12345678"), u32(33) + opaque("n"), u32(30) + b"\0" * 8]
    assert not needs_drc(compound_args(read_only), 0)
    assert not needs_drc(compound_args(read_only + [remove("x")], minor=1), 0)
    assert needs_drc(compound_args(read_only + [remove("x")]), 0)
    assert needs_drc(compound_args([putfh(fh), u32(38)]), 0)               # WRITE
    assert needs_drc(compound_args([putfh(fh), u32(9, 5)]), 0)             # truncated bitmap
    assert needs_drc(b"\0\0", 0) and not needs_drc(b"xxxx" + compound_args([getfh()]), 4)


def test_the_drc_decisions_shortcut_for_putfh_read_and_getattr_answers_as_its_loop():
    """needs_drc answers PUTFH + READ / GETATTR itself: for those and every truncation, tag,
    minor version and op count around them, as the general loop ``_needs_drc`` does."""
    from acmenfs.nfs4.program import _needs_drc, needs_drc
    fh = b"\1" * 37
    shapes = [[putfh(fh), read(4096, 4096)], [putfh(fh), getattr_(1, 4, 33, 55)], [putfh(fh), getattr_()],
              [putfh(fh), write(0, b"x")], [putfh(fh), getfh()], [putfh(fh), read(0, 1), getattr_(1)],
              [putfh(b""), read(0, 1)], [putrootfh(), read(0, 1)]]
    checked = 0
    for ops in shapes:
        for minor in (0, 1):
            for tag in (b"", b"t"):
                args = b"pad!" + compound_args(ops, minor, tag)
                for cut in range(4, len(args) + 1):
                    assert needs_drc(args[:cut], 4) == _needs_drc(args[:cut], 4), (ops, minor, tag, cut)
                    checked += 1
    wrong_count = b"pad!" + compound_args([putfh(fh), read(0, 1)])
    wrong_count = wrong_count[:12] + u32(3) + wrong_count[16:]
    assert needs_drc(wrong_count, 4) == _needs_drc(wrong_count, 4)
    assert checked > 1000


def test_forged_handles_are_badhandle(v4):
    good = v4.fh_of("/e")
    assert v4.compound([putfh(b"\x01" * 129)]).status == BADXDR   # beyond nfs_fh4's XDR bound
    for forged in (b"", b"\x01" * 128, good[:-1] + bytes([good[-1] ^ 1]), b"P/e" + b"\0" * 20, b"\x07abc"):
        reply = v4.compound([putfh(forged)])
        assert reply.status == BADHANDLE, forged


def _begin(v4, args, minor_ops_xid=1):
    from acmenfs.oncrpc import rpc
    record = rpc.encode_call(5000 + minor_ops_xid, 100003, 4, 1, args, cred_flavor=1,
                             cred_body=rpc.encode_auth_sys(0, 0))
    return v4.dispatcher.begin(record, ("127.0.0.1", 800), "tcp")


def test_read_only_ops_run_inline_and_a_compound_resumes_in_the_pool_at_the_first_other_op(v4, export_dir, monkeypatch):
    from acmenfs.nfs4.compound import OpSpec
    ran = []
    monkeypatch.setitem(v4.nfs4.ops, 53, OpSpec("SEQUENCE", lambda cs, args: ran.append(1) or SEQUENCE_STUB_BODY))
    from acmenfs.oncrpc.dispatch import FileRegion
    (export_dir / "f").write_bytes(b"inline data")
    (export_dir / "f").read_bytes()
    e = v4.fh_of("/e")
    v4.compound([putfh(e), lookup("f"), getattr_(4)])             # handles now cached
    pending = _begin(v4, compound_args([putfh(e), lookup("f"), u32(25) + b"\0" * 16 + b"\0" * 8 + u32(100)]), 1)
    parts = v4.dispatcher.run_inline_first(pending)
    # answered inline: the data as a FileRegion (sendfile) or, for a small read, already copied
    assert parts is not None and any(type(p) is FileRegion or b"inline data" in bytes(p) for p in parts)
    pending = _begin(v4, compound_args([putfh(e), remove("f")]), 2)
    assert v4.dispatcher.run_inline_first(pending) is None         # REMOVE: not on the event loop...
    assert (export_dir / "f").exists()                              # ...and not run before RunInPool
    parts = v4.dispatcher.run_sync(pending)
    assert parse_compound(b"".join(bytes(p) for p in parts)[24:]).status == OK and not (export_dir / "f").exists()
    (export_dir / "g").write_text("x")
    pending = _begin(v4, compound_args([u32(53), putfh(e), remove("g"), getattr_(4)], minor=1), 3)
    assert v4.dispatcher.run_inline_first(pending) is None and ran == [1]   # parked at REMOVE
    assert (export_dir / "g").exists()
    reply = parse_compound(b"".join(bytes(p) for p in v4.dispatcher.run_sync(pending))[24:])
    assert ran == [1] and reply.statuses == [OK] * 4 and not (export_dir / "g").exists()   # resumed, not rerun


def test_dispatcher_cache_if_decides_per_call():
    from acmenfs.oncrpc import rpc
    from acmenfs.oncrpc.dispatch import Procedure, Program, RpcDispatcher
    from acmenfs.oncrpc.drc import DuplicateRequestCache
    seen, runs = [], []

    def handler(ctx, args):
        runs.append(1)
        return b"reply"
    program = Program(0x20000099, 1, "T", {1: Procedure(
        "P", handler, cached=True, cache_if=lambda record, offset: seen.append(bytes(record[offset:])) or
        bytes(record[offset:]) == b"keep")})
    dispatcher = RpcDispatcher([program], drc=DuplicateRequestCache())
    for args in (b"keep", b"keep", b"skip", b"skip"):
        dispatcher.call_here(rpc.encode_call(42, 0x20000099, 1, 1, args + b"\0" * 0), ("h", 1))
    assert seen == [b"keep", b"keep", b"skip", b"skip"]
    assert len(runs) == 3          # the second "keep" was a DRC replay; both "skip" calls ran


class _SlotState:
    lease_seconds = 90

    def __init__(self):
        self.done = []

    def check_io(self, stateid, key, write):
        pass

    def check_io_fast(self, stateid, key, write):
        return False

    def slot_done(self, slot, reply):
        self.done.append((slot, reply))

    def expire_idle(self, now):
        pass


def test_a_compound_that_passed_sequence_hands_its_reply_to_the_slot(v4, monkeypatch, export_dir):
    from acmenfs.nfs4.compound import OpSpec
    from acmenfs.nfs4.errors import SlotReplay
    state = _SlotState()
    monkeypatch.setattr(v4.nfs4, "state", state)

    def sequence(cs, args):
        if args.unpack_uint() == 7:
            raise SlotReplay(b"cached reply bytes")
        cs.slot = "slot-0"
        return SEQUENCE_STUB_BODY
    monkeypatch.setitem(v4.nfs4.ops, 53, OpSpec("SEQUENCE", sequence))
    (export_dir / "f").write_bytes(b"data!")
    body = v4.body(compound_args([u32(53, 1), putrootfh(), lookup("e"), lookup("f"),
                                  u32(25) + b"\0" * 16 + b"\0" * 8 + u32(10)], minor=1))
    assert state.done == [("slot-0", body)] and body.endswith(b"data!\0\0\0")
    assert v4.body(compound_args([u32(53, 7), putrootfh()], minor=1)) == b"cached reply bytes"
    assert len(state.done) == 1


def test_secinfo_no_name_in_41(v4, monkeypatch):
    from acmenfs.nfs4.compound import OpSpec
    monkeypatch.setitem(v4.nfs4.ops, 53, OpSpec("SEQUENCE", lambda cs, args: SEQUENCE_STUB_BODY))
    reply = v4.compound([u32(53), putrootfh(), lookup("e"), u32(52, 0), getfh()], minor=1)
    assert reply.results[3].value == [1] and reply.results[4].status == NOFILEHANDLE   # fh consumed
    reply = v4.compound([u32(53), putrootfh(), u32(52, 1)], minor=1)
    assert reply.results[-1].status == NOENT                                          # root: no parent
    reply = v4.compound([u32(53), putrootfh(), lookup("e"), u32(52, 1)], minor=1)
    assert reply.status == OK


def test_compounds_are_counted_in_the_servers_call_stats(v4):
    v4.compound([putrootfh(), getfh()])
    v4.compound([putrootfh(), lookup("missing")])
    stats = v4.server.stats()
    assert stats["calls"][("NFS4", "COMPOUND")] == 2
    assert stats["errors"][("NFS4", "COMPOUND", "NOENT")] == 1


def test_handles_of_a_removed_export_or_file_are_stale(v4, v4_exports, export_dir):
    (export_dir / "f").write_text("x")
    f = v4.fh_of("/e/f")
    (export_dir / "f").unlink()
    assert v4.compound([putfh(f), getattr_(1)]).status == 70     # at PUTFH or at the first use
    e = v4.fh_of("/e")
    v4_exports.remove("/e")
    assert v4.compound([putfh(e)]).status == 70


def test_an_op_that_would_wait_inline_is_resumed_in_the_pool_with_what_ran_before(v4, export_dir):
    (export_dir / "listed").write_text("x")
    pending = _begin(v4, compound_args([putrootfh(), lookup("e"), u32(26) + b"\0" * 16 + u32(4096, 8192) + u32(1, 2),
                                        getfh()]), 4)
    assert v4.dispatcher.run_inline_first(pending) is None        # READDIR lists in the pool
    assert len(v4.nfs4._parked) == 1
    reply = parse_compound(b"".join(bytes(p) for p in v4.dispatcher.run_sync(pending))[24:])
    assert reply.statuses == [OK] * 4 and [n for _, n, _ in reply.results[2].value[1]] == ["listed"]
    assert reply.results[3].value == v4.fh_of("/e") and not v4.nfs4._parked


def test_mutated_compounds_never_crash_the_server(v4, export_dir, caplog):
    """Deterministic fuzzing: flipped bytes, truncations and random op numbers in valid COMPOUNDs
    are answered with an nfsstat4 or GARBAGE_ARGS, never SYSTEM_ERR, and the server still works."""
    import random
    (export_dir / "f").write_bytes(b"0123456789")
    (export_dir / "d").mkdir()
    e = v4.fh_of("/e")
    seeds = [
        compound_args([putrootfh(), lookup("e"), lookup("f"), getattr_(0, 1, 4, 33, 36, 55), getfh()]),
        compound_args([putfh(e), u32(26) + b"\0" * 16 + u32(4096, 8192) + u32(2, 0x100002, 0x800000)]),
        compound_args([putfh(e), u32(6, 2) + opaque("newdir") + u32(1, 0) + opaque(b""), getfh()]),
        compound_args([putfh(e), lookup("f"), u32(38) + b"\0" * 16 + b"\0" * 8 + u32(0) + opaque(b"abc")]),
        compound_args([putfh(e), u32(34) + b"\0" * 16 + u32(2, 0, 2) + opaque(u32(0o644))]),
    ]
    rng = random.Random(1234)
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        action = rng.random()
        if action < 0.5:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif action < 0.8:
            del data[rng.randrange(len(data)):]
        else:
            position = rng.randrange(0, len(data) - 3, 4)
            data[position:position + 4] = u32(rng.choice([0, 3, 59, 69, 71, 10044, 2**31, 2**32 - 1]))
        reply = v4.rpc(bytes(data))
        accept = struct.unpack_from(">I", reply, 20)[0]
        assert accept in (0, 4), (bytes(data).hex(), accept)          # SUCCESS or GARBAGE_ARGS
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert not errors, errors[:3]                                      # no SERVERFAULT either
    assert v4.compound([putrootfh(), lookup("e"), lookup("f"), getattr_(4)]).status == OK
