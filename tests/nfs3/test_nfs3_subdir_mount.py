"""Issue #11 item 10: MNT of a directory below an export (``/e/sub``), as Linux clients mount
``server:/shares/<id>/dir``.

The path is resolved inside the export under the export's rules (client access, squash: each
step is a LOOKUP the caller could make itself), and the handle is an ordinary handle of that
export: ".." climbs to the export root and stops there.  Paths that would leave the export are
refused: ".." above the export root, symbolic links with absolute targets or relative targets
climbing out; relative links that stay inside are followed (as knfsd's mountd resolves a path
on the server, but never outside the export).  Real clients (nfs-ls, nfs-cat, the libnfs
bindings) mount a subdirectory URL.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from acmenfs.nfs3.const import MountStat, NfsProc, NfsStat
from acmenfs.nfs3.exports import ClientRule, Export
from acmenfs.oncrpc.xdr import Unpacker
from nfs3_helpers import NfsCalls, lookup, pack_diropargs, pack_fh, require_tool


@pytest.fixture
def tree(export_dir, tmp_path):
    (export_dir / "sub" / "inner").mkdir(parents=True)
    (export_dir / "sub" / "inner" / "deep.txt").write_bytes(b"deep data\n")
    (export_dir / "other").mkdir()
    (export_dir / "file").write_bytes(b"not a directory")
    (export_dir / "private").mkdir(mode=0o700)
    os.chmod(export_dir / "private", 0o700)
    (export_dir / "private" / "inside").mkdir()
    os.symlink("sub/inner", export_dir / "link-in")  # stays inside: followed
    os.symlink("../other", export_dir / "sub" / "up")  # climbs, but stays inside: followed
    os.symlink("..", export_dir / "link-out")  # the export's parent
    os.symlink("../../..", export_dir / "sub" / "far-out")
    os.symlink(str(tmp_path), export_dir / "absolute")  # absolute: a path of another namespace
    os.symlink(str(export_dir / "sub"), export_dir / "absolute-in")  # even naming the export itself
    os.symlink("loop", export_dir / "loop")
    (tmp_path / "outside").mkdir()
    return export_dir


@pytest.fixture
def nfsd(nfsd_both_handle_modes):
    return nfsd_both_handle_modes


def test_mnt_of_a_subdirectory_gives_the_handle_lookup_gives(calls, tree):
    root = calls.root()
    status, sub = lookup(calls, root, "sub")
    status, inner = lookup(calls, sub, "inner")
    assert calls.mnt("/e/sub") == (MountStat.OK, sub)
    assert calls.mnt("/e/sub/inner") == (MountStat.OK, inner)
    for spelling in ("/e/sub/", "/e//sub", "/e/./sub/.", "/e/sub/inner/.."):
        assert calls.mnt(spelling) == (MountStat.OK, sub), spelling


def test_dotdot_from_a_mounted_subdirectory_stops_at_the_export_root(calls, tree):
    root = calls.root()
    status, inner = calls.mnt("/e/sub/inner")
    assert status == MountStat.OK
    status, sub = lookup(calls, inner, "..")
    status, up = lookup(calls, sub, "..")
    assert status == 0 and up == root
    assert lookup(calls, up, "..") == (0, root)


@pytest.mark.parametrize("path, expected", [
    ("/e/missing", MountStat.NOENT),
    ("/e/sub/missing/inner", MountStat.NOENT),
    ("/e/file", MountStat.NOTDIR),
    ("/e/file/x", MountStat.NOTDIR),
    ("/e/..", MountStat.ACCES),  # above the export root
    ("/e/sub/../..", MountStat.ACCES),
    ("/e/../e/sub", MountStat.ACCES),
    ("/e/sub/../../export/sub", MountStat.ACCES),
    ("/e/link-out", MountStat.ACCES),  # symbolic links out of the export
    ("/e/link-out/export", MountStat.ACCES),
    ("/e/sub/far-out", MountStat.ACCES),
    ("/e/absolute", MountStat.ACCES),
    ("/e/absolute-in", MountStat.ACCES),
    ("/e/loop", MountStat.NOENT),  # ELOOP, as realpath() fails for mountd
    ("/eother", MountStat.NOENT),  # an export path is matched by whole components
    ("e/sub", MountStat.NOENT),
    ("/e/" + "n" * 256, MountStat.NAMETOOLONG),
    ("/e/sub\0/inner", MountStat.ACCES),  # a name LOOKUP refuses
])
def test_paths_that_leave_the_export_or_do_not_name_a_directory_are_refused(calls, tree, path, expected):
    assert calls.mnt(path)[0] == expected


def test_symbolic_links_that_stay_inside_the_export_are_followed(calls, tree):
    root = calls.root()
    status, sub = lookup(calls, root, "sub")
    status, inner = lookup(calls, sub, "inner")
    status, other = lookup(calls, root, "other")
    assert calls.mnt("/e/link-in") == (MountStat.OK, inner)
    assert calls.mnt("/e/sub/up") == (MountStat.OK, other)
    assert calls.mnt("/e/link-in/..") == (MountStat.OK, sub)  # ".." of where the link led


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as the caller needs root")
def test_the_exports_rules_apply_client_access_and_squash(nfsd, exports, tree):
    exports.add(Export("/closed", str(tree), rules=(ClientRule("10.9.9.0/24", squash="none"),)))
    exports.add(Export("/sq", str(tree)))  # default rule: root squash
    root_caller, user = NfsCalls(nfsd, uid=0, gid=0), NfsCalls(nfsd, uid=1000, gid=1000)
    try:
        assert root_caller.mnt("/closed/sub")[0] == MountStat.ACCES
        assert root_caller.mnt("/e/private/inside")[0] == MountStat.OK  # no squash: root
        assert root_caller.mnt("/sq/private/inside")[0] == MountStat.ACCES  # squashed to nobody
        assert user.mnt("/e/private/inside")[0] == MountStat.ACCES
        assert user.mnt("/e/private")[0] == MountStat.OK  # as LOOKUP: search permission of the parent
        status, sub = user.mnt("/sq/sub")
        assert status == MountStat.OK and user.call(NfsProc.GETATTR, pack_fh(sub)).status == 0
    finally:
        root_caller.close()
        user.close()


def test_a_subdirectory_of_a_read_only_export_is_read_only(nfsd, calls, exports, tree):
    exports.add(Export("/ro", str(tree), read_only=True, rules=(ClientRule("127.0.0.1", squash="none"),)))
    status, sub = calls.mnt("/ro/sub")
    assert status == MountStat.OK
    assert calls.call(NfsProc.MKDIR, pack_diropargs(sub, "new") + b"\0" * 24).status == NfsStat.ROFS


def test_the_longest_export_path_wins(nfsd, calls, exports, tree):
    exports.add(Export("/e/sub", str(tree / "other"), rules=(ClientRule("127.0.0.1", squash="none"),)))
    status, fh = calls.mnt("/e/sub")
    assert status == MountStat.OK and fh == calls.root("/e/sub") and fh != lookup(calls, calls.root(), "sub")[1]


def test_dump_lists_the_mounted_subdirectory(calls, tree):
    assert calls.mnt("/e/sub/inner")[0] == MountStat.OK
    dump = Unpacker(calls.mount.call(100005, 3, 2, b""))
    assert dump.unpack_bool() and dump.unpack_string() == "127.0.0.1" and dump.unpack_string() == "/e/sub/inner"


def test_nfs_ls_and_nfs_cat_mount_a_subdirectory_url(nfsd, tree):
    for tool in ("nfs-ls", "nfs-cat"):
        require_tool(tool)
    listing = subprocess.run(["nfs-ls", nfsd.url("/e/sub")], capture_output=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[-1] for line in listing.stdout.decode().splitlines() if line.strip()}
    assert {"inner", "up"} <= names and "sub" not in names and "file" not in names
    cat = subprocess.run(["nfs-cat", nfsd.url("/e/sub/inner", "/deep.txt")], capture_output=True, timeout=60)
    assert cat.returncode == 0 and cat.stdout == b"deep data\n", cat.stderr


def libnfs_mount(url: str) -> int:
    """nfs_mount's status on a fresh context (``libnfs.NFS`` ignores a failed mount)."""
    lowlevel = pytest.importorskip("libnfs.libnfs")
    context = lowlevel.nfs_init_context()
    try:
        parsed = lowlevel.nfs_parse_url_dir(context, url)
        return lowlevel.nfs_mount(context, parsed.server, parsed.path)
    finally:
        lowlevel.nfs_destroy_context(context)


def test_libnfs_bindings_mount_a_subdirectory(nfsd_process, tree):
    libnfs = pytest.importorskip("libnfs")
    assert libnfs_mount(nfsd_process.url("/e/sub")) == 0
    assert libnfs_mount(nfsd_process.url("/e/link-out")) != 0
    client = libnfs.NFS(nfsd_process.url("/e/sub"))
    assert sorted(client.listdir("/inner")) == [".", "..", "deep.txt"]
    assert client.open("/inner/deep.txt").read() == "deep data\n"
