"""Raw NFSv3/MOUNT calls against a real NfsServer: what real clients rarely send.

DRC replays of retransmitted CREATE/REMOVE, forged and truncated handles, ".."
at the export root, bad READDIR cookies, MOUNT errors, quotas, stale handles
after export removal, read-only exports, squashing and ownership on disk,
exclusive create retries, write stability and the commit verifier.
"""

from __future__ import annotations

import os
import struct

import pytest

from acmenfs.nfs3.const import MountStat, NfsProc, NfsStat, StableHow
from acmenfs.nfs3.exports import ClientRule, Export
from nfs3_helpers import (
    NO_SATTR, NfsCalls, create, lookup, new_fh_of, pack_diropargs, pack_fh, readdir, skip_post_op_attr, skip_wcc,
)


def write(calls: NfsCalls, fh: bytes, offset: int, data: bytes, stable: int = StableHow.UNSTABLE):
    args = pack_fh(fh) + struct.pack(">QII", offset, len(data), stable) + struct.pack(">I", len(data)) + data
    args += b"\0" * (-len(data) & 3)
    return calls.call(NfsProc.WRITE, args)


def write_result(reply) -> tuple[int, int, bytes]:
    assert reply.status == 0, reply.status
    skip_wcc(reply.args)
    return reply.args.unpack_uint(), reply.args.unpack_uint(), reply.args.unpack_fopaque(8)


def test_retransmitted_create_and_remove_are_answered_from_the_drc(nfsd, calls, export_dir):
    root = calls.root()
    first = create(calls, root, "once", mode=1, xid=0x1234)
    again = create(calls, root, "once", mode=1, xid=0x1234)  # same xid: a retransmission
    assert first.status == 0 and again.body == first.body  # GUARDED would say EXIST if run twice
    fresh = create(calls, root, "once", mode=1)
    assert fresh.status == NfsStat.EXIST
    removed = calls.call(NfsProc.REMOVE, pack_diropargs(root, "once"), xid=0x5678)
    replayed = calls.call(NfsProc.REMOVE, pack_diropargs(root, "once"), xid=0x5678)
    assert removed.status == 0 and replayed.body == removed.body
    assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "once")).status == NfsStat.NOENT
    assert not (export_dir / "once").exists()
    assert nfsd.server.stats()["drc"].hits >= 2


def test_forged_truncated_and_foreign_handles_are_badhandle(calls):
    root = calls.root()
    forged = bytearray(root)
    forged[12] ^= 0x01  # inside the backend handle: the MAC no longer verifies
    for handle in (bytes(forged), root[:-1], b"", b"\x01" * 30, b"\x02" + root[1:]):
        assert calls.call(NfsProc.GETATTR, pack_fh(handle)).status == NfsStat.BADHANDLE


def test_dotdot_at_the_export_root_is_the_root(calls, export_dir):
    root = calls.root()
    status, parent = lookup(calls, root, "..")
    assert status == 0 and parent == root
    (export_dir / "sub").mkdir()
    status, sub = lookup(calls, root, "sub")
    assert status == 0
    status, up = lookup(calls, sub, "..")
    assert status == 0 and up == root
    status, dot = lookup(calls, sub, ".")
    assert status == 0 and dot == sub


def test_names_with_slash_or_nul_or_too_long_are_refused(calls, export_dir):
    root = calls.root()
    assert create(calls, root, "a/b").status == NfsStat.ACCES
    assert create(calls, root, "a\0b").status == NfsStat.ACCES
    assert create(calls, root, "x" * 256).status == NfsStat.NAMETOOLONG
    assert lookup(calls, root, "../../etc")[0] == NfsStat.ACCES
    assert sorted(os.listdir(export_dir)) == []


def test_readdir_pages_large_directories_and_rejects_bad_cookies(calls, export_dir):
    names = {f"entry-{i:04d}-{'y' * (i % 40)}" for i in range(600)}
    for name in names:
        (export_dir / name).touch()
    root = calls.root()
    seen, cookie, verifier, pages = [], 0, b"\0" * 8, 0
    while True:
        status, verifier, entries, eof = readdir(calls, root, cookie, verifier, count=2048)
        assert status == 0
        pages += 1
        seen += [name for name, _, _ in entries]
        if eof:
            break
        cookie = entries[-1][1]
    assert pages > 5 and seen[:2] == [".", ".."] and sorted(seen[2:]) == sorted(names)
    assert readdir(calls, root, cookie=12345, verifier=verifier)[0] == NfsStat.BAD_COOKIE
    assert readdir(calls, root, cookie=cookie, verifier=b"garbage!")[0] == NfsStat.BAD_COOKIE
    assert readdir(calls, root, count=100)[0] == NfsStat.TOOSMALL


def test_readdir_cookies_stay_valid_while_the_directory_changes(calls, export_dir):
    for i in range(200):
        (export_dir / f"f{i:03d}").touch()
    root = calls.root()
    status, verifier, first, eof = readdir(calls, root, count=1500)
    assert status == 0 and not eof
    assert [name for name, _, _ in first[:2]] == [".", ".."]
    removed = {name for name, _, _ in first[2:]}
    for name in removed:
        (export_dir / name).unlink()
    rest, cookie = [], first[-1][1]
    while True:
        status, verifier, entries, eof = readdir(calls, root, cookie, verifier, count=1500)
        assert status == 0
        rest += [name for name, _, _ in entries]
        if eof:
            break
        cookie = entries[-1][1]
    assert sorted(rest + sorted(removed)) == sorted(f"f{i:03d}" for i in range(200))


def test_mount_errors(nfsd, calls, exports, export_dir):
    assert calls.mnt("/nope")[0] == MountStat.NOENT
    exports.add(Export("/closed", str(export_dir), rules=(ClientRule("10.9.9.0/24"),)))
    assert calls.mnt("/closed")[0] == MountStat.ACCES
    assert calls.mnt("/e/")[0] == MountStat.OK


def test_mount_export_and_dump_lists(nfsd, calls):
    from acmenfs.oncrpc.xdr import Unpacker

    calls.root()
    reply = Unpacker(calls.mount.call(100005, 3, 5, b""))
    assert reply.unpack_bool() and reply.unpack_string() == "/e"
    assert reply.unpack_bool() and reply.unpack_string() == "127.0.0.1"
    dump = Unpacker(calls.mount.call(100005, 3, 2, b""))
    assert dump.unpack_bool() and dump.unpack_string() == "127.0.0.1" and dump.unpack_string() == "/e"


def test_quota_is_enforced_and_reported(nfsd, calls, exports, export_dir):
    exports.add(Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),), quota_bytes=256 * 1024))
    root = calls.root()
    fh = new_fh_of(create(calls, root, "big"))
    count, _, _ = write_result(write(calls, fh, 0, b"x" * 128 * 1024, StableHow.FILE_SYNC))
    assert count == 128 * 1024
    assert write(calls, fh, 128 * 1024, b"y" * 200 * 1024).status == NfsStat.DQUOT
    fsstat = calls.call(NfsProc.FSSTAT, pack_fh(root))
    skip_post_op_attr(fsstat.args)
    total, free, avail = fsstat.args.unpack_uhyper(), fsstat.args.unpack_uhyper(), fsstat.args.unpack_uhyper()
    assert total == 256 * 1024 and free <= 256 * 1024 - 128 * 1024 and avail <= 256 * 1024 - 128 * 1024
    assert nfsd.server.export_usage("/e") >= 128 * 1024
    # The quota is on allocated bytes: a sparse size extension allocates nothing and is allowed,
    # filling the hole past the quota is not (tests/nfs3/test_nfs3_export_replace.py has more).
    setattr_args = pack_fh(fh) + struct.pack(">IIIIQII", 0, 0, 0, 1, 10 * 1024 * 1024, 0, 0) + struct.pack(">I", 0)
    assert calls.call(NfsProc.SETATTR, setattr_args).status == NfsStat.OK
    assert write(calls, fh, 5 * 1024 * 1024, b"z" * 200 * 1024).status == NfsStat.DQUOT


def test_removed_export_handles_are_stale(nfsd, calls, exports, export_dir):
    root = calls.root()
    assert calls.call(NfsProc.GETATTR, pack_fh(root)).status == 0
    exports.remove("/e")
    assert calls.call(NfsProc.GETATTR, pack_fh(root)).status == NfsStat.STALE


def test_deleted_object_handle_is_stale(calls, export_dir):
    root = calls.root()
    fh = new_fh_of(create(calls, root, "gone"))
    (export_dir / "gone").unlink()
    assert calls.call(NfsProc.GETATTR, pack_fh(fh)).status == NfsStat.STALE


def test_read_only_export_refuses_changes(nfsd, calls, exports, export_dir):
    (export_dir / "f").write_bytes(b"data")
    exports.add(Export("/snap", str(export_dir), read_only=True))
    root = calls.root("/snap")
    assert create(calls, root, "new").status == NfsStat.ROFS
    assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "f")).status == NfsStat.ROFS
    status, fh = lookup(calls, root, "f")
    assert status == 0
    assert write(calls, fh, 0, b"zz").status == NfsStat.ROFS
    exports.add(Export("/ro", str(export_dir), rules=(ClientRule("127.0.0.1", access="ro"),)))
    assert calls.call(NfsProc.MKDIR, pack_diropargs(calls.root("/ro"), "d") + NO_SATTR).status == NfsStat.ROFS
    assert (export_dir / "f").read_bytes() == b"data" and sorted(os.listdir(export_dir)) == ["f"]


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as the caller needs root")
def test_files_are_created_as_the_caller_and_root_is_squashed(nfsd, exports, export_dir):
    exports.add(Export("/sq", str(export_dir)))  # default rule: root_squash
    user = NfsCalls(nfsd, uid=1000, gid=1000)
    root_user = NfsCalls(nfsd, uid=0, gid=0)
    try:
        assert create(user, user.root("/sq"), "mine").status == 0
        assert create(root_user, root_user.root("/sq"), "squashed").status == 0
        (export_dir / "private").mkdir(mode=0o700)
        os.chmod(export_dir / "private", 0o700)
        status, private = lookup(user, user.root("/sq"), "private")
        assert status == NfsStat.ACCES or create(user, private, "x").status == NfsStat.ACCES
    finally:
        user.close()
        root_user.close()
    mine, squashed = os.stat(export_dir / "mine"), os.stat(export_dir / "squashed")
    assert (mine.st_uid, mine.st_gid) == (1000, 1000)
    assert (squashed.st_uid, squashed.st_gid) == (65534, 65534)
    assert not (export_dir / "private" / "x").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as the caller needs root")
def test_all_squash_maps_everyone_to_the_anonymous_ids(nfsd, exports, export_dir):
    exports.add(Export("/all", str(export_dir), rules=(ClientRule("*", squash="all", anon_uid=4321, anon_gid=4322),)))
    user = NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        assert create(user, user.root("/all"), "anon").status == 0
    finally:
        user.close()
    st = os.stat(export_dir / "anon")
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_exclusive_create_retry_with_same_verifier_succeeds(calls, export_dir):
    root = calls.root()
    args = pack_diropargs(root, "excl") + struct.pack(">I", 2) + b"VERIFIER"
    first = calls.call(NfsProc.CREATE, args)
    second = calls.call(NfsProc.CREATE, args)  # a retry with a new xid (after a DRC loss)
    assert first.status == 0 and second.status == 0
    assert new_fh_of(first) == new_fh_of(second)
    other = calls.call(NfsProc.CREATE, pack_diropargs(root, "excl") + struct.pack(">I", 2) + b"OTHERVRF")
    assert other.status == NfsStat.EXIST


def test_write_stability_and_commit_verifier(nfsd, calls, export_dir):
    root = calls.root()
    fh = new_fh_of(create(calls, root, "w"))
    _, committed, verifier = write_result(write(calls, fh, 0, b"a" * 5000))
    assert committed == StableHow.UNSTABLE
    _, committed, same = write_result(write(calls, fh, 5000, b"b" * 3, StableHow.FILE_SYNC))
    assert committed == StableHow.FILE_SYNC and same == verifier
    commit = calls.call(NfsProc.COMMIT, pack_fh(fh) + struct.pack(">QI", 0, 0))
    assert commit.status == 0
    skip_wcc(commit.args)
    assert commit.args.unpack_fopaque(8) == verifier
    assert (export_dir / "w").read_bytes() == b"a" * 5000 + b"bbb"
    read = calls.call(NfsProc.READ, pack_fh(fh) + struct.pack(">QI", 4998, 100))
    skip_post_op_attr(read.args)
    assert read.args.unpack_uint() == 5 and read.args.unpack_bool() is True
    assert read.args.unpack_opaque() == b"aabbb"


def test_setattr_guard_mismatch_is_not_sync(calls, export_dir):
    root = calls.root()
    fh = new_fh_of(create(calls, root, "g"))
    args = pack_fh(fh) + struct.pack(">II", 1, 0o600) + struct.pack(">IIIII", 0, 0, 0, 0, 0) + struct.pack(">III", 1, 1, 2)
    assert calls.call(NfsProc.SETATTR, args).status == NfsStat.NOT_SYNC


def test_rename_remove_and_link_errors_map_precisely(calls, export_dir):
    root = calls.root()
    (export_dir / "d").mkdir()
    (export_dir / "d" / "inner").touch()
    assert calls.call(NfsProc.RMDIR, pack_diropargs(root, "d")).status == NfsStat.NOTEMPTY
    assert calls.call(NfsProc.REMOVE, pack_diropargs(root, "d")).status == NfsStat.ISDIR
    assert calls.call(NfsProc.RMDIR, pack_diropargs(root, "missing")).status == NfsStat.NOENT
    status, d = lookup(calls, root, "d")
    assert calls.call(NfsProc.LINK, pack_fh(d) + pack_diropargs(root, "dlink")).status == NfsStat.ISDIR
    status, inner = lookup(calls, d, "inner")
    assert calls.call(NfsProc.LOOKUP, pack_diropargs(inner, "x")).status == NfsStat.NOTDIR
    rename = pack_diropargs(root, "d") + pack_diropargs(d, "e")
    assert calls.call(NfsProc.RENAME, rename).status == NfsStat.INVAL


def test_rename_across_exports_is_xdev(nfsd, calls, exports, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    exports.add(Export("/o", str(other), rules=(ClientRule("*", squash="none"),)))
    root, other_root = calls.root(), calls.root("/o")
    new_fh_of(create(calls, root, "f"))
    reply = calls.call(NfsProc.RENAME, pack_diropargs(root, "f") + pack_diropargs(other_root, "f"))
    assert reply.status == NfsStat.XDEV


def test_mknod_fifo_and_device_refused_for_non_root(nfsd, exports, export_dir):
    user = NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        root = user.root()
        fifo = user.call(NfsProc.MKNOD, pack_diropargs(root, "p") + struct.pack(">I", 7) + NO_SATTR)
        assert fifo.status == 0
        device = user.call(NfsProc.MKNOD, pack_diropargs(root, "c") + struct.pack(">I", 4) + NO_SATTR + struct.pack(">II", 1, 3))
        assert device.status == NfsStat.PERM
        regular = user.call(NfsProc.MKNOD, pack_diropargs(root, "r") + struct.pack(">I", 1))
        assert regular.status == NfsStat.BADTYPE
    finally:
        user.close()
    assert (export_dir / "p").is_fifo() and not (export_dir / "c").exists()


def test_fsinfo_advertises_one_mebibyte_transfers(calls):
    reply = calls.call(NfsProc.FSINFO, pack_fh(calls.root()))
    assert reply.status == 0
    skip_post_op_attr(reply.args)
    rtmax, rtpref, _, wtmax, wtpref = (reply.args.unpack_uint() for _ in range(5))
    assert rtmax >= 1 << 20 and wtmax >= 1 << 20 and rtpref == wtpref == 1 << 20


def test_access_reports_what_the_caller_may_do(nfsd, exports, export_dir):
    (export_dir / "ro-file").write_bytes(b"x")
    os.chmod(export_dir / "ro-file", 0o444)
    user = NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        status, fh = lookup(user, user.root(), "ro-file")
        reply = user.call(NfsProc.ACCESS, pack_fh(fh) + struct.pack(">I", 0x3F))
        assert reply.status == 0
        skip_post_op_attr(reply.args)
        allowed = reply.args.unpack_uint()
        assert allowed & 0x01 and not allowed & (0x04 | 0x08 | 0x20)  # READ only
        root_reply = user.call(NfsProc.ACCESS, pack_fh(user.root()) + struct.pack(">I", 0x3F))
        skip_post_op_attr(root_reply.args)
        assert root_reply.args.unpack_uint() & 0x1F == 0x1F  # 0777 directory: read, lookup, modify, extend, delete
    finally:
        user.close()


def test_readdirplus_handles_match_lookup_and_dircount_is_respected(calls, export_dir):
    for i in range(300):
        (export_dir / f"p{i:03d}").touch()
    root = calls.root()
    cookie, verifier, seen, pages = 0, b"\0" * 8, {}, 0
    while True:
        reply = calls.call(NfsProc.READDIRPLUS, pack_fh(root) + struct.pack(">Q", cookie) + verifier + struct.pack(">II", 1024, 32768))
        assert reply.status == 0
        pages += 1
        skip_post_op_attr(reply.args)
        verifier = reply.args.unpack_fopaque(8)
        names_bytes = 0
        while reply.args.unpack_bool():
            reply.args.unpack_uhyper()
            name = reply.args.unpack_string()
            names_bytes += 8 + 4 + len(name) + (-len(name) & 3) + 8
            cookie = reply.args.unpack_uhyper()
            skip_post_op_attr(reply.args)
            assert reply.args.unpack_bool()
            seen[name] = reply.args.unpack_opaque(64)
        assert names_bytes <= 1024
        if reply.args.unpack_bool():
            break
    assert len(seen) == 302 and seen[".."] == seen["."] == root and pages >= 300 * 28 // 1024
    assert lookup(calls, root, "p123") == (0, seen["p123"])


def test_setattr_sets_mode_owner_size_and_times(calls, export_dir):
    root = calls.root()
    fh = new_fh_of(create(calls, root, "attrs"))
    args = pack_fh(fh) + struct.pack(">II", 1, 0o604) + struct.pack(">II", 1, 1234) + struct.pack(">II", 1, 5678)
    args += struct.pack(">IQ", 1, 4096) + struct.pack(">III", 2, 1_000_000, 5) + struct.pack(">III", 2, 2_000_000, 7)
    args += struct.pack(">I", 0)
    reply = calls.call(NfsProc.SETATTR, args)
    assert reply.status == 0
    st = os.stat(export_dir / "attrs")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size) == (0o604, 1234, 5678, 4096)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000 * 10**9 + 5, 2_000_000 * 10**9 + 7)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as the caller needs root")
def test_unchecked_create_of_an_owned_read_only_file_can_then_be_written(nfsd, export_dir):
    """UNCHECKED CREATE of an existing 0444 file its caller owns: the caller cannot open it for
    writing, so the server opens it read-only; a later WRITE by its owner (allowed, as for a
    file created 0444 and then written) must still reach the file."""
    (export_dir / "ro-owned").write_bytes(b"old")
    os.chown(export_dir / "ro-owned", 1000, 1000)
    os.chmod(export_dir / "ro-owned", 0o444)
    user = NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        reply = create(user, user.root(), "ro-owned")
        fh = new_fh_of(reply)
        written = write(user, fh, 0, b"new", StableHow.FILE_SYNC)
        assert written.status == 0
    finally:
        user.close()
    assert (export_dir / "ro-owned").read_bytes() == b"new"


def test_unchecked_create_of_a_name_that_is_not_a_regular_file_is_exist(calls, export_dir):
    """As knfsd: UNCHECKED CREATE returns an existing regular file, but a directory, FIFO or
    symlink of that name is NFS3ERR_EXIST, and is left as it was (a FIFO is never opened)."""
    (export_dir / "dir").mkdir()
    os.mkfifo(export_dir / "fifo")
    os.symlink("dir", export_dir / "link")
    root = calls.root()
    for name in ("dir", "fifo", "link"):
        assert create(calls, root, name).status == NfsStat.EXIST, name
    assert (export_dir / "dir").is_dir() and (export_dir / "fifo").is_fifo() and (export_dir / "link").is_symlink()


def test_lookup_of_a_missing_name_answers_noent_with_the_directorys_attributes(calls, export_dir):
    (export_dir / "d").mkdir()
    status, directory = lookup(calls, calls.root(), "d")
    assert status == 0
    reply = calls.call(NfsProc.LOOKUP, pack_diropargs(directory, "missing"))
    assert reply.status == NfsStat.NOENT
    assert reply.args.unpack_bool()  # dir_attributes follow
    file_type, mode, nlink, uid, gid = (reply.args.unpack_uint() for _ in range(5))
    size, used, rdev_major, rdev_minor, fsid, fileid = (reply.args.unpack_uhyper() if i in (0, 1, 4, 5)
                                                        else reply.args.unpack_uint() for i in range(6))
    assert file_type == 2 and fileid == os.stat(export_dir / "d").st_ino
