"""LOCK / LOCKT / LOCKU and OPEN error paths through COMPOUND (sans-IO, A's ``Sans4`` harness):
4.0 lock owner seqids and replay, stateid errors, ranges, grace for LOCKT, OPEN argument errors."""

from __future__ import annotations

import pytest

from acmenfs.nfs4.client import ALL_ONES, Nfs4Client, Nfs4Failed, Ops, u32
from acmenfs.nfs4.const import Nfs4Stat as S
from acmenfs.nfs4.state import StateManager


def client_for(v4, minor: int, owner: bytes | None = None) -> Nfs4Client:
    client = Nfs4Client(lambda args: v4.body(args), minor, owner=owner)
    client.establish()
    return client


def last_status(client: Nfs4Client, *ops: bytes) -> int:
    reply = client.call(*ops, check=False)
    return reply.results[-1].status


def test_40_lock_owner_seqid_replay_and_errors(v4):
    c = client_for(v4, 0)
    fh, sid = c.open("/e/l40", create="unchecked")
    lock_sid = c.lock(fh, sid, 0, 1)                                # lock owner seqid 0 used
    again = Ops.lock_existing(2, 5, 1, lock_sid, 1)
    first = c.raw([Ops.putfh(fh), again])
    assert first.status == S.OK
    assert c.raw([Ops.putfh(fh), again]).raw == first.raw          # same lock seqid: replayed
    newer = first.last.value
    assert last_status(c, Ops.putfh(fh), Ops.lock_existing(2, 9, 1, newer, 7)) == S.BAD_SEQID
    assert last_status(c, Ops.putfh(fh), Ops.lock_existing(2, 9, 1, lock_sid, 2)) == S.OLD_STATEID
    # a second open_to_lock_owner for a lock owner that already has this file's stateid
    op = Ops.lock_new(2, 20, 1, c.open_seqid, sid, 0, c.clientid, b"lock-owner-1")
    assert last_status(c, Ops.putfh(fh), op) == S.BAD_SEQID
    c.open_seqid += 1
    op = Ops.lock_new(2, 20, 1, c.open_seqid, sid, 0, c.clientid + 1, b"other")
    assert last_status(c, Ops.putfh(fh), op) == S.STALE_CLIENTID   # not the open's client


def test_locku_and_lockt_errors(v4):
    c = client_for(v4, 1)
    fh, sid = c.open("/e/lu", create="unchecked")
    lock_sid = c.lock(fh, sid, 10, 10)
    assert last_status(c, Ops.putfh(fh), Ops.locku(2, 0, lock_sid, 5, 0)) == S.INVAL
    assert last_status(c, Ops.putfh(fh), Ops.locku(2, 0, lock_sid, 3, ALL_ONES - 1)) == S.INVAL
    assert last_status(c, Ops.putfh(fh), Ops.locku(9, 0, lock_sid, 0, 1)) == S.INVAL
    assert last_status(c, Ops.putfh(fh), Ops.locku(2, 0, sid, 0, 1)) == S.BAD_STATEID   # open stateid
    assert last_status(c, Ops.putfh(fh), Ops.lockt(1, 0, 0, c.clientid, b"x")) == S.INVAL
    assert last_status(c, Ops.lockt(1, 0, 1, c.clientid, b"x")) == S.NOFILEHANDLE
    other_fh, _ = c.open("/e/lu2", create="unchecked")
    assert last_status(c, Ops.putfh(other_fh), Ops.locku(2, 0, lock_sid, 10, 1)) == S.BAD_STATEID
    split = c.unlock(fh, lock_sid, 12, 2)                           # 10-11 and 14-19 remain
    d = client_for(v4, 1)
    _, sid_d = d.open("/e/lu")
    assert d.test_lock(fh, 12, 2).last.status == S.OK
    denied = d.test_lock(fh, 11, 3).last
    assert denied.status == S.DENIED and (denied.value["offset"], denied.value["length"]) == (10, 2)
    assert split[:4] == b"\0\0\0\2"


def test_lockt_in_grace(v4, tmp_path):
    c = client_for(v4, 1, owner=b"had-state")
    fh, _ = c.open("/e/lg", create="unchecked")
    v4.nfs4.state = StateManager(records_dir=v4.server.state.state_dir / "nfs4", boot_id=99)
    n = client_for(v4, 1)
    assert n.test_lock(fh, 0, 1).last.status == S.GRACE


def test_open_argument_errors(v4):
    c = client_for(v4, 1)
    c.open("/e/args", create="unchecked")
    for access, deny in ((0, 0), (1, 4), (4, 0)):
        with pytest.raises(Nfs4Failed) as info:
            c.open("/e/args", access=access, deny=deny)
        assert info.value.status == S.INVAL, (access, deny)
    fh = c.fh_of("/e/args")
    deleg_cur = u32(18, 0, 1, 0) + b"\0" * 8 + u32(1) + b"o\0\0\0" + u32(0) + u32(2) + b"\0" * 16 + u32(1) + b"x\0\0\0"
    assert last_status(c, *c.lookup_ops("/e"), deleg_cur) == S.NOTSUPP
    prev_deleg = u32(18, 0, 1, 0) + b"\0" * 8 + u32(1) + b"o\0\0\0" + u32(0) + u32(1, 1)
    assert last_status(c, Ops.putfh(fh), prev_deleg) == S.NO_GRACE         # not in grace at all
    assert last_status(c, *c.lookup_ops("/e"), Ops.open(0, 0, b"o", "nope")) == S.NOENT
    assert last_status(c, *c.lookup_ops("/e"), Ops.open(0, 0, b"o", "args", create="guarded")) == S.EXIST
    reply = c.call(Ops.putfh(fh), Ops.open(0, 0, b"o", claim="fh"), Ops.getfh())
    assert reply.last.value == fh


def test_exchange_id_and_bind_conn_errors(v4):
    c = Nfs4Client(lambda args: v4.body(args), 1)
    mach_cred = u32(42) + b"v" * 8 + u32(2) + b"ab\0\0" + u32(0, 1) + u32(0) + u32(0) + u32(0)
    assert c.raw([mach_cred]).status == S.NOTSUPP
    assert c.raw([Ops.exchange_id(b"v" * 8, b"")]).status == S.INVAL
    c.establish()
    assert c.raw([Ops.bind_conn(c.sessionid, direction=2)]).status == S.INVAL
    assert c.raw([Ops.bind_conn(c.sessionid, direction=7)]).last.value[1] == 1   # FORE only


@pytest.mark.parametrize("minor, how", [(0, "exclusive"), (1, "exclusive41"), (1, "exclusive")])
def test_open_exclusive_create_retry(v4, export_dir, minor, how):
    c = client_for(v4, minor)
    name = f"excl-{minor}-{how}"
    first = c.call(*c.lookup_ops("/e"), Ops.open(c.open_seqid, c.clientid, b"x", name, create=how,
                                                 verifier=b"verf0001"), Ops.getfh())
    c.open_seqid += 1
    retry = c.call(*c.lookup_ops("/e"), Ops.open(c.open_seqid, c.clientid, b"x", name, create=how,
                                                 verifier=b"verf0001"), Ops.getfh())
    c.open_seqid += 1
    assert first.last.value == retry.last.value and (export_dir / name).exists()
    other = Ops.open(c.open_seqid, c.clientid, b"x", name, create=how, verifier=b"verf0002")
    assert last_status(c, *c.lookup_ops("/e"), other) == S.EXIST


def test_exclusive41_refused_in_40(v4):
    c = client_for(v4, 0)
    op = Ops.open(0, c.clientid, b"x", "e41", create="exclusive41")
    assert last_status(c, *c.lookup_ops("/e"), op) == S.BADXDR


def test_locks_on_directories_and_special_files(v4, export_dir):
    import os
    os.mkfifo(export_dir / "fifo")
    c = client_for(v4, 1)
    _, sid = c.open("/e/reg", create="unchecked")
    assert last_status(c, *c.lookup_ops("/e"), Ops.lockt(2, 0, 1, c.clientid, b"o")) == S.ISDIR
    assert last_status(c, *c.lookup_ops("/e/fifo"), Ops.lockt(2, 0, 1, c.clientid, b"o")) == S.INVAL
    op = Ops.lock_new(2, 0, 1, 0, sid, 0, c.clientid, b"o")
    assert last_status(c, *c.lookup_ops("/e"), op) == S.ISDIR
