"""Audit of issue #13, the 4.2 ops for VM images with a real 4.2 session and real stateids (the
other 4.2 tests stand a stub in for SEQUENCE and use the anonymous stateid): ALLOCATE and
DEALLOCATE need an open for writing (OPENMODE) and respect another client's DENY_WRITE
(LOCKED), DEALLOCATE past EOF punches without changing the size, SPACE_USED follows the punched
blocks, SEEK checks its stateid (RFC 7862 §15.1, §15.4, §15.11; RFC 8881 §9.1.4)."""

from __future__ import annotations

import struct

import pytest
from nfs4_core_helpers import allocate, deallocate, getattr_, seek

import acmenfs.nfs4.client as client_module
from acmenfs.nfs4.client import Nfs4Client, Ops
from acmenfs.nfs4.const import Nfs4Stat as S

MIB = 1 << 20
DATA, HOLE = 0, 1
SIZE, SPACE_USED = 4, 45


@pytest.fixture
def client42(v4, monkeypatch):
    monkeypatch.setitem(client_module.OK_PARSERS, 69, lambda u: (u.unpack_bool(), u.unpack_uhyper()))   # SEEK4resok
    client = Nfs4Client(lambda args: v4.body(args), 2)
    client.establish()
    return client


def last_status(client: Nfs4Client, *ops: bytes) -> int:
    return client.call(*ops, check=False).last.status


def test_allocate_and_deallocate_need_an_open_for_writing(client42, export_dir):
    (export_dir / "f").write_bytes(b"x" * 8192)
    fh, sid = client42.open("/e/f", access=1)
    assert last_status(client42, Ops.putfh(fh), allocate(0, 4096, sid)) == S.OPENMODE
    assert last_status(client42, Ops.putfh(fh), deallocate(0, 4096, sid)) == S.OPENMODE
    assert (export_dir / "f").read_bytes() == b"x" * 8192
    fh, sid = client42.open("/e/f", access=3)
    assert last_status(client42, Ops.putfh(fh), deallocate(0, 4096, sid)) == S.OK
    assert (export_dir / "f").read_bytes() == b"\0" * 4096 + b"x" * 4096


def test_anonymous_allocate_and_deallocate_respect_another_clients_deny_write(v4, client42, export_dir):
    (export_dir / "g").write_bytes(b"g" * 4096)
    other = Nfs4Client(lambda args: v4.body(args), 2)
    other.establish()
    fh, _ = other.open("/e/g", access=1, deny=2)
    assert last_status(client42, Ops.putfh(fh), allocate(0, 8192)) == S.LOCKED
    assert last_status(client42, Ops.putfh(fh), deallocate(0, 4096)) == S.LOCKED
    assert (export_dir / "g").read_bytes() == b"g" * 4096


def test_deallocate_past_eof_keeps_the_size_and_space_used_follows(client42, export_dir):
    (export_dir / "img").write_bytes(b"x" * (2 * MIB))
    fh, sid = client42.open("/e/img", access=3)
    assert last_status(client42, Ops.putfh(fh), deallocate(MIB, 8 * MIB, sid)) == S.OK
    st = (export_dir / "img").stat()
    assert st.st_size == 2 * MIB
    present, data = client42.call(Ops.putfh(fh), getattr_(SIZE, SPACE_USED)).last.value
    assert present == [1 << SIZE, 1 << (SPACE_USED - 32)]
    assert struct.unpack(">QQ", data) == (2 * MIB, st.st_blocks * 512) and st.st_blocks * 512 < 2 * MIB
    assert client42.call(Ops.putfh(fh), seek(0, HOLE, sid)).last.value == (False, MIB)
    assert last_status(client42, Ops.putfh(fh), seek(0, DATA, b"\0\0\0\1" + b"\7" * 12)) == S.BAD_STATEID
