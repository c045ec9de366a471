"""Audit of issue #13, open and lock state through COMPOUND (sans-IO, ``Sans4``): share
reservations in both directions (a deny mode refused when another open already has that access,
an access refused by another open's deny mode, I/O with the anonymous stateid against a deny mode
is LOCKED), create attributes taken by every create mode incl. EXCLUSIVE4_1, and lock upgrades
and downgrades as another client sees them through LOCKT (RFC 7530 §9.1.4, §16.10, §16.16; RFC
8881 §18.10, §18.16)."""

from __future__ import annotations

import pytest

from acmenfs.nfs4.client import ZERO_STATEID, Nfs4Client, Nfs4Failed, Ops, bitmap, opaque, u32
from acmenfs.nfs4.const import Nfs4Stat as S

READ, WRITE, BOTH = 1, 2, 3
DENY_NONE, DENY_READ, DENY_WRITE = 0, 1, 2
READ_LT, WRITE_LT = 1, 2


def client_for(v4, minor: int = 1, owner: bytes | None = None) -> Nfs4Client:
    client = Nfs4Client(lambda args: v4.body(args), minor, owner=owner)
    client.establish()
    return client


def open_status(client: Nfs4Client, path: str, **kw) -> int:
    try:
        client.open(path, **kw)
    except Nfs4Failed as exc:
        return exc.status
    return S.OK


@pytest.mark.parametrize("minor", [0, 1])
def test_a_deny_mode_is_refused_while_another_open_has_that_access(v4, minor):
    a, b = client_for(v4, minor), client_for(v4, minor)
    a.open("/e/s", create="unchecked", access=BOTH)
    assert open_status(b, "/e/s", access=READ, deny=DENY_WRITE) == S.SHARE_DENIED
    assert open_status(b, "/e/s", access=WRITE, deny=DENY_READ) == S.SHARE_DENIED
    assert open_status(b, "/e/s", access=READ, deny=DENY_NONE) == S.OK


@pytest.mark.parametrize("minor", [0, 1])
def test_an_access_is_refused_by_another_opens_deny_mode(v4, minor):
    a, b = client_for(v4, minor), client_for(v4, minor)
    a.open("/e/t", create="unchecked", access=READ, deny=DENY_READ)
    assert open_status(b, "/e/t", access=READ) == S.SHARE_DENIED
    assert open_status(b, "/e/t", access=BOTH) == S.SHARE_DENIED
    assert open_status(b, "/e/t", access=WRITE) == S.OK


def test_anonymous_io_against_a_deny_mode_is_locked_and_close_lifts_it(v4, export_dir):
    (export_dir / "r").write_bytes(b"data")
    a, b = client_for(v4), client_for(v4)
    fh, sid = a.open("/e/r", access=BOTH, deny=BOTH)                # DENY_BOTH
    assert b.call(Ops.putfh(fh), Ops.read(ZERO_STATEID, 0, 4), check=False).last.status == S.LOCKED
    assert b.call(Ops.putfh(fh), Ops.write(ZERO_STATEID, 0, b"x"), check=False).last.status == S.LOCKED
    assert a.read(fh, sid, 0, 4) == b"data"                         # the holder itself may
    a.close_file(fh, sid)
    assert b.call(Ops.putfh(fh), Ops.read(ZERO_STATEID, 0, 4)).last.value == (True, b"data")


@pytest.mark.parametrize("minor, how", [(1, "exclusive41"), (1, "guarded"), (1, "unchecked"),
                                        (0, "guarded"), (0, "unchecked")])
def test_create_attributes_are_applied_and_reported_in_attrset(v4, export_dir, minor, how):
    c = client_for(v4, minor)
    name = f"m-{minor}-{how}"
    mode = bitmap(33) + opaque(u32(0o640))
    op = Ops.open(c.open_seqid, c.clientid, b"creator", name, create=how, attrs=mode)
    reply = c.call(*c.lookup_ops("/e"), op)
    assert reply.last.value["attrset"] == [0, 1 << (33 - 32)]       # MODE set
    assert (export_dir / name).stat().st_mode & 0o7777 == 0o640


def test_lock_upgrade_and_downgrade_as_another_client_sees_them(v4):
    a, b = client_for(v4, owner=b"a"), client_for(v4, owner=b"b")
    fh, sid_a = a.open("/e/lk", create="unchecked")
    _, sid_b = b.open("/e/lk")
    lock_a = a.lock(fh, sid_a, 0, 10, write=False)
    lock_b = b.lock(fh, sid_b, 0, 10, write=False, owner=b"reader-b")   # read locks share
    with pytest.raises(Nfs4Failed) as info:                             # upgrade over b's read lock
        a.lock(fh, sid_a, 0, 10, write=True, lock_sid=lock_a)
    assert info.value.status == S.DENIED and info.value.value["locktype"] == READ_LT
    assert info.value.value["owner"] == b"reader-b"
    b.unlock(fh, lock_b, 0, 10)
    lock_a = a.lock(fh, sid_a, 0, 10, write=True, lock_sid=lock_a)       # now the upgrade holds
    denied = b.test_lock(fh, 5, 1, write=False, owner=b"reader-b").last
    assert denied.status == S.DENIED and (denied.value["offset"], denied.value["length"],
                                          denied.value["locktype"]) == (0, 10, WRITE_LT)
    lock_a = a.lock(fh, sid_a, 0, 10, write=False, lock_sid=lock_a)      # downgrade
    assert b.test_lock(fh, 5, 1, write=False, owner=b"reader-b").last.status == S.OK
    denied = b.test_lock(fh, 5, 1, write=True, owner=b"reader-b").last
    assert denied.status == S.DENIED and denied.value["locktype"] == READ_LT
    lock_a = a.lock(fh, sid_a, 3, 3, write=True, lock_sid=lock_a)        # upgrade the middle only
    seen = {off: b.test_lock(fh, off, 1, write=False, owner=b"reader-b").last.status for off in (2, 3, 5, 6)}
    assert seen == {2: S.OK, 3: S.DENIED, 5: S.DENIED, 6: S.OK}
    a.unlock(fh, lock_a, 0, 10)
    assert b.test_lock(fh, 0, 10, write=True, owner=b"reader-b").last.status == S.OK


def test_40_lock_upgrade_and_downgrade_use_the_lock_owners_seqid(v4):
    a, b = client_for(v4, 0), client_for(v4, 0)
    fh, sid_a = a.open("/e/lk40", create="unchecked")
    b.open("/e/lk40")
    lock_a = a.lock(fh, sid_a, 0, 100, write=False)
    lock_a = a.lock(fh, sid_a, 0, 100, write=True, lock_sid=lock_a)
    assert lock_a[:4] == b"\0\0\0\2"
    assert b.test_lock(fh, 50, 1, write=False, owner=b"x").last.status == S.DENIED
    lock_a = a.lock(fh, sid_a, 0, 100, write=False, lock_sid=lock_a)
    assert lock_a[:4] == b"\0\0\0\3"
    assert b.test_lock(fh, 50, 1, write=False, owner=b"x").last.status == S.OK


@pytest.mark.parametrize("minor, expected", [
    (0, {"d": S.ISDIR, "l": S.SYMLINK, "p": S.INVAL}),           # RFC 7530 §16.16.5
    (1, {"d": S.ISDIR, "l": S.SYMLINK, "p": S.WRONG_TYPE}),      # RFC 8881 §18.16.3
])
def test_open_of_a_directory_symlink_or_fifo_is_refused_by_type(v4, export_dir, minor, expected):
    import os
    (export_dir / "d").mkdir()
    os.symlink("d", export_dir / "l")
    os.mkfifo(export_dir / "p")
    c = client_for(v4, minor)
    for name, status in expected.items():
        reply = c.call(*c.lookup_ops("/e"), Ops.open(c.open_seqid, c.clientid, b"typed", name), check=False)
        c.open_seqid += 1                                          # 4.0: these errors use the seqid
        assert reply.last.status == status, name


@pytest.mark.parametrize("minor", [0, 1])
def test_lock_reclaim_outside_grace_is_no_grace(v4, minor):
    c = client_for(v4, minor)
    fh, sid = c.open("/e/reclaim", create="unchecked")
    with pytest.raises(Nfs4Failed) as info:
        c.lock(fh, sid, 0, 1, reclaim=True)
    assert info.value.status == S.NO_GRACE
