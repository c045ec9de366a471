"""Audit of issue #13, 4.0 leases through the real dispatcher (``Sans4``, injected clock): RENEW
(or any op naming the client's state) keeps a lease alive past its nominal end, a silent 4.0
client's locks are freed once its lease runs out and its client ID is gone (RFC 7530 §9.5,
§16.29); and the 4.0-only operations are NOTSUPP in a 4.1 COMPOUND (RFC 8881 §17)."""

from __future__ import annotations

import pytest
from nfs4_state_helpers import Clock

from acmenfs.nfs4.client import Nfs4Client, Nfs4Failed, Ops
from acmenfs.nfs4.const import Nfs4Stat as S
from acmenfs.nfs4.state import StateManager

LEASE = 30


@pytest.fixture
def clock(v4, tmp_path):
    clock = Clock()
    v4.nfs4.state = StateManager(lease_seconds=LEASE, grace_seconds=0, records_dir=tmp_path / "nfs4", clock=clock)
    return clock


def client_for(v4, minor: int, owner: bytes) -> Nfs4Client:
    client = Nfs4Client(lambda args: v4.body(args), minor, owner=owner)
    client.establish()
    return client


def lock_status(client: Nfs4Client, fh: bytes, sid: bytes, owner: bytes) -> int:
    try:
        client.lock(fh, sid, 0, 1, owner=owner)
    except Nfs4Failed as exc:
        return exc.status
    return S.OK


def test_40_renew_keeps_the_lease_and_silence_frees_the_locks(v4, clock):
    a, b = client_for(v4, 0, b"holder"), client_for(v4, 0, b"waiter")
    fh, sid_a = a.open("/e/lease40", create="unchecked")
    _, sid_b = b.open("/e/lease40")
    a.lock(fh, sid_a, 0, 1)
    for _ in range(3):                                   # 3 x 20 s = twice the lease, renewed
        clock.now += 20
        assert a.raw([Ops.renew(a.clientid)]).status == S.OK
        assert b.raw([Ops.renew(b.clientid)]).status == S.OK
        assert lock_status(b, fh, sid_b, b"w") == S.DENIED
    clock.now += 20
    b.renew()
    clock.now += LEASE - 19                              # a silent for LEASE + 1 s, b renewed 11 s ago
    assert lock_status(b, fh, sid_b, b"w") == S.OK
    assert a.raw([Ops.renew(a.clientid)]).status in (S.EXPIRED, S.STALE_CLIENTID)
    reply = a.raw([Ops.putfh(fh), Ops.read(sid_a, 0, 1)])
    assert reply.last.status in (S.EXPIRED, S.BAD_STATEID)


@pytest.mark.parametrize("name, op", [
    ("SETCLIENTID", lambda c: Ops.setclientid(b"v" * 8, b"o")),
    ("SETCLIENTID_CONFIRM", lambda c: Ops.setclientid_confirm(c.clientid, b"c" * 8)),
    ("RENEW", lambda c: Ops.renew(c.clientid)),
    ("OPEN_CONFIRM", lambda c: Ops.open_confirm(b"\0" * 16, 1)),
    ("RELEASE_LOCKOWNER", lambda c: Ops.release_lockowner(c.clientid, b"lo")),
])
def test_40_only_ops_are_notsupp_in_41(v4, name, op):
    c = client_for(v4, 1, b"minor1")
    reply = c.call(Ops.putrootfh(), op(c), check=False)
    assert reply.last.status == S.NOTSUPP, name
