"""Each file op's success and RFC error paths over the backend, sans-IO: PUTFH/GETFH/SAVEFH/
RESTOREFH/LOOKUP(P)/SECINFO, GETATTR/SETATTR/VERIFY/NVERIFY/ACCESS, READDIR, CREATE/REMOVE/
RENAME/LINK/READLINK, READ/WRITE/COMMIT, squashing and read-only exports as v3."""

from __future__ import annotations

import os
import struct

from nfs4_core_helpers import (
    U64, access, commit, create_dev, create_dir, create_symlink, getattr_, getfh, link, lookup,
    lookupp, nverify, opaque, putfh, putpubfh, putrootfh, read, readdir, readlink, remove, rename,
    restorefh, savefh, secinfo, setattr_, u32, verify, write,
)

OK, PERM, NOENT, ACCES, EXIST, XDEV, NOTDIR, ISDIR, INVAL, ROFS, NOTEMPTY = 0, 1, 2, 13, 17, 18, 20, 21, 22, 30, 66
BAD_COOKIE, NOFILEHANDLE, RESTOREFH, ATTRNOTSUPP, BADOWNER, BADNAME, BADCHAR = 10003, 10020, 10030, 10032, 10039, 10041, 10040
SAME, NOT_SAME, TOOSMALL, SYMLINK, BAD_STATEID, NAMETOOLONG = 10009, 10027, 10005, 10029, 10025, 63
STALE_STATEID = 10023
NOT_OURS = (BAD_STATEID, STALE_STATEID)   # a stateid this server never issued
SIZE, MODE, OWNER, OWNER_GROUP, TYPE, FILEID, SUPPORTED, CHANGE, RDATTR_ERROR = 4, 33, 36, 37, 1, 20, 0, 3, 11
TIME_MODIFY_SET, TIME_MODIFY, NUMLINKS, LEASE, FILEHANDLE = 54, 53, 35, 10, 19


def in_e(*ops):
    return [putrootfh(), lookup("e"), *ops]


# ----- file handles -----------------------------------------------------------------------------
def test_putpubfh_is_the_pseudo_root_and_getfh_putfh_round_trip(v4):
    a = v4.compound([putpubfh(), getfh()]).results[-1].value
    b = v4.compound([putrootfh(), getfh()]).results[-1].value
    assert a == b
    e = v4.fh_of("/e")
    assert v4.compound([putfh(e), getfh()]).results[-1].value == e


def test_savefh_restorefh(v4, export_dir):
    (export_dir / "f").write_text("x")
    reply = v4.compound(in_e(savefh(), lookup("f"), restorefh(), getfh()))
    assert reply.status == OK and reply.results[-1].value == v4.fh_of("/e")
    assert v4.compound([putrootfh(), restorefh()]).results[-1].status == RESTOREFH
    assert v4.compound([savefh()]).results[-1].status == NOFILEHANDLE


def test_lookup_errors(v4, export_dir):
    (export_dir / "f").write_text("x")
    os.symlink("f", export_dir / "l")
    assert v4.compound(in_e(lookup("f"), lookup("x"))).results[-1].status == NOTDIR
    assert v4.compound(in_e(lookup("l"), lookup("x"))).results[-1].status == SYMLINK
    assert v4.compound(in_e(lookup(""))).results[-1].status == INVAL
    assert v4.compound(in_e(lookup(".."))).results[-1].status == BADNAME
    assert v4.compound(in_e(lookup("a/b"))).results[-1].status == BADCHAR
    assert v4.compound(in_e(lookup(b"\xff\xfe"))).results[-1].status == INVAL
    assert v4.compound(in_e(lookup("n" * 256))).results[-1].status == NAMETOOLONG
    assert v4.compound([lookup("e")]).results[-1].status == NOFILEHANDLE


def test_lookupp_of_a_file_is_notdir(v4, export_dir):
    (export_dir / "f").write_text("x")
    assert v4.compound(in_e(lookup("f"), lookupp())).results[-1].status == NOTDIR


def test_secinfo_answers_auth_sys_and_consumes_the_fh_in_41_only(v4, export_dir):
    (export_dir / "f").write_text("x")
    reply = v4.compound(in_e(secinfo("f"), getfh()))
    assert reply.results[2].value == [1] and reply.status == OK       # 4.0 keeps the fh
    assert v4.compound(in_e(secinfo("missing"))).status == NOENT


# ----- attributes ----------------------------------------------------------------------------------
def test_getattr_supported_attrs_and_values(v4, export_dir):
    (export_dir / "f").write_bytes(b"12345")
    os.chown(export_dir / "f", 1234, 4321)
    os.chmod(export_dir / "f", 0o640)
    reply = v4.compound(in_e(lookup("f"), getattr_(TYPE, SIZE, MODE, NUMLINKS, OWNER, OWNER_GROUP, 200)))
    present, data = reply.results[-1].value
    assert present == {TYPE, SIZE, MODE, NUMLINKS, OWNER, OWNER_GROUP}            # 200 left out
    assert data == u32(1) + U64.pack(5) + u32(0o640, 1) + opaque("1234") + opaque("4321")
    present, data = v4.compound(in_e(getattr_(SUPPORTED))).results[-1].value
    words = struct.unpack(f">{len(data) // 4}I", data)[1:]
    supported = {i * 32 + b for i, w in enumerate(words) for b in range(32) if w >> b & 1}
    assert {0, 1, 2, 3, 4, 8, 10, 11, 19, 20, 33, 35, 36, 37, 45, 47, 52, 53, 55} <= supported
    assert 75 not in supported and 77 not in supported               # 4.1 / 4.2 attributes


def test_getattr_filehandle_matches_getfh(v4):
    reply = v4.compound(in_e(getfh(), getattr_(FILEHANDLE)))
    assert reply.results[-1].value[1] == opaque(reply.results[-2].value)


def test_setattr_mode_size_owner_times(v4, export_dir):
    (export_dir / "f").write_bytes(b"0123456789")
    reply = v4.compound(in_e(lookup("f"), setattr_({
        MODE: u32(0o600), SIZE: U64.pack(3), OWNER: opaque("77"), OWNER_GROUP: opaque("root@example.com"),
        TIME_MODIFY_SET: u32(1) + struct.pack(">qI", 1_000_000, 5)})))
    assert reply.status == OK
    st = (export_dir / "f").stat()
    assert (st.st_mode & 0o7777, st.st_size, st.st_uid, st.st_gid, st.st_mtime_ns) == (0o600, 3, 77, 0, 1_000_000_000_000_005)
    assert set(reply.results[-1].value) != set()


def test_setattr_errors_carry_an_empty_attrsset(v4, export_dir):
    (export_dir / "f").write_text("x")
    for attrs, status in (({TYPE: u32(1)}, INVAL), ({OWNER: opaque("no-such-user-xyz")}, BADOWNER),
                          ({12: u32(0)}, ATTRNOTSUPP)):
        reply = v4.compound(in_e(lookup("f"), setattr_(attrs)))
        assert (reply.status, reply.results[-1].value) == (status, []), attrs
    reply = v4.compound(in_e(lookup("f"), setattr_({SIZE: U64.pack(0)}, stateid=b"\1" * 16)))
    assert reply.status in NOT_OURS and reply.results[-1].value == []


def test_setattr_as_a_squashed_user_on_another_users_file_is_perm(v4, export_dir):
    (export_dir / "f").write_text("x")
    reply = v4.compound(in_e(lookup("f"), setattr_({MODE: u32(0o777)})), uid=1000, gid=1000)
    assert reply.status == PERM


def test_verify_and_nverify(v4, export_dir):
    (export_dir / "f").write_bytes(b"abc")
    assert v4.compound(in_e(lookup("f"), verify({SIZE: U64.pack(3)}))).status == OK
    assert v4.compound(in_e(lookup("f"), verify({SIZE: U64.pack(4)}))).status == NOT_SAME
    assert v4.compound(in_e(lookup("f"), nverify({SIZE: U64.pack(3)}))).status == SAME
    assert v4.compound(in_e(lookup("f"), nverify({SIZE: U64.pack(4)}))).status == OK
    assert v4.compound(in_e(lookup("f"), verify({RDATTR_ERROR: u32(0)}))).status == INVAL
    assert v4.compound(in_e(lookup("f"), verify({12: b""}))).status == ATTRNOTSUPP


def test_access_follows_permissions_and_read_only_exports(v4, export_dir):
    (export_dir / "f").write_text("x")
    os.chmod(export_dir / "f", 0o644)
    reply = v4.compound(in_e(lookup("f"), access(0x3F)), uid=1000, gid=1000)
    supported, granted = reply.results[-1].value
    assert supported == 0x3F & ~0x12 and granted == 0x01                 # READ only
    reply = v4.compound(in_e(access(0x1F)))
    assert reply.results[-1].value == (0x1F, 0x1F)
    reply = v4.compound([putrootfh(), lookup("ro"), access(0x1F)])
    assert reply.results[-1].value == (0x1F, 0x03)


# ----- directories ------------------------------------------------------------------------------
def test_readdir_lists_with_attributes_and_resumes_by_cookie(v4, export_dir):
    for name in ("a", "b", "c", "d"):
        (export_dir / name).write_text(name)
    reply = v4.compound(in_e(readdir(attrs=(TYPE, FILEID))))
    verf, entries, eof = reply.results[-1].value
    assert eof and sorted(n for _, n, _ in entries) == ["a", "b", "c", "d"]
    for _, name, (present, data) in entries:
        assert present == {TYPE, FILEID} and data == u32(1) + U64.pack((export_dir / name).stat().st_ino)
    reply = v4.compound(in_e(readdir(cookie=entries[1][0], verf=verf, attrs=(TYPE,))))
    assert [n for _, n, _ in reply.results[-1].value[1]] == [n for _, n, _ in entries[2:]]


def test_readdir_maxcount_and_cookie_errors(v4, export_dir):
    for index in range(50):
        (export_dir / f"file{index:03}").write_text("x")
    reply = v4.compound(in_e(readdir(maxcount=400, attrs=(TYPE,))))
    _, entries, eof = reply.results[-1].value
    assert 0 < len(entries) < 50 and not eof
    assert v4.compound(in_e(readdir(maxcount=20))).status == TOOSMALL
    assert v4.compound(in_e(readdir(cookie=1))).status == BAD_COOKIE
    assert v4.compound(in_e(readdir(cookie=12345))).status == BAD_COOKIE
    (export_dir / "file000").unlink()
    assert v4.compound(in_e(lookup("file001"), readdir())).status == NOTDIR


def test_create_directory_symlink_fifo_and_device(v4, export_dir):
    reply = v4.compound(in_e(create_dir("d", {MODE: u32(0o700)}), getfh(), getattr_(TYPE)))
    assert reply.status == OK and reply.results[-1].value[1] == u32(2)
    cinfo, attrset = reply.results[2].value
    assert cinfo[0] == 1 and cinfo[1] != cinfo[2] and attrset == [0, 1 << (MODE - 32)]
    assert (export_dir / "d").stat().st_mode & 0o7777 == 0o700
    assert v4.compound(in_e(create_symlink("l", "target/x"), readlink())).results[-1].value == b"target/x"
    assert v4.compound(in_e(create_dev("p", kind=7))).status == OK and (export_dir / "p").is_fifo()
    assert v4.compound(in_e(create_dev("c", kind=4, major=1, minor=3))).status == OK
    assert os.major((export_dir / "c").stat().st_rdev) == 1
    assert v4.compound(in_e(create_dir("d"))).status == EXIST
    assert v4.compound(in_e(u32(6, 1) + opaque("reg") + u32(0) + opaque(b""))).status == 10007  # BADTYPE
    assert v4.compound(in_e(create_dev("c2", kind=4)), uid=1000, gid=1000).status == PERM


def test_readlink_of_a_non_symlink_is_inval(v4, export_dir):
    (export_dir / "f").write_text("x")
    assert v4.compound(in_e(lookup("f"), readlink())).status == INVAL


def test_remove_files_and_directories(v4, export_dir):
    (export_dir / "f").write_text("x")
    (export_dir / "d").mkdir()
    (export_dir / "full").mkdir()
    (export_dir / "full" / "x").write_text("x")
    reply = v4.compound(in_e(remove("f"), remove("d")))
    assert reply.status == OK and not (export_dir / "f").exists() and not (export_dir / "d").exists()
    assert v4.compound(in_e(remove("full"))).status == NOTEMPTY
    assert v4.compound(in_e(remove("missing"))).status == NOENT
    assert v4.compound([putrootfh(), lookup("ro"), remove("secret")]).status == ROFS


def test_rename_within_and_across_exports(v4, export_dir):
    (export_dir / "f").write_text("x")
    (export_dir / "d").mkdir()
    reply = v4.compound(in_e(savefh(), lookup("d"), rename("f", "g")))
    assert reply.status == OK and (export_dir / "d" / "g").exists()
    assert len(reply.results[-1].value) == 2
    reply = v4.compound(in_e(savefh(), putrootfh(), lookup("ro"), rename("d", "x")))
    assert reply.status in (XDEV, ROFS)
    assert v4.compound(in_e(rename("a", "b"))).status == NOFILEHANDLE


def test_link(v4, export_dir):
    (export_dir / "f").write_text("x")
    reply = v4.compound(in_e(lookup("f"), savefh(), putrootfh(), lookup("e"), link("f2")))
    assert reply.status == OK and os.path.samefile(export_dir / "f", export_dir / "f2")
    assert v4.compound(in_e(savefh(), link("dirlink"))).status == ISDIR
    assert v4.compound(in_e(lookup("f"), savefh(), putrootfh(), lookup("e"), link("f2"))).status == EXIST


# ----- data -------------------------------------------------------------------------------------
def test_write_read_commit(v4, export_dir):
    (export_dir / "f").write_bytes(b"")
    reply = v4.compound(in_e(lookup("f"), write(0, b"hello world", stable=0), commit(), read(6, 100)))
    assert reply.status == OK
    count, committed, verifier = reply.results[3].value
    assert (count, committed) == (11, 0) and reply.results[4].value == verifier
    assert reply.results[5].value == (True, b"world")
    assert (export_dir / "f").read_bytes() == b"hello world"
    assert v4.compound(in_e(lookup("f"), read(100, 10))).results[-1].value == (True, b"")
    assert v4.compound(in_e(lookup("f"), read(0, 5))).results[-1].value == (False, b"hello")


def test_io_errors(v4, export_dir):
    (export_dir / "f").write_text("x")
    os.mkfifo(export_dir / "p")
    assert v4.compound(in_e(read(0, 10))).status == ISDIR
    assert v4.compound(in_e(lookup("p"), read(0, 10))).status == INVAL
    assert v4.compound([putrootfh(), read(0, 10)]).status == ISDIR
    assert v4.compound(in_e(lookup("f"), read(0, 10, stateid=b"\x05" * 16))).status in NOT_OURS
    assert v4.compound(in_e(lookup("f"), read(0, 10, stateid=b"\xff" * 16))).status == OK   # READ bypass
    assert v4.compound(in_e(lookup("f"), write(0, b"x", stateid=b"\xff" * 16))).status in NOT_OURS
    assert v4.compound([putrootfh(), lookup("ro"), lookup("secret"), write(0, b"x")]).status == ROFS
    assert v4.compound([read(0, 1)]).status == NOFILEHANDLE


def test_write_as_root_is_squashed_on_a_root_squash_export(v4, v4_exports, tmp_path):
    from acmenfs.nfs3.exports import ClientRule, Export
    directory = tmp_path / "sq"
    directory.mkdir()
    (directory / "f").write_text("x")
    os.chmod(directory / "f", 0o644)
    v4_exports.add(Export("/sq", str(directory), rules=(ClientRule("*", squash="root"),)))
    reply = v4.compound([putrootfh(), lookup("sq"), lookup("f"), write(0, b"y")])
    assert reply.status == ACCES


def test_readdir_filehandles_of_entries_match_lookup(v4, export_dir):
    (export_dir / "a").write_text("x")
    reply = v4.compound(in_e(readdir(attrs=(FILEHANDLE, FILEID))))
    (_, name, (present, data)), = reply.results[-1].value[1]
    assert present == {FILEHANDLE, FILEID} and data.startswith(opaque(v4.fh_of("/e/a")))


def test_readdir_entry_whose_attributes_fail_gets_rdattr_error_if_asked(v4, export_dir, monkeypatch):
    (export_dir / "a").write_text("x")
    (export_dir / "b").write_text("x")
    backend = v4.nfs4.nfs.backend(v4.nfs4.nfs.exports.get("/e"))
    real = backend.entry_node

    def flaky(directory, name, who):
        if name == "a":
            raise FileNotFoundError(2, "gone")
        return real(directory, name, who)
    monkeypatch.setattr(backend, "entry_node", flaky)
    reply = v4.compound(in_e(readdir(attrs=(RDATTR_ERROR, TYPE, FILEHANDLE))))
    entries = {name: attrs for _, name, attrs in reply.results[-1].value[1]}
    assert entries["a"] == ({RDATTR_ERROR}, u32(NOENT))
    assert entries["b"][0] == {RDATTR_ERROR, TYPE, FILEHANDLE} and entries["b"][1][:8] == u32(1, 0)
    assert v4.compound(in_e(readdir(attrs=(TYPE, FILEHANDLE)))).status == NOENT
