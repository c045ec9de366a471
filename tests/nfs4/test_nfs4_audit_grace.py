"""Audit of issue #13, restart edge conditions of RFC 8881 §8.4.2.1 through the real dispatcher
(``Sans4``; each "restart" is a new StateManager on the same records directory, with an injected
clock): a client whose server restarted again during grace may still reclaim in the next
instance; a client that let a whole grace period pass without reclaiming may not reclaim in the
next one (another client may have taken its locks in between), and its record is gone."""

from __future__ import annotations

import pytest
from nfs4_state_helpers import Clock

from acmenfs.nfs4.client import Nfs4Client, Nfs4Failed, Ops
from acmenfs.nfs4.const import Nfs4Stat as S
from acmenfs.nfs4.state import StateManager

LEASE = 30


def restart(v4, clock, records, boot: int) -> None:
    v4.nfs4.state.records.flush()
    v4.nfs4.state = StateManager(lease_seconds=LEASE, records_dir=records, clock=clock, boot_id=boot)


def client(v4, owner: bytes, reclaim_complete: bool = False) -> Nfs4Client:
    c = Nfs4Client(lambda args: v4.body(args), 1, owner=owner)
    c.establish(reclaim_complete=reclaim_complete)
    return c


def status_of(call) -> int:
    try:
        call()
    except Nfs4Failed as exc:
        return exc.status
    return S.OK


@pytest.fixture
def booted(v4, tmp_path):
    """Boot 1: host-a opens /e/disk and locks bytes 0-9; returns (clock, records dir)."""
    clock, records = Clock(), tmp_path / "nfs4"
    v4.nfs4.state = StateManager(lease_seconds=LEASE, grace_seconds=0, records_dir=records, clock=clock, boot_id=1)
    a = client(v4, b"host-a", reclaim_complete=True)
    fh, sid = a.open("/e/disk", create="unchecked")
    a.lock(fh, sid, 0, 10)
    return clock, records


def test_a_restart_during_grace_keeps_the_right_to_reclaim(v4, booted):
    clock, records = booted
    restart(v4, clock, records, boot=2)
    clock.now += LEASE / 2                                  # host-a not back yet; restart again
    restart(v4, clock, records, boot=3)
    a = client(v4, b"host-a")
    fh, sid = a.open("/e/disk", reclaim=True)
    a.lock(fh, sid, 0, 10, reclaim=True)
    a.call(Ops.reclaim_complete())


def test_a_client_that_missed_a_whole_grace_period_cannot_reclaim_in_the_next(v4, booted):
    clock, records = booted
    restart(v4, clock, records, boot=2)
    b = client(v4, b"host-b", reclaim_complete=True)
    for _ in range(2):                                      # grace runs out without host-a
        clock.now += LEASE / 2 + 1
        b.renew()
    fh, sid_b = b.open("/e/disk")
    lock_b = b.lock(fh, sid_b, 0, 10, owner=b"b-owner")     # host-a's old range, now b's
    b.unlock(fh, lock_b, 0, 10)
    b.close_file(fh, sid_b)
    restart(v4, clock, records, boot=3)
    a = client(v4, b"host-a")
    assert status_of(lambda: a.open("/e/disk", reclaim=True)) == S.NO_GRACE
    assert b"host-a" not in v4.nfs4.state.records.previous
