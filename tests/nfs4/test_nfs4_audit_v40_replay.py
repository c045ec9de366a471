"""Audit of issue #13, 4.0 seqid replay (RFC 7530 §9.1.7): every seqid-mutating op of an open or
lock owner answers a retransmission (same seqid) from the owner's cached reply, even when the
state the op named is gone (CLOSE) or the world changed since (a DENIED LOCK whose holder has
unlocked).  Sans-IO through the real dispatcher (``Sans4``), driven by the test client."""

from __future__ import annotations

from acmenfs.nfs4.client import Nfs4Client, Ops, compound_args, parse_compound
from acmenfs.nfs4.const import Nfs4Stat as S


def client_40(v4) -> Nfs4Client:
    client = Nfs4Client(lambda args: v4.body(args), 0)
    client.establish()
    return client


def twice(v4, ops: list[bytes]):
    """Send the same COMPOUND twice (a retransmission with a new xid, as after a reconnect)."""
    args = compound_args(ops, 0)
    return parse_compound(v4.body(args)), parse_compound(v4.body(args))


def test_40_close_retransmission_answers_the_cached_reply(v4, export_dir):
    """The state is freed by the first CLOSE; the retransmission must still get the cached OK."""
    c = client_40(v4)
    fh, sid = c.open("/e/closed", create="unchecked")
    first, again = twice(v4, [Ops.putfh(fh), Ops.close(c.open_seqid, sid)])
    assert first.statuses == [S.OK, S.OK]
    assert again.raw == first.raw                                   # not BAD_STATEID
    c.open_seqid += 1
    # the owner goes on with the next seqid; the closed stateid is dead for anything else
    assert c.raw([Ops.putfh(fh), Ops.read(sid, 0, 1)]).last.status == S.BAD_STATEID
    fh, sid = c.open("/e/closed", access=1)
    assert c.close_file(fh, sid)[4:] == sid[4:]


def test_40_close_of_an_unknown_stateid_is_still_bad_stateid(v4):
    c = client_40(v4)
    fh, sid = c.open("/e/unknown", create="unchecked")
    forged = sid[:4] + bytes(b ^ 0x5A for b in sid[4:])
    assert c.raw([Ops.putfh(fh), Ops.close(c.open_seqid, forged)]).last.status == S.BAD_STATEID
    first = c.raw([Ops.putfh(fh), Ops.close(c.open_seqid, sid)])
    assert first.status == S.OK
    # a stale retransmission (an older seqid) of the CLOSE is not a replay
    assert c.raw([Ops.putfh(fh), Ops.close(c.open_seqid - 1, sid)]).last.status in (S.BAD_STATEID, S.BAD_SEQID)


def test_40_open_downgrade_retransmission_is_replayed(v4):
    c = client_40(v4)
    c.open("/e/dg", create="unchecked", access=1)
    fh, sid = c.open("/e/dg", access=3)
    first, again = twice(v4, [Ops.putfh(fh), Ops.open_downgrade(sid, c.open_seqid, 1, 0)])
    assert first.statuses == [S.OK, S.OK] and again.raw == first.raw
    c.open_seqid += 1
    assert c.raw([Ops.putfh(fh), Ops.write(first.last.value, 0, b"x")]).last.status == S.OPENMODE


def test_40_locku_retransmission_is_replayed(v4):
    c = client_40(v4)
    fh, sid = c.open("/e/lu", create="unchecked")
    lock_sid = c.lock(fh, sid, 0, 10)
    seqid = c.lock_seqids[lock_sid[4:]]
    first, again = twice(v4, [Ops.putfh(fh), Ops.locku(2, seqid, lock_sid, 0, 10)])
    assert first.statuses == [S.OK, S.OK] and again.raw == first.raw
    assert first.last.value[:4] == b"\0\0\0\2"


def test_40_denied_lock_retransmission_replays_denied_after_the_holder_unlocked(v4):
    """The replay cache answers, it does not re-run: the retransmitted LOCK is still DENIED."""
    a, b = client_40(v4), client_40(v4)
    fh, sid_a = a.open("/e/denied", create="unchecked")
    _, sid_b = b.open("/e/denied")
    lock_b = b.lock(fh, sid_b, 50, 1)
    lock_a = a.lock(fh, sid_a, 0, 10)
    op = Ops.lock_existing(2, 0, 10, lock_b, b.lock_seqids[lock_b[4:]])
    first = b.raw([Ops.putfh(fh), op])
    assert first.last.status == S.DENIED and first.last.value["clientid"] == a.clientid
    a.unlock(fh, lock_a, 0, 10)
    assert b.raw([Ops.putfh(fh), op]).raw == first.raw
    b.lock_seqids[lock_b[4:]] += 1                                  # DENIED used the seqid
    assert b.lock(fh, sid_b, 0, 10, lock_sid=lock_b)[:4] == b"\0\0\0\2"


def test_40_open_to_lock_owner_retransmission_is_replayed(v4):
    """The first LOCK of a lock owner is sequenced by the open owner's seqid."""
    c = client_40(v4)
    fh, sid = c.open("/e/o2l", create="unchecked")
    op = Ops.lock_new(2, 0, 5, c.open_seqid, sid, 0, c.clientid, b"new-lock-owner")
    first, again = twice(v4, [Ops.putfh(fh), op])
    assert first.statuses == [S.OK, S.OK] and again.raw == first.raw
