"""Audit of issue #13, identity and leases: owners and groups are answered as numeric strings and
accepted as numbers, names or ``name@domain`` of known local users and groups (an unknown name is
BADOWNER, RFC 7530 §5.9 / RFC 8881 §5.9); the lease is 90 s unless ``--nfs4-lease-seconds``
says otherwise, and the LEASE_TIME attribute (RFC 7530 §5.8.1.11) tells clients what the server
enforces.  Sans-IO (``Sans4``) and a real ``acmenfs nfsd``."""

from __future__ import annotations

import grp
import os
import pwd
import struct

import pytest
from nfs4_core_helpers import (
    NfsdProcess4, TcpCompound, getattr_, lookup, opaque, putrootfh, setattr_)

OK, BADOWNER = 0, 10039
LEASE_TIME, OWNER, OWNER_GROUP = 10, 36, 37


def owner_ops(name: str, attr: int = OWNER):
    return [putrootfh(), lookup("e"), lookup("f"), setattr_({attr: opaque(name)})]


@pytest.mark.parametrize("text, uid", [
    ("1000", 1000), ("nobody", pwd.getpwnam("nobody").pw_uid), ("nobody@example.org", pwd.getpwnam("nobody").pw_uid),
    ("daemon@localdomain", pwd.getpwnam("daemon").pw_uid)])
def test_owner_as_number_name_or_name_at_domain(v4, export_dir, text, uid):
    (export_dir / "f").write_text("x")
    os.chown(export_dir / "f", 4242, 4242)
    assert v4.compound(owner_ops(text)).status == OK
    assert (export_dir / "f").stat().st_uid == uid


@pytest.mark.parametrize("text, gid", [
    ("1234", 1234), ("daemon", grp.getgrnam("daemon").gr_gid), ("nogroup@example.org", grp.getgrnam("nogroup").gr_gid)])
def test_group_as_number_name_or_name_at_domain(v4, export_dir, text, gid):
    (export_dir / "f").write_text("x")
    os.chown(export_dir / "f", 4242, 4242)
    assert v4.compound(owner_ops(text, OWNER_GROUP)).status == OK
    assert (export_dir / "f").stat().st_gid == gid


@pytest.mark.parametrize("attr", [OWNER, OWNER_GROUP])
def test_unknown_names_are_badowner_and_change_nothing(v4, export_dir, attr):
    (export_dir / "f").write_text("x")
    os.chown(export_dir / "f", 4242, 4343)
    for text in ("no-such-user-xyz@example.org", "no-such-user-xyz"):
        assert v4.compound(owner_ops(text, attr)).status == BADOWNER, text
    st = (export_dir / "f").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4343)


def test_getattr_answers_numeric_strings_even_for_named_users(v4, export_dir):
    (export_dir / "f").write_text("x")
    os.chown(export_dir / "f", pwd.getpwnam("daemon").pw_uid, grp.getgrnam("daemon").gr_gid)
    present, data = v4.compound([putrootfh(), lookup("e"), lookup("f"), getattr_(OWNER, OWNER_GROUP)]).results[-1].value
    uid, gid = str(pwd.getpwnam("daemon").pw_uid), str(grp.getgrnam("daemon").gr_gid)
    assert present == {OWNER, OWNER_GROUP} and data == opaque(uid) + opaque(gid)


def lease_time(reply) -> int:
    present, data = reply.results[-1].value
    assert present == {LEASE_TIME}
    return struct.unpack(">I", data)[0]


def test_lease_time_defaults_to_90_seconds(v4):
    assert lease_time(v4.compound([putrootfh(), getattr_(LEASE_TIME)])) == 90
    assert v4.nfs4.state.lease_seconds == 90


@pytest.mark.parametrize("extra, seconds", [((), 90), (("--nfs4-lease-seconds", "7"), 7)])
def test_nfsd_lease_seconds_reaches_the_lease_time_attribute(tmp_path, extra, seconds):
    export = tmp_path / "export"
    export.mkdir()
    server = NfsdProcess4(export, tmp_path / "state", tmp_path / "nfsd.log", *extra)
    try:
        client = TcpCompound(server.port)
        try:
            assert lease_time(client.compound([putrootfh(), lookup("e"), getattr_(LEASE_TIME)])) == seconds
        finally:
            client.close()
    finally:
        server.stop()
