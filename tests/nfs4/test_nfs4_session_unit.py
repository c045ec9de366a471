"""4.1 client IDs and sessions (acmenfs/nfs4/sessions.py), sans-IO: EXCHANGE_ID cases,
CREATE_SESSION replay, SEQUENCE slots and reply cache, DESTROY_*, RECLAIM_COMPLETE."""

from __future__ import annotations

import pytest
from nfs4_state_helpers import Clock, status

from acmenfs.nfs4.const import Nfs4Stat as S
from acmenfs.nfs4.errors import SlotReplay
from acmenfs.nfs4.sessions import (EXCHGID4_FLAG_CONFIRMED_R, EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
                                   EXCHGID4_FLAG_USE_NON_PNFS, ChannelAttrs)
from acmenfs.nfs4.state import StateManager

P1, P2 = ("sys", 0, 0), ("sys", 1000, 1000)
ATTRS = ChannelAttrs(0, 1 << 20, 1 << 20, 4096, 16, 8)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sm(clock, tmp_path):
    return StateManager(lease_seconds=30, grace_seconds=0, records_dir=tmp_path, clock=clock)


def encode(session, flags):
    return b"resok:" + session.sessionid


def session_for(sm, owner=b"c41", principal=P1):
    client, seq, _ = sm.sessions.exchange_id(owner, b"v" * 8, principal, 0)
    body = sm.sessions.create_session(client.clientid, seq, principal, 0, ATTRS, ATTRS, encode)
    return client, sm.sessions.lookup(body[6:])


def test_exchange_id_new_and_same_client(sm):
    client, seq, flags = sm.sessions.exchange_id(b"c", b"v" * 8, P1, 0)
    assert seq == 1 and flags == EXCHGID4_FLAG_USE_NON_PNFS
    again, _, _ = sm.sessions.exchange_id(b"c", b"w" * 8, P1, 0)       # unconfirmed: replaced
    assert again.clientid != client.clientid and client.clientid not in sm.clients
    sm.sessions.create_session(again.clientid, 1, P1, 0, ATTRS, ATTRS, encode)
    same, seq, flags = sm.sessions.exchange_id(b"c", b"w" * 8, P1, 0)
    assert same is again and seq == 2 and flags & EXCHGID4_FLAG_CONFIRMED_R


def test_exchange_id_client_restart_replaces_on_create_session(sm):
    old, session = session_for(sm)
    new, seq, _ = sm.sessions.exchange_id(b"c41", b"w" * 8, P1, 0)
    assert new is not old and old.clientid in sm.clients
    sm.sessions.create_session(new.clientid, seq, P1, 0, ATTRS, ATTRS, encode)
    assert old.clientid not in sm.clients
    assert status(sm.sessions.sequence, session.sessionid, 1, 0, 0) == S.BADSESSION


def test_exchange_id_update_and_errors(sm):
    exchange = sm.sessions.exchange_id
    upd = EXCHGID4_FLAG_UPD_CONFIRMED_REC_A
    assert status(exchange, b"c41", b"v" * 8, P1, upd) == S.NOENT
    client, _ = session_for(sm)
    assert exchange(b"c41", b"v" * 8, P1, upd)[0] is client
    assert status(exchange, b"c41", b"w" * 8, P1, upd) == S.NOT_SAME
    assert status(exchange, b"c41", b"v" * 8, P2, upd) == S.PERM
    assert status(exchange, b"c41", b"v" * 8, P1, EXCHGID4_FLAG_CONFIRMED_R) == S.INVAL
    assert status(exchange, b"c41", b"v" * 8, P1, 0x8) == S.INVAL


def test_exchange_id_other_principal_with_state(sm):
    client, _ = session_for(sm)
    client.states_held = 1
    assert status(sm.sessions.exchange_id, b"c41", b"v" * 8, P2, 0) == S.CLID_INUSE


def test_create_session_replay_and_misordered(sm):
    client, seq, _ = sm.sessions.exchange_id(b"c", b"v" * 8, P1, 0)
    create = sm.sessions.create_session
    assert status(create, client.clientid, seq + 1, P1, 0, ATTRS, ATTRS, encode) == S.SEQ_MISORDERED
    assert status(create, client.clientid, seq, P2, 0, ATTRS, ATTRS, encode) == S.CLID_INUSE
    first = create(client.clientid, seq, P1, 0, ATTRS, ATTRS, encode)
    assert create(client.clientid, seq, P1, 0, ATTRS, ATTRS, encode) == first   # replay
    assert len(client.sessions) == 1
    second = create(client.clientid, seq + 1, P1, 0, ATTRS, ATTRS, encode)
    assert second != first and len(client.sessions) == 2
    assert status(create, 0x1234, 1, P1, 0, ATTRS, ATTRS, encode) == S.STALE_CLIENTID


def test_channel_attrs_negotiated(sm):
    _, session = session_for(sm)
    assert session.fore.maxrequests == 8 and len(session.slots) == 8
    assert session.fore.maxresponsesize_cached == 4096 and session.fore.headerpadsize == 0
    big = ChannelAttrs(99, 1 << 30, 1 << 30, 1 << 30, 10**6, 10**6).negotiated()
    assert big.maxrequests == 64 and big.maxoperations == 128 and big.headerpadsize == 0


def test_sequence_slot_reply_cache(sm):
    _, session = session_for(sm)
    sid = session.sessionid
    result = sm.sessions.sequence(sid, 1, 0, 0)
    assert result.slot.slotid == 0 and result.highest_slotid == 7 and result.status_flags == 0
    assert status(sm.sessions.sequence, sid, 1, 0, 0) == S.DELAY        # still in progress
    sm.slot_done(result.slot, b"reply-1")
    with pytest.raises(SlotReplay) as info:
        sm.sessions.sequence(sid, 1, 0, 0)
    assert info.value.reply == b"reply-1"
    assert status(sm.sessions.sequence, sid, 3, 0, 0) == S.SEQ_MISORDERED
    assert status(sm.sessions.sequence, sid, 0, 0, 0) == S.SEQ_MISORDERED
    assert status(sm.sessions.sequence, sid, 1, 8, 0) == S.BADSLOT
    assert status(sm.sessions.sequence, b"x" * 16, 1, 0, 0) == S.BADSESSION
    sm.slot_done(sm.sessions.sequence(sid, 2, 0, 0).slot, b"reply-2")
    sm.slot_done(sm.sessions.sequence(sid, 1, 5, 0).slot, b"other slot")  # slots independent


def test_sequence_uncached_reply(sm):
    _, session = session_for(sm)
    result = sm.sessions.sequence(session.sessionid, 1, 0, 0)
    sm.slot_done(result.slot, b"x" * (4 << 20))
    assert status(sm.sessions.sequence, session.sessionid, 1, 0, 0) == S.RETRY_UNCACHED_REP


def test_sequence_renews_and_expiry(sm, clock):
    client, session = session_for(sm)
    clock.now += 20
    sm.sessions.sequence(session.sessionid, 1, 0, 0)
    clock.now += 20
    assert sm.expire_idle() == []
    clock.now += 11
    assert sm.expire_idle() == [client.clientid]
    assert status(sm.sessions.sequence, session.sessionid, 2, 0, 0) == S.BADSESSION


def test_destroy_session_and_clientid(sm):
    client, session = session_for(sm)
    assert status(sm.sessions.destroy_clientid, client.clientid) == S.CLIENTID_BUSY
    sm.sessions.destroy_session(session.sessionid)
    assert status(sm.sessions.destroy_session, session.sessionid) == S.BADSESSION
    sm.sessions.destroy_clientid(client.clientid)
    assert status(sm.sessions.destroy_clientid, client.clientid) == S.STALE_CLIENTID


def test_bind_conn_to_session(sm):
    _, session = session_for(sm)
    assert sm.sessions.bind_conn(session.sessionid) is session
    assert status(sm.sessions.bind_conn, b"y" * 16) == S.BADSESSION


def test_reclaim_complete_and_41_grace_rule(sm):
    client, _ = session_for(sm)
    assert status(sm.check_grace, client, False) == S.GRACE           # before RECLAIM_COMPLETE
    sm.sessions.reclaim_complete(client, one_fs=True)                  # per-fs: accepted, no effect
    sm.sessions.reclaim_complete(client, one_fs=False)
    sm.check_grace(client, False)
    assert status(sm.check_grace, client, True) == S.NO_GRACE
    assert status(sm.sessions.reclaim_complete, client, False) == S.COMPLETE_ALREADY


def test_same_owner_moving_between_40_and_41(sm):
    clientid, confirm = sm.setclientid(b"both", b"v" * 8, P1)
    sm.setclientid_confirm(clientid, confirm, P1)
    client, seq, flags = sm.sessions.exchange_id(b"both", b"v" * 8, P1, 0)
    assert client.clientid != clientid and not flags & EXCHGID4_FLAG_CONFIRMED_R
    sm.sessions.create_session(client.clientid, seq, P1, 0, ATTRS, ATTRS, encode)
    assert clientid not in sm.clients                                  # the 4.0 record replaced
    again, confirm = sm.setclientid(b"both", b"v" * 8, P1)
    assert again != client.clientid
    sm.setclientid_confirm(again, confirm, P1)
    assert client.clientid not in sm.clients


def test_sequence_false_retry(sm):
    _, session = session_for(sm)
    sm.slot_done(sm.sessions.sequence(session.sessionid, 1, 0, 0, digest=111).slot, b"r")
    assert status(sm.sessions.sequence, session.sessionid, 1, 0, 0, 222) == S.SEQ_FALSE_RETRY
    with pytest.raises(SlotReplay):
        sm.sessions.sequence(session.sessionid, 1, 0, 0, 111)
