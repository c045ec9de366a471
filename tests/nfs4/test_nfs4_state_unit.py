"""StateManager (acmenfs/nfs4/state.py), sans-IO with an injected clock: 4.0 client IDs,
leases, open owners and seqid replay, share reservations, stateids, check_io, locks, grace."""

from __future__ import annotations

import struct

import pytest
from nfs4_state_helpers import Clock, status

from acmenfs.nfs4.const import Nfs4Stat as S
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.locks import MAX_OFFSET
from acmenfs.nfs4.state import ANONYMOUS, BYPASS, LockState, StateManager

P1, P2 = ("sys", 0, 0), ("sys", 1000, 1000)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sm(clock, tmp_path):
    return StateManager(lease_seconds=90, grace_seconds=0, records_dir=tmp_path / "nfs4", clock=clock)


def confirmed(sm, owner=b"host-a", verifier=b"v" * 8, principal=P1) -> int:
    clientid, confirm = sm.setclientid(owner, verifier, principal)
    sm.setclientid_confirm(clientid, confirm, principal)
    return clientid


def opened(sm, clientid, file_key="f", access=3, deny=0, owner=b"oo"):
    oo = sm.open_owner(clientid, owner)
    assert sm.check_seqid(oo, 1 if oo.seqid is None else oo.seqid + 1, "OPEN") is None
    state = sm.open(oo, file_key, access, deny)
    sm.record_reply(oo, 1 if oo.seqid is None else oo.seqid + 1, "OPEN", 0, b"r")
    sm.open_confirm(state)
    return oo, state


def stateid_with(state, seqid):
    return struct.pack(">I", seqid) + state.other


# ----- SETCLIENTID / SETCLIENTID_CONFIRM / RENEW --------------------------------------------
def test_setclientid_confirm_and_retry(sm):
    clientid, confirm = sm.setclientid(b"h", b"v" * 8, P1)
    assert status(sm.renew, clientid) == S.STALE_CLIENTID          # unconfirmed
    sm.setclientid_confirm(clientid, confirm, P1)
    sm.setclientid_confirm(clientid, confirm, P1)                  # retry of the confirm: OK
    sm.renew(clientid)
    assert status(sm.setclientid_confirm, clientid, b"x" * 8, P1) == S.STALE_CLIENTID
    assert status(sm.setclientid_confirm, 12345, confirm, P1) == S.STALE_CLIENTID
    assert status(sm.renew, 12345) == S.STALE_CLIENTID


def test_setclientid_callback_update_keeps_clientid_and_state(sm):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)
    same, confirm = sm.setclientid(b"host-a", b"v" * 8, P1)        # same verifier: update
    assert same == clientid
    sm.setclientid_confirm(clientid, confirm, P1)
    assert sm.find_state(state.stateid()) is state


def test_setclientid_new_verifier_replaces_client_on_confirm(sm):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)
    new, confirm = sm.setclientid(b"host-a", b"w" * 8, P1)         # client rebooted
    assert new != clientid
    assert sm.find_state(state.stateid()) is state                 # old state lives until confirm
    sm.setclientid_confirm(new, confirm, P1)
    assert status(sm.find_state, state.stateid()) == S.EXPIRED
    assert status(sm.renew, clientid) == S.EXPIRED


def test_setclientid_other_principal(sm):
    clientid = confirmed(sm)
    opened(sm, clientid)
    assert status(sm.setclientid, b"host-a", b"v" * 8, P2) == S.CLID_INUSE
    other = confirmed(sm, owner=b"host-b")                          # no state: allowed
    new, confirm = sm.setclientid(b"host-b", b"v" * 8, P2)
    assert new != other
    assert status(sm.setclientid_confirm, new, confirm, P1) == S.CLID_INUSE


def test_unconfirmed_record_replaced(sm):
    first, confirm1 = sm.setclientid(b"h", b"v" * 8, P1)
    second, confirm2 = sm.setclientid(b"h", b"w" * 8, P1)
    assert status(sm.setclientid_confirm, first, confirm1, P1) == S.STALE_CLIENTID
    sm.setclientid_confirm(second, confirm2, P1)


# ----- leases -----------------------------------------------------------------------------
def test_lease_expiry_frees_idle_client(sm, clock):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)
    clock.now += 60
    sm.renew(clientid)
    clock.now += 60
    assert sm.expire_idle() == []                                  # renewed 60 s ago
    clock.now += 31
    assert sm.expire_idle() == [clientid]
    assert status(sm.renew, clientid) == S.EXPIRED
    assert status(sm.find_state, state.stateid()) == S.EXPIRED
    assert not sm.file_opens                                       # share reservation gone


def test_expired_lease_found_lazily(sm, clock):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)
    clock.now += 91
    assert status(sm.check_io, state.stateid(), "f", False) == S.EXPIRED


# ----- open owners, seqids, replay (RFC 7530 §9.1.7) ---------------------------------------
def test_open_confirm_and_seqid_replay(sm):
    clientid = confirmed(sm)
    oo = sm.open_owner(clientid, b"oo")
    assert sm.check_seqid(oo, 7, "OPEN") is None                   # new owner: any seqid
    state = sm.open(oo, "f", 1, 0)
    sm.record_reply(oo, 7, "OPEN", 0, b"open-reply")
    assert sm.check_seqid(oo, 7, "OPEN") == (0, b"open-reply")     # retransmission
    assert status(sm.check_seqid, oo, 7, "CLOSE") == S.BAD_SEQID
    assert status(sm.check_seqid, oo, 9, "OPEN_CONFIRM") == S.BAD_SEQID
    assert sm.check_seqid(oo, 8, "OPEN_CONFIRM") is None
    assert sm.open_confirm(state) == stateid_with(state, 2)
    assert status(sm.open_confirm, state) == S.BAD_STATEID         # already confirmed


def test_seqid_not_bumped_by_some_errors(sm):
    clientid = confirmed(sm)
    oo, _ = opened(sm, clientid)
    last = oo.seqid
    sm.record_reply(oo, last + 1, "CLOSE", S.BAD_STATEID, b"")
    assert oo.seqid == last
    sm.record_reply(oo, last + 1, "CLOSE", S.OLD_STATEID, b"")
    assert oo.seqid == last + 1


def test_unconfirmed_owner_taken_as_new(sm):
    clientid = confirmed(sm)
    oo = sm.open_owner(clientid, b"oo")
    sm.check_seqid(oo, 1, "OPEN")
    first = sm.open(oo, "f", 1, 0)
    sm.record_reply(oo, 1, "OPEN", 0, b"")
    assert sm.check_seqid(oo, 50, "OPEN") is None                  # not confirmed: restart
    assert first.other not in sm.states


def test_seqid_wraps(sm):
    clientid = confirmed(sm)
    oo, _ = opened(sm, clientid)
    oo.seqid = 0xFFFFFFFF
    assert sm.check_seqid(oo, 0, "CLOSE") is None


# ----- share reservations, OPEN upgrade, OPEN_DOWNGRADE, CLOSE ---------------------------------
def test_share_denied_and_upgrade(sm):
    a = confirmed(sm, b"a")
    b = confirmed(sm, b"b")
    oo_a, state = opened(sm, a, access=1, deny=2)                  # READ, DENY_WRITE
    oo_b = sm.open_owner(b, b"ob")
    assert status(sm.open, oo_b, "f", 2, 0) == S.SHARE_DENIED      # wants WRITE
    assert status(sm.open, oo_b, "f", 1, 1) == S.SHARE_DENIED      # denies a's READ
    sm.open(oo_b, "f", 1, 0)                                       # READ, DENY_NONE: fine
    upgraded = sm.open(oo_a, "f", 2, 0)                            # same owner: upgrade
    assert upgraded is state and state.access == 3 and state.seqid == 3


def test_open_downgrade_rules(sm):
    clientid = confirmed(sm)
    oo, state = opened(sm, clientid, access=1, deny=0)
    sm.open(oo, "f", 3, 2)
    assert status(sm.open_downgrade, state, 2, 0) == S.INVAL        # WRITE alone never asked
    sid = sm.open_downgrade(state, 1, 0)
    assert struct.unpack(">I", sid[:4])[0] == state.seqid and state.access == 1
    assert status(sm.open_downgrade, state, 3, 0) == S.INVAL        # no upgrade by downgrade


def test_close_and_stateid_seqids(sm):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)                                 # seqid 2 after confirm
    assert status(sm.find_state, stateid_with(state, 1)) == S.OLD_STATEID
    assert status(sm.find_state, stateid_with(state, 3)) == S.BAD_STATEID
    assert status(sm.find_state, state.stateid(), "other-file") == S.BAD_STATEID
    assert status(sm.find_state, state.stateid(), None, LockState) == S.BAD_STATEID
    closed = sm.close(state)
    assert closed == stateid_with(state, 3)
    assert status(sm.find_state, closed) == S.BAD_STATEID
    assert status(sm.find_state, b"\0\0\0\1" + b"\x99" * 12) == S.BAD_STATEID    # garbage


def test_stateid_of_previous_instance_is_stale(clock, tmp_path):
    sm = StateManager(grace_seconds=0, records_dir=tmp_path, clock=clock, boot_id=5)
    _, state = opened(sm, confirmed(sm))
    sm2 = StateManager(grace_seconds=0, records_dir=tmp_path, clock=clock, boot_id=6)
    assert status(sm2.find_state, state.stateid()) == S.STALE_STATEID
    assert status(sm2.find_state, state.stateid(), minorversion=1) == S.BAD_STATEID


# ----- check_io -----------------------------------------------------------------------------
def test_check_io(sm):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid, access=1, deny=2)               # READ, DENY_WRITE
    sm.check_io(state.stateid(), "f", False)
    assert status(sm.check_io, state.stateid(), "f", True) == S.OPENMODE
    sm.check_io(ANONYMOUS, "f", False)
    assert status(sm.check_io, ANONYMOUS, "f", True) == S.LOCKED   # denied by DENY_WRITE
    assert status(sm.check_io, BYPASS, "f", True) == S.BAD_STATEID  # bypass: READ only
    sm.check_io(BYPASS, "f", False)
    sm.check_io(ANONYMOUS, "g", True)


# ----- locks --------------------------------------------------------------------------------
def lock_state(sm, clientid, open_state, owner=b"lo"):
    lo = sm.lock_owner(sm.client_for(clientid), owner)
    return sm.lock_state_for(lo, open_state)


def test_lock_denied_carries_conflict_until_unlock(sm):
    a, b = confirmed(sm, b"a"), confirmed(sm, b"b")
    _, open_a = opened(sm, a)
    _, open_b = opened(sm, b)
    la, lb = lock_state(sm, a, open_a), lock_state(sm, b, open_b)
    assert sm.lock(la, True, 100, 100) == stateid_with(la, 1)
    with pytest.raises(Nfs4Error) as info:
        sm.lock(lb, False, 0, MAX_OFFSET)
    assert info.value.status == S.DENIED
    assert info.value.conflict.owner is la.owner and info.value.conflict.start == 100
    assert status(sm.lockt, "f", object(), 100, 100, False) == S.DENIED
    sm.lockt("f", la.owner, 100, 100, True)                         # own lock: no conflict
    assert status(sm.close, open_a) == S.LOCKS_HELD
    assert status(sm.release_lockowner, a, b"lo") == S.LOCKS_HELD
    sm.locku(la, 100, 100)
    assert la.seqid == 2
    sm.lock(lb, False, 0, MAX_OFFSET)
    sm.release_lockowner(a, b"lo")
    assert la.other not in sm.states


def test_lock_denied_until_holder_lease_expires(sm, clock):
    a, b = confirmed(sm, b"a"), confirmed(sm, b"b")
    _, open_a = opened(sm, a)
    _, open_b = opened(sm, b)
    la, lb = lock_state(sm, a, open_a), lock_state(sm, b, open_b)
    sm.lock(la, True, 0, 9)
    clock.now += 80
    sm.renew(b)
    assert status(sm.lock, lb, True, 5, 5) == S.DENIED
    clock.now += 11                                                 # a: 91 s without renewal
    sm.lock(lb, True, 5, 5)
    assert status(sm.renew, a) == S.EXPIRED


def test_write_lock_needs_write_open(sm):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid, access=1)
    assert status(sm.lock, lock_state(sm, clientid, state), True, 0, 0) == S.OPENMODE


def test_lock_stateid_for_io_and_close_frees(sm):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)
    ls = lock_state(sm, clientid, state)
    sid = sm.lock(ls, False, 0, 0)
    sm.check_io(sid, "f", True)
    sm.locku(ls, 0, 0)
    sm.close(state)
    assert ls.other not in sm.states


# ----- grace and records ----------------------------------------------------------------------
def test_grace_reclaim_rules_across_restart(clock, tmp_path):
    records = tmp_path / "nfs4"
    sm = StateManager(lease_seconds=90, grace_seconds=0, records_dir=records, clock=clock, boot_id=1)
    clientid = confirmed(sm, b"old-client")
    opened(sm, clientid)
    assert len(list(records.glob("*.client"))) == 1
    sm2 = StateManager(lease_seconds=90, records_dir=records, clock=clock, boot_id=2)
    assert sm2.in_grace()
    assert status(sm2.renew, clientid) == S.STALE_CLIENTID
    old = sm2.client_for(confirmed(sm2, b"old-client"))
    new = sm2.client_for(confirmed(sm2, b"new-client"))
    sm2.check_grace(old, reclaim=True)
    assert status(sm2.check_grace, new, True) == S.NO_GRACE          # held nothing before
    assert status(sm2.check_grace, old, False) == S.GRACE            # new opens wait
    clock.now += 91
    assert not sm2.in_grace()
    assert status(sm2.check_grace, old, True) == S.NO_GRACE
    sm2.check_grace(new, reclaim=False)


def test_grace_ends_when_every_previous_client_completed(clock, tmp_path):
    records = tmp_path / "nfs4"
    sm = StateManager(grace_seconds=0, records_dir=records, clock=clock, boot_id=1)
    opened(sm, confirmed(sm, b"c"))
    sm2 = StateManager(records_dir=records, clock=clock, boot_id=2)
    assert sm2.in_grace()
    sm2.grace.complete(b"c")
    assert not sm2.in_grace()


def test_record_of_expired_client_removed(sm, clock, tmp_path):
    opened(sm, confirmed(sm))
    assert list((tmp_path / "nfs4").glob("*.client"))
    clock.now += 91
    sm.expire_idle()
    sm.records.flush()
    assert not list((tmp_path / "nfs4").glob("*.client"))


def test_previous_client_that_never_returns_loses_record(clock, tmp_path):
    records = tmp_path / "nfs4"
    sm = StateManager(grace_seconds=0, records_dir=records, clock=clock, boot_id=1)
    opened(sm, confirmed(sm, b"gone"))
    StateManager(grace_seconds=10, records_dir=records, clock=clock, boot_id=2)
    sm3 = StateManager(grace_seconds=10, records_dir=records, clock=clock, boot_id=3)
    clock.now += 11
    assert not sm3.in_grace()
    sm3.records.flush()
    assert not list(records.glob("*.client"))


def test_state_freed_between_lookup_and_use(sm, clock):
    clientid = confirmed(sm)
    _, state = opened(sm, clientid)
    ls = lock_state(sm, clientid, state)
    found = sm.find_state(state.stateid())
    clock.now += 91
    sm.expire_idle()
    assert status(sm.lock, ls, True, 0, 0) == S.EXPIRED
    assert status(sm.close, found) == S.EXPIRED
    assert not sm.locks.files


def test_threads_contend_for_one_range(sm):
    import threading

    holders: list[int] = []
    errors: list[BaseException] = []
    clients = [confirmed(sm, owner=f"t{i}".encode()) for i in range(8)]

    def worker(clientid: int) -> None:
        try:
            _, state = opened(sm, clientid)
            ls = lock_state(sm, clientid, state)
            for _ in range(200):
                try:
                    sm.lock(ls, True, 0, 0)
                except Nfs4Error as exc:
                    assert exc.status == S.DENIED
                    continue
                holders.append(clientid)
                assert len(sm.locks.get("f").locks) == 1          # nobody else holds byte 0
                sm.locku(ls, 0, 0)
            sm.close(state)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and holders
    assert not sm.locks.files and not sm.file_opens and not sm.states


def test_client_records_durable_files_in_order(tmp_path):
    from acmenfs.nfs4.grace import ClientRecords, record_name

    (tmp_path / "leftover.tmp").write_bytes(b"half")
    records = ClientRecords(tmp_path)
    assert not (tmp_path / "leftover.tmp").exists()                # a crash's half-written file
    records.add(b"owner-1")                                         # on disk when add returns
    assert (tmp_path / record_name(b"owner-1")).read_bytes() == b"owner-1"
    records.remove(b"owner-1")
    records.add(b"owner-1")                                         # remove then add: kept
    records.remove(b"owner-2")                                      # unknown: nothing
    records.flush()
    assert (tmp_path / record_name(b"owner-1")).exists()
    records.remove(b"owner-1")
    records.flush()
    assert not list(tmp_path.glob("*.client"))
    assert ClientRecords(tmp_path).previous == frozenset()
    assert ClientRecords(None).previous == frozenset()


def test_test_stateid_codes(sm, clock):
    a, b = confirmed(sm, b"a"), confirmed(sm, b"b")
    _, state = opened(sm, a)
    _, other = opened(sm, b)
    client = sm.client_for(a)
    assert sm.test_stateid(client, state.stateid()) == S.OK
    assert sm.test_stateid(client, stateid_with(state, 1)) == S.OLD_STATEID
    assert sm.test_stateid(client, other.stateid()) == S.BAD_STATEID    # another client's
    clock.now += 80
    sm.renew(a)
    clock.now += 11
    sm.expire_idle()
    assert sm.test_stateid(client, other.stateid()) == S.EXPIRED
