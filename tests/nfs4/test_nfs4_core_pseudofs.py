"""Pseudo file system: what each client address sees, crossing into exports (fsid change,
mounted_on_fileid), LOOKUPP back out, pseudo handles (MAC'd, STALE when no longer visible),
read-only pseudo directories, READDIR of pseudo directories."""

from __future__ import annotations

import struct

from acmenfs.nfs3.exports import ClientRule, Export
from nfs4_core_helpers import (
    access, create_dir, getattr_, getfh, lookup, lookupp, putfh, putrootfh, readdir, remove,
)

OK, NOENT, ROFS, STALE, ACCESS_DENIED, BADHANDLE = 0, 2, 30, 70, 13, 10001
OTHER = ("10.0.0.5", 900)
STRANGER = ("192.168.9.9", 900)
FSID, FILEID, MOUNTED_ON_FILEID, TYPE = 8, 20, 55, 1


def names(v4, path="/", client=("127.0.0.1", 800)):
    ops = [putrootfh()] + [lookup(p) for p in path.split("/") if p] + [readdir(attrs=(TYPE,))]
    reply = v4.compound(ops, client=client)
    assert reply.status == 0, reply
    return sorted(name for _, name, _ in reply.results[-1].value[1])


def test_root_lists_only_the_exports_a_client_may_use(v4):
    assert names(v4) == ["e", "ro", "shares"]
    assert names(v4, "/shares") == ["abc"]
    assert names(v4, client=OTHER) == ["ro", "shares"]
    assert names(v4, "/shares", client=OTHER) == ["only10"]
    assert names(v4, client=STRANGER) == ["ro"]


def test_lookup_of_an_invisible_export_is_noent(v4):
    reply = v4.compound([putrootfh(), lookup("shares"), lookup("only10")])
    assert reply.status == NOENT
    reply = v4.compound([putrootfh(), lookup("e")], client=STRANGER)
    assert reply.status == NOENT


def attrs_of(v4, path, *attrs):
    ops = [putrootfh()] + [lookup(p) for p in path.split("/") if p] + [getattr_(*attrs)]
    reply = v4.compound(ops)
    assert reply.status == 0, reply
    present, data = reply.results[-1].value
    return present, data


def test_crossing_into_an_export_changes_fsid_and_mounted_on_fileid_differs_from_fileid(v4, export_dir):
    _, root = attrs_of(v4, "/", FSID, FILEID)
    _, shares = attrs_of(v4, "/shares", FSID, FILEID)
    _, export = attrs_of(v4, "/shares/abc", FSID, FILEID, MOUNTED_ON_FILEID)
    assert root[:16] == shares[:16] == b"\0" * 16            # pseudo fs: fsid (0, 0)
    assert export[:16] != root[:16]                           # the export is another file system
    fileid, mounted_on = struct.unpack(">QQ", export[16:32])
    assert fileid == export_dir.stat().st_ino and mounted_on != fileid
    (export_dir / "sub").mkdir()
    _, sub = attrs_of(v4, "/shares/abc/sub", FSID, FILEID, MOUNTED_ON_FILEID)
    assert sub[:16] == export[:16]
    assert struct.unpack(">QQ", sub[16:32]) == ((export_dir / "sub").stat().st_ino,) * 2


def test_lookupp_walks_back_out_of_an_export_into_the_pseudo_fs(v4, export_dir):
    (export_dir / "d").mkdir()
    shares = v4.fh_of("/shares")
    root = v4.fh_of("/")
    reply = v4.compound([putrootfh(), lookup("shares"), lookup("abc"), lookup("d"), lookupp(), lookupp(), getfh(),
                         lookupp(), getfh(), lookupp()])
    statuses = reply.statuses
    assert statuses[:-1] == [OK] * 9 and statuses[-1] == NOENT      # the root has no parent
    assert reply.results[6].value == shares and reply.results[8].value == root


def test_pseudo_directories_are_read_only(v4):
    reply = v4.compound([putrootfh(), create_dir("new")])
    assert reply.status == ROFS
    reply = v4.compound([putrootfh(), remove("e")])
    assert reply.status == ROFS


def test_access_on_a_pseudo_directory_grants_read_and_lookup_only(v4):
    reply = v4.compound([putrootfh(), access(0x3F)])
    assert reply.results[-1].value == (0x3F, 0x03)


def test_pseudo_handle_of_a_directory_no_longer_visible_is_stale(v4, v4_exports):
    shares = v4.fh_of("/shares")
    v4_exports.remove("/shares/abc")
    assert v4.compound([putfh(shares)], client=("127.0.0.1", 800)).status == STALE
    assert v4.compound([putfh(shares)], client=OTHER).status == OK   # still sees /shares/only10


def test_pseudo_handles_are_macd(v4):
    fh = v4.fh_of("/shares")
    forged = fh[:1] + b"/e" + fh[3:]
    assert v4.compound([putfh(forged)]).status == BADHANDLE


def test_export_handle_from_a_client_the_rule_does_not_admit_is_refused(v4, tmp_path):
    fh = v4.fh_of("/e")
    assert v4.compound([putfh(fh)], client=OTHER).status == ACCESS_DENIED


def test_new_export_appears_in_the_pseudo_fs_at_once(v4, v4_exports, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    v4_exports.add(Export("/snapshots/s1", str(new), rules=(ClientRule("*"),)))
    assert names(v4) == ["e", "ro", "shares", "snapshots"]
    assert names(v4, "/snapshots") == ["s1"]


def test_pseudo_readdir_cookies_resume(v4):
    reply = v4.compound([putrootfh(), readdir(attrs=(TYPE,))])
    entries = reply.results[-1].value[1]
    assert sorted(name for _, name, _ in entries) == ["e", "ro", "shares"]
    first_cookie = entries[0][0]
    reply = v4.compound([putrootfh(), readdir(cookie=first_cookie, verf=reply.results[-1].value[0], attrs=(TYPE,))])
    assert [name for _, name, _ in reply.results[-1].value[1]] == [name for _, name, _ in entries[1:]]
    assert v4.compound([putrootfh(), readdir(cookie=7)]).status == 10003          # BAD_COOKIE
