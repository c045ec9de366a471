"""Issue #11 item 8: READDIR and READDIRPLUS list "." and ".." first, as knfsd and Ganesha do.

Raw calls check the exact wire content (fileids; READDIRPLUS handles and attributes, with
".." of the export root being the root itself), paging through the dot entries with replies
that hold one entry each, and the dircount/maxcount limits; the libnfs bindings check that a
real client sees them.
"""

from __future__ import annotations

import os
import struct

import pytest

from acmenfs.nfs3.const import NfsProc, NfsStat
from nfs3_helpers import NfsCalls, lookup, pack_fh, skip_post_op_attr
from nfs3_helpers import readdir as readdir_page

FATTR3 = struct.Struct(">IIIIIQQIIQQ")  # type .. fileid; the times follow (24 bytes)


def readdirplus_page(calls: NfsCalls, fh: bytes, cookie: int = 0, verifier: bytes = b"\0" * 8,
                     dircount: int = 4096, maxcount: int = 32768):
    """-> (status, verifier, [(name, cookie, fileid, attr fileid, attr type, handle)], eof, wire names bytes)"""
    args = pack_fh(fh) + struct.pack(">Q", cookie) + verifier + struct.pack(">II", dircount, maxcount)
    reply = calls.call(NfsProc.READDIRPLUS, args)
    if reply.status != 0:
        return reply.status, None, [], False, 0
    skip_post_op_attr(reply.args)
    verifier = reply.args.unpack_fopaque(8)
    entries, names_bytes = [], 0
    while reply.args.unpack_bool():
        fileid = reply.args.unpack_uhyper()
        name = reply.args.unpack_string()
        entry_cookie = reply.args.unpack_uhyper()
        names_bytes += 8 + 4 + len(name) + (-len(name) & 3) + 8
        attr_type = attr_fileid = None
        if reply.args.unpack_bool():
            attrs = FATTR3.unpack(reply.args.unpack_fopaque(FATTR3.size))
            reply.args.unpack_fopaque(24)
            attr_type, attr_fileid = attrs[0], attrs[10]
        handle = reply.args.unpack_opaque(64) if reply.args.unpack_bool() else None
        entries.append((name, entry_cookie, fileid, attr_fileid, attr_type, handle))
    return reply.status, verifier, entries, reply.args.unpack_bool(), names_bytes


def all_pages(page, calls: NfsCalls, fh: bytes, **sizes) -> tuple[list, int]:
    """Every entry of a directory, following cookies; -> (entries, number of pages)."""
    cookie, verifier, seen, pages = 0, b"\0" * 8, [], 0
    while True:
        status, verifier, entries, eof, *_ = page(calls, fh, cookie, verifier, **sizes)
        assert status == 0, status
        pages += 1
        seen += entries
        if eof:
            return seen, pages
        assert entries, "a page without entries and without eof"
        cookie = entries[-1][1]


@pytest.fixture
def tree(export_dir):
    (export_dir / "sub" / "inner").mkdir(parents=True)
    (export_dir / "sub" / "file").write_bytes(b"x")
    (export_dir / "top").write_bytes(b"y")
    return export_dir


@pytest.fixture
def nfsd(nfsd_both_handle_modes):
    return nfsd_both_handle_modes


def ino(path) -> int:
    return os.stat(path).st_ino


def test_readdir_lists_dot_and_dotdot_first_with_their_fileids(calls, tree):
    root = calls.root()
    status, sub = lookup(calls, root, "sub")
    status, inner = lookup(calls, sub, "inner")
    for fh, directory, parent, rest in ((root, tree, tree, {"sub", "top"}),
                                        (sub, tree / "sub", tree, {"inner", "file"}),
                                        (inner, tree / "sub" / "inner", tree / "sub", set())):
        status, _, entries, eof = readdir_page(calls, fh)
        assert status == 0 and eof
        assert [(name, fileid) for name, _, fileid in entries[:2]] == [(".", ino(directory)), ("..", ino(parent))]
        assert {name for name, _, _ in entries[2:]} == rest
        cookies = [cookie for _, cookie, _ in entries]
        assert len(set(cookies)) == len(cookies) and 0 not in cookies


def test_readdirplus_dot_entries_carry_handles_and_attributes(calls, tree):
    root = calls.root()
    _, sub = lookup(calls, root, "sub")
    _, inner = lookup(calls, sub, "inner")
    for fh, directory, parent_fh, parent in ((root, tree, root, tree),  # ".." of the export root: the root
                                             (sub, tree / "sub", root, tree),
                                             (inner, tree / "sub" / "inner", sub, tree / "sub")):
        status, _, entries, eof, _ = readdirplus_page(calls, fh)
        assert status == 0 and eof
        dot, dotdot = entries[0], entries[1]
        assert dot[0] == "." and dot[2] == dot[3] == ino(directory) and dot[4] == 2 and dot[5] == fh
        assert dotdot[0] == ".." and dotdot[2] == dotdot[3] == ino(parent) and dotdot[4] == 2
        assert dotdot[5] == parent_fh == lookup(calls, fh, "..")[1]
        for name, _, fileid, attr_fileid, _, handle in entries[2:]:
            assert fileid == attr_fileid and lookup(calls, fh, name) == (0, handle)


@pytest.mark.parametrize("page, sizes", [
    (readdir_page, {"count": 4 + 88 + 8 + 8 + 32}),  # room for one entry (names up to 8 bytes)
    (readdirplus_page, {"dircount": 24, "maxcount": 4096}),  # dircount: one entry a reply
    (readdirplus_page, {"dircount": 4096, "maxcount": 8 + 88 + 12 + 28 + 88 + 4 + 4 + 64}),
])
def test_paging_one_entry_a_reply_walks_through_the_dot_entries_once(calls, tree, page, sizes):
    for i in range(5):
        (tree / "sub" / f"f{i}").touch()
    _, sub = lookup(calls, calls.root(), "sub")
    entries, pages = all_pages(page, calls, sub, **sizes)
    names = [entry[0] for entry in entries]
    assert names[:2] == [".", ".."]
    assert sorted(names[2:]) == sorted(["inner", "file"] + [f"f{i}" for i in range(5)])
    assert pages >= len(names) - 1  # about one entry a reply: the limits were honoured


def test_a_reply_too_small_for_the_dot_entry_is_toosmall(calls, tree):
    root = calls.root()
    assert readdir_page(calls, root, count=4 + 88 + 8 + 8 + 27)[0] == NfsStat.TOOSMALL
    assert readdirplus_page(calls, root, maxcount=100)[0] == NfsStat.TOOSMALL


def test_dot_cookies_are_accepted_with_our_verifier_and_refused_with_a_foreign_one(calls, tree):
    root = calls.root()
    status, verifier, entries, _ = readdir_page(calls, root)
    assert [name for name, _, _ in entries[:2]] == [".", ".."]
    dot_cookie, dotdot_cookie = entries[0][1], entries[1][1]
    status, _, after_dot, eof = readdir_page(calls, root, dot_cookie, verifier)
    assert status == 0 and eof and [name for name, _, _ in after_dot] == [name for name, _, _ in entries[1:]]
    status, _, after_dotdot, eof = readdir_page(calls, root, dotdot_cookie, verifier)
    assert status == 0 and [name for name, _, _ in after_dotdot] == [name for name, _, _ in entries[2:]]
    assert readdir_page(calls, root, dot_cookie, b"garbage!")[0] == NfsStat.BAD_COOKIE


def test_libnfs_bindings_list_dot_and_dotdot(nfsd_process, export_dir):
    libnfs = pytest.importorskip("libnfs")
    (export_dir / "d").mkdir()
    (export_dir / "d" / "f").touch()
    client = libnfs.NFS(nfsd_process.url())
    assert sorted(client.listdir("/d")) == [".", "..", "f"]
    assert sorted(client.listdir("/")) == [".", "..", "d"]


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as the caller needs root")
@pytest.mark.parametrize("plus", [False, True], ids=["readdir", "readdirplus"])
def test_a_cookie_does_not_list_a_directory_the_caller_may_not_read(nfsd, export_dir, plus):
    """Pages after the first come from a listing cached per directory: one read for a caller
    allowed to read the directory must not serve another who may not (any cookie with the
    top bit set is of our form, so a caller can make one up)."""
    secret = export_dir / "secret"
    secret.mkdir()
    os.chmod(secret, 0o711)  # search, but no read, for others
    for i in range(50):
        (secret / f"name-{i:02d}").touch()
    admin, user = NfsCalls(nfsd), NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        fh = lookup(admin, admin.root(), "secret")[1]
        status, verifier, entries, eof = readdir_page(admin, fh, count=400)  # the listing is now cached
        assert status == 0 and not eof
        page = readdirplus_page if plus else readdir_page
        for cookie in (0, 1, 2, entries[-1][1], 1 << 63):
            assert page(user, fh, cookie, verifier)[0] == NfsStat.ACCES, cookie
        assert readdir_page(admin, fh, entries[-1][1], verifier)[0] == 0
    finally:
        admin.close()
        user.close()
