"""NFSv4 state operations through the real COMPOUND dispatcher (sans-IO, A's ``Sans4`` harness)
driven by B's test client: 4.0 client ID + OPEN_CONFIRM + seqid replay, 4.1 sessions and
slot replay, share reservations, locks between two clients, TEST/FREE_STATEID, grace."""

from __future__ import annotations

import pytest
from nfs4_state_helpers import Clock

from acmenfs.nfs4.client import ALL_ONES, Nfs4Client, Nfs4Failed, Ops, compound_args, parse_compound
from acmenfs.nfs4.const import Nfs4Stat as S
from acmenfs.nfs4.state import StateManager


def client_for(v4, minor: int, owner: bytes | None = None, uid: int = 0) -> Nfs4Client:
    client = Nfs4Client(lambda args: v4.body(args, uid=uid), minor, owner=owner)
    client.establish()
    return client


@pytest.fixture
def clock(v4, tmp_path):
    clock = Clock()
    v4.nfs4.state = StateManager(lease_seconds=30, grace_seconds=0, records_dir=tmp_path / "nfs4",
                                 clock=clock)
    return clock


# ----- 4.0 ------------------------------------------------------------------------------------
def test_40_open_confirm_write_read_close(v4, export_dir):
    c = client_for(v4, 0)
    fh, sid = c.open("/e/f40", create="unchecked")
    assert sid[:4] == b"\0\0\0\2"                           # OPEN seqid 1, OPEN_CONFIRM -> 2
    c.write(fh, sid, 0, b"hello v4")
    assert c.read(fh, sid, 0, 100) == b"hello v4"
    closed = c.close_file(fh, sid)
    assert closed[:4] == b"\0\0\0\3"
    reply = c.call(Ops.putfh(fh), Ops.read(sid, 0, 10), check=False)
    assert reply.last.status == S.BAD_STATEID
    assert (export_dir / "f40").read_bytes() == b"hello v4"


def test_40_open_seqid_replay_answers_cached_reply(v4):
    c = client_for(v4, 0)
    ops = c.lookup_ops("/e") + [Ops.open(0, c.clientid, b"oo", "replayed", create="unchecked"), Ops.getfh()]
    first = c.raw(ops)
    second = c.raw(ops)                                      # same seqid: the cached OPEN reply
    assert first.status == second.status == S.OK
    assert first.op(18).value == second.op(18).value and first.last.value == second.last.value
    confirm = c.raw([Ops.putfh(first.last.value), Ops.open_confirm(first.op(18).value["stateid"], 1)])
    assert confirm.status == S.OK
    assert c.raw([Ops.putfh(first.last.value), Ops.open_confirm(first.op(18).value["stateid"], 1)]).raw \
        == confirm.raw                                       # OPEN_CONFIRM replayed too
    wrong = c.raw(c.lookup_ops("/e") + [Ops.open(5, c.clientid, b"oo", "replayed")])
    assert wrong.last.status == S.BAD_SEQID                  # confirmed owner: seqid must be 2


def test_40_clientid_errors(v4):
    c = Nfs4Client(lambda args: v4.body(args), 0)
    assert c.raw([Ops.renew(0x1234)]).status == S.STALE_CLIENTID
    assert c.raw([Ops.setclientid_confirm(0x1234, b"x" * 8)]).status == S.STALE_CLIENTID
    c.establish()
    assert c.raw([Ops.renew(c.clientid)]).status == S.OK
    other = Nfs4Client(lambda args: v4.body(args, uid=1000, gid=1000), 0, owner=c.owner)
    c.open("/e/held", create="unchecked")
    reply = other.raw([Ops.setclientid(b"z" * 8, c.owner)])
    assert reply.status == S.CLID_INUSE and reply.last.value == ("tcp", "")


def test_40_lock_locku_release_lockowner(v4):
    c = client_for(v4, 0)
    fh, sid = c.open("/e/lk40", create="unchecked")
    lock_sid = c.lock(fh, sid, 0, 10)
    lock_sid = c.lock(fh, sid, 20, 10, lock_sid=lock_sid)      # existing lock owner
    assert lock_sid[:4] == b"\0\0\0\2"
    reply = c.raw([Ops.release_lockowner(c.clientid, b"lock-owner-1")])
    assert reply.status == S.LOCKS_HELD
    lock_sid = c.unlock(fh, lock_sid, 0, ALL_ONES)
    assert c.raw([Ops.release_lockowner(c.clientid, b"lock-owner-1")]).status == S.OK
    reply = c.call(Ops.putfh(fh), Ops.locku(2, 9, lock_sid, 0, 1), check=False)
    assert reply.last.status == S.BAD_STATEID


def test_40_ops_refused_in_41(v4):
    c = client_for(v4, 1)
    assert c.call(Ops.renew(c.clientid), check=False).last.status == S.NOTSUPP


# ----- 4.1 sessions -----------------------------------------------------------------------------
def test_41_slot_replay_identical_bytes_and_misordered(v4):
    c = client_for(v4, 1)
    args = compound_args([Ops.sequence(c.sessionid, c.slot_seqid + 1), Ops.putrootfh(), Ops.getfh()], 1)
    first = v4.body(args)
    second = v4.body(args)
    assert first == second and parse_compound(first).status == S.OK
    skip = compound_args([Ops.sequence(c.sessionid, c.slot_seqid + 5), Ops.putrootfh()], 1)
    assert parse_compound(v4.body(skip)).status == S.SEQ_MISORDERED
    false_retry = compound_args([Ops.sequence(c.sessionid, c.slot_seqid + 1), Ops.putrootfh()], 1)
    assert parse_compound(v4.body(false_retry)).status == S.SEQ_FALSE_RETRY
    bad_slot = compound_args([Ops.sequence(c.sessionid, 1, slot=200)], 1)
    assert parse_compound(v4.body(bad_slot)).status == S.BADSLOT
    c.slot_seqid += 1
    reply = c.call(Ops.putrootfh())
    assert reply.results[0].value["highest_slotid"] == 7 and reply.results[0].value["status_flags"] == 0


def test_41_session_rules_and_destroy(v4):
    c = client_for(v4, 1)
    assert c.raw([Ops.putrootfh()]).status == S.OP_NOT_IN_SESSION
    assert c.raw([Ops.sequence(b"\1" * 16, 1)]).status == S.BADSESSION
    bind = c.raw([Ops.bind_conn(c.sessionid)])
    assert bind.status == S.OK and bind.last.value == (c.sessionid, 1, False)
    assert c.raw([Ops.destroy_clientid(c.clientid)]).status == S.CLIENTID_BUSY
    assert c.raw([Ops.destroy_session(c.sessionid)]).status == S.OK
    assert c.raw([Ops.sequence(c.sessionid, 2)]).status == S.BADSESSION
    assert c.raw([Ops.destroy_clientid(c.clientid)]).status == S.OK
    assert c.raw([Ops.destroy_clientid(c.clientid)]).status == S.STALE_CLIENTID


def test_41_create_session_replay(v4):
    c = Nfs4Client(lambda args: v4.body(args), 1)
    exid = c.raw([Ops.exchange_id(c.verifier, c.owner)]).last.value
    assert exid["flags"] & 0x00010000 and not exid["flags"] & 0x80000000 and exid["state_protect"] == 0
    op = Ops.create_session(exid["clientid"], exid["sequenceid"])
    first, again = c.raw([op]), c.raw([op])
    assert first.raw == again.raw and first.status == S.OK
    assert c.raw([Ops.create_session(exid["clientid"], exid["sequenceid"] + 5)]).status == S.SEQ_MISORDERED
    confirmed = c.raw([Ops.exchange_id(c.verifier, c.owner)]).last.value
    assert confirmed["flags"] & 0x80000000 and confirmed["clientid"] == exid["clientid"]


@pytest.mark.parametrize("limits", [dict(max_ops=0), dict(max_ops=1), dict(max_request=87), dict(max_response=79)])
def test_41_create_session_with_a_fore_channel_too_small_for_sequence_is_toosmall(v4, limits):
    """RFC 8881 §18.36.3: a fore channel that cannot carry SEQUENCE and one more op is refused with
    TOOSMALL; the refusal uses the csa_sequence (a replay gets it again, the next one succeeds)."""
    c = Nfs4Client(lambda args: v4.body(args), 1)
    exid = c.raw([Ops.exchange_id(c.verifier, c.owner)]).last.value
    refused = Ops.create_session(exid["clientid"], exid["sequenceid"], **limits)
    assert c.raw([refused]).status == S.TOOSMALL
    assert c.raw([refused]).status == S.TOOSMALL  # replayed
    smallest = Ops.create_session(exid["clientid"], exid["sequenceid"] + 1, max_ops=2, max_request=88, max_response=80)
    assert c.raw([smallest]).status == S.OK


def test_41_reclaim_complete_twice(v4):
    c = client_for(v4, 1)
    assert c.call(Ops.reclaim_complete(), check=False).last.status == S.COMPLETE_ALREADY


def test_41_open_before_reclaim_complete_is_grace(v4):
    c = Nfs4Client(lambda args: v4.body(args), 1)
    c.establish(reclaim_complete=False)
    with pytest.raises(Nfs4Failed) as info:
        c.open("/e/early", create="unchecked")
    assert info.value.status == S.GRACE


# ----- opens and locks between clients ----------------------------------------------------------------
def test_share_reservation_denied(v4):
    a, b = client_for(v4, 1), client_for(v4, 1)
    a.open("/e/shared", create="unchecked", access=1, deny=2)      # READ, DENY_WRITE
    with pytest.raises(Nfs4Failed) as info:
        b.open("/e/shared", access=2)
    assert info.value.status == S.SHARE_DENIED
    b.open("/e/shared", access=1)


def test_open_downgrade_and_openmode(v4):
    c = client_for(v4, 1)
    c.open("/e/dg", create="unchecked", access=1)
    fh, sid = c.open("/e/dg", access=3)                     # upgrade: same stateid, seqid 2
    assert c.call(Ops.putfh(fh), Ops.open_downgrade(sid, 0, 2, 0), check=False).last.status == S.INVAL
    new = c.call(Ops.putfh(fh), Ops.open_downgrade(sid, 0, 1, 0)).last.value
    assert new[:4] == b"\0\0\0\3"
    reply = c.call(Ops.putfh(fh), Ops.write(new, 0, b"x"), check=False)
    assert reply.last.status == S.OPENMODE
    assert c.call(Ops.putfh(fh), Ops.write(sid, 0, b"x"), check=False).last.status == S.OLD_STATEID


def test_two_clients_lock_denied_with_holder_then_unlock(v4):
    a, b = client_for(v4, 1, owner=b"host-a"), client_for(v4, 1, owner=b"host-b")
    fh, sid_a = a.open("/e/disk.img", create="unchecked")
    _, sid_b = b.open("/e/disk.img")
    lock_a = a.lock(fh, sid_a, 100, 1)                              # QEMU's byte 100
    with pytest.raises(Nfs4Failed) as info:
        b.lock(fh, sid_b, 0, ALL_ONES, owner=b"qemu-b")
    assert info.value.status == S.DENIED
    assert info.value.value == {"offset": 100, "length": 1, "locktype": 2, "clientid": a.clientid,
                                "owner": b"lock-owner-1"}
    assert b.test_lock(fh, 100, 1, owner=b"qemu-b").last.status == S.DENIED
    assert a.test_lock(fh, 100, 1).last.status == S.OK               # own lock
    assert a.test_lock(fh, 101, 10).last.status == S.OK
    a.unlock(fh, lock_a, 100, 1)
    lock_b = b.lock(fh, sid_b, 0, ALL_ONES, owner=b"qemu-b")
    assert b.call(Ops.putfh(fh), Ops.write(lock_b, 0, b"data")).status == S.OK


def test_lock_errors(v4):
    c = client_for(v4, 1)
    fh, sid = c.open("/e/lkerr", create="unchecked", access=1)
    for length, status in ((0, S.INVAL), (ALL_ONES - 1, S.INVAL)):
        reply = c.call(Ops.putfh(fh), Ops.lock_new(1, 5, length, 0, sid, 0, c.clientid, b"lo"), check=False)
        assert reply.last.status == status
    reply = c.call(Ops.putfh(fh), Ops.lock_new(2, 0, 1, 0, sid, 0, c.clientid, b"lo"), check=False)
    assert reply.last.status == S.OPENMODE                          # WRITE lock, READ open


def test_test_and_free_stateid(v4):
    c = client_for(v4, 1)
    fh, sid = c.open("/e/ts", create="unchecked")
    lock_sid = c.lock(fh, sid, 0, 1)
    codes = c.call(Ops.test_stateid(sid, lock_sid, b"\0\0\0\1" + b"\7" * 12)).last.value
    assert codes == [S.OK, S.OK, S.BAD_STATEID]
    assert c.call(Ops.free_stateid(lock_sid), check=False).last.status == S.LOCKS_HELD
    assert c.call(Ops.free_stateid(sid), check=False).last.status == S.LOCKS_HELD
    lock_sid = c.unlock(fh, lock_sid, 0, 1)
    c.call(Ops.free_stateid(lock_sid))
    assert c.call(Ops.test_stateid(lock_sid)).last.value == [S.BAD_STATEID]


def test_41_current_stateid_flows_from_open_to_write_and_close(v4):
    c = client_for(v4, 1)
    current = b"\0\0\0\1" + b"\0" * 12
    reply = c.call(*c.lookup_ops("/e"), Ops.open(0, c.clientid, b"oo", "cur", create="unchecked"),
                   Ops.write(current, 0, b"abc"), Ops.close(0, current))
    assert reply.status == S.OK and reply.last.value == b"\xff\xff\xff\xff" + b"\0" * 12


# ----- leases and grace with an injected clock ----------------------------------------------------------
def test_lock_of_expired_client_is_freed(v4, clock):
    a, b = client_for(v4, 1, owner=b"a"), client_for(v4, 1, owner=b"b")
    fh, sid_a = a.open("/e/lease", create="unchecked")
    _, sid_b = b.open("/e/lease")
    a.lock(fh, sid_a, 0, 1)
    clock.now += 20
    with pytest.raises(Nfs4Failed):
        b.lock(fh, sid_b, 0, 1, owner=b"lb")
    clock.now += 11                                                 # a: 31 s silent, b renewed
    b.lock(fh, sid_b, 0, 1, owner=b"lb")
    assert a.call(check=False).status == S.BADSESSION


def test_grace_after_restart(v4, clock, tmp_path):
    a = client_for(v4, 1, owner=b"returning")
    fh, sid = a.open("/e/grace", create="unchecked")
    a.lock(fh, sid, 0, 1)
    v4.nfs4.state = StateManager(lease_seconds=30, records_dir=tmp_path / "nfs4", clock=clock, boot_id=7)
    back = Nfs4Client(lambda args: v4.body(args), 1, owner=b"returning")
    back.establish(reclaim_complete=False)
    new = Nfs4Client(lambda args: v4.body(args), 1, owner=b"newcomer")
    new.establish(reclaim_complete=False)
    with pytest.raises(Nfs4Failed) as info:
        new.open("/e/grace", reclaim=True)
    assert info.value.status == S.NO_GRACE
    fh, sid = back.open("/e/grace", reclaim=True)
    back.lock(fh, sid, 0, 1, reclaim=True)
    with pytest.raises(Nfs4Failed) as info:
        back.lock(fh, sid, 5, 1, owner=b"not-a-reclaim")
    assert info.value.status == S.GRACE                             # new locks wait for grace
    new.call(Ops.reclaim_complete())
    with pytest.raises(Nfs4Failed) as info:
        new.open("/e/grace")
    assert info.value.status == S.GRACE
    back.call(Ops.reclaim_complete())                               # the only previous client: grace ends
    _, sid_new = new.open("/e/grace")
    with pytest.raises(Nfs4Failed) as info:
        new.lock(fh, sid_new, 0, 1, owner=b"n")
    assert info.value.status == S.DENIED                            # the reclaimed lock holds


def test_ops_of_a_server_without_delegations_or_backchannel(v4):
    c = client_for(v4, 1)
    fh, sid = c.open("/e/deleg", create="unchecked")
    assert c.call(Ops.putfh(fh), b"\0\0\0\x08" + sid, check=False).last.status == S.BAD_STATEID  # DELEGRETURN
    assert c.call(b"\0\0\0\x28" + b"\0\0\0\1" + b"\0\0\0\1\0\0\0\0").status == S.OK      # BACKCHANNEL_CTL
    assert c.call(b"\0\0\0\x36" + b"\0" * 8, check=False).last.status == S.INVAL          # SET_SSV
    old = client_for(v4, 0)
    assert old.raw([b"\0\0\0\x07" + b"\0" * 8]).status == S.NOTSUPP                     # DELEGPURGE
    reply = c.call(*c.lookup_ops("/e"), Ops.open(0, c.clientid, b"o", "deleg", access=0x0403))  # WANT_NO_DELEG
    assert reply.op(18).value["delegation"] == 3


def test_open_checks_mode_bits(v4, export_dir):
    (export_dir / "private").write_text("secret")
    (export_dir / "private").chmod(0o600)
    (export_dir / "readable").write_text("public")
    (export_dir / "readable").chmod(0o644)
    user = client_for(v4, 1, uid=1000)
    for path, access in (("/e/private", 1), ("/e/readable", 2)):
        with pytest.raises(Nfs4Failed) as info:
            user.open(path, access=access)
        assert info.value.status == S.ACCESS
    user.open("/e/readable", access=1)
    user.open("/e/mine", create="unchecked")
    (export_dir / "mine").chmod(0o444)
    user.open("/e/mine", access=3)                                   # owner override


def test_41_owners_forgotten_with_their_last_state(v4):
    c = client_for(v4, 1)
    fh, sid = c.open("/e/owners", create="unchecked")
    lock_sid = c.unlock(fh, c.lock(fh, sid, 0, 1), 0, 1)
    client = v4.nfs4.state.clients[c.clientid]
    c.call(Ops.free_stateid(lock_sid))
    assert not client.lock_owners
    c.close_file(fh, sid)
    assert not client.open_owners and not client.has_state()
