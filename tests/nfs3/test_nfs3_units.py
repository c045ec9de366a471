"""Bytes-level tests of the NFS layer's pure parts: handles, XDR structures, errno mapping,
squashing, name checks, set-id clearing, MOUNT path matching and READDIR cookies."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acmenfs.fs.backend import BadHandle, SetAttributes, StaleHandle
from acmenfs.fs.credentials import Identity, squash
from acmenfs.fs.local import COOKIE_FLAG, check_name, name_cookie, permitted
from acmenfs.fs.setid import setid_bits_to_drop
from acmenfs.nfs3.const import MountStat, NfsStat
from acmenfs.nfs3.errors import status_for
from acmenfs.nfs3.exports import Export, ExportTable
from acmenfs.nfs3.handles import MAX_BACKEND_HANDLE, HandleCodec, load_or_create_secret
from acmenfs.nfs3.mountpath import MountRefused, find_export
from acmenfs.nfs3.xdr import FATTR3_SIZE, decode_sattr3, encode_fattr3, encode_sattr3, encode_wcc_data
from acmenfs.oncrpc.xdr import Unpacker, XdrError

CODEC = HandleCodec(b"k" * 32)


@given(st.binary(min_size=8, max_size=8), st.binary(min_size=1, max_size=MAX_BACKEND_HANDLE))
def test_handles_round_trip_and_fit_in_64_bytes(export_id, backend_handle):
    handle = CODEC.encode(export_id, backend_handle)
    assert len(handle) <= 64
    assert CODEC.decode(handle) == (export_id, backend_handle)


@given(st.binary(max_size=80))
def test_arbitrary_bytes_are_never_accepted_as_handles(data):
    with pytest.raises(BadHandle):
        CODEC.decode(data)


def test_handle_from_another_secret_or_export_is_refused():
    handle = CODEC.encode(b"E" * 8, b"Kabcdef")
    with pytest.raises(BadHandle):
        HandleCodec(b"o" * 32).decode(handle)
    moved = handle[:1] + b"F" * 8 + handle[9:]
    with pytest.raises(BadHandle):
        CODEC.decode(moved)


def test_secret_persists_in_the_state_dir(tmp_path):
    first = load_or_create_secret(tmp_path)
    assert load_or_create_secret(tmp_path) == first and len(first) == 32
    assert (tmp_path / "handle-secret").stat().st_mode & 0o777 == 0o600


def test_fattr3_layout(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    st_ = os.lstat(path)
    encoded = encode_fattr3(st_, fsid=7, root_dev=st_.st_dev)
    assert len(encoded) == FATTR3_SIZE == 84
    fields = Unpacker(encoded)
    assert fields.unpack_uint() == 1  # NF3REG
    assert fields.unpack_uint() == st_.st_mode & 0o7777
    fields.unpack_uint(), fields.unpack_uint(), fields.unpack_uint()
    assert fields.unpack_uhyper() == 5
    fields.unpack_uhyper(), fields.unpack_uint(), fields.unpack_uint()
    assert fields.unpack_uhyper() == 7 and fields.unpack_uhyper() == st_.st_ino
    assert len(encode_wcc_data(st_, st_, 7, st_.st_dev)) == 4 + 24 + 4 + 84


@given(
    st.one_of(st.none(), st.integers(0, 0o7777)),
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    st.one_of(st.none(), st.just("server"), st.integers(0, 2**32 * 10**9 - 1)),
)
def test_sattr3_round_trip(mode, uid, size, mtime):
    changes = SetAttributes(mode=mode, uid=uid, size=size, mtime=mtime)
    decoder = Unpacker(encode_sattr3(changes))
    assert decode_sattr3(decoder) == changes
    decoder.done()


def test_sattr3_rejects_bad_time_how():
    with pytest.raises(XdrError):
        decode_sattr3(Unpacker(b"\0" * 16 + b"\0\0\0\x07" + b"\0" * 4))


@pytest.mark.parametrize(
    "exc, status",
    [
        (OSError(errno.ENOENT, ""), NfsStat.NOENT), (OSError(errno.ENOTEMPTY, ""), NfsStat.NOTEMPTY),
        (OSError(errno.EDQUOT, ""), NfsStat.DQUOT), (OSError(errno.EXDEV, ""), NfsStat.XDEV),
        (OSError(errno.ENAMETOOLONG, ""), NfsStat.NAMETOOLONG), (OSError(errno.EFBIG, ""), NfsStat.FBIG),
        (StaleHandle(), NfsStat.STALE), (BadHandle(), NfsStat.BADHANDLE), (RuntimeError(), NfsStat.SERVERFAULT),
    ],
)
def test_errno_mapping(exc, status):
    assert status_for(exc) == status


def test_squash_modes():
    assert squash(0, 0, (0, 5), "root", 65534, 65534) == Identity(65534, 65534, ())
    assert squash(1000, 0, (0, 5), "root", 65534, 65533) == Identity(1000, 65533, (65533, 5))
    assert squash(1000, 1000, (), "all", 7, 8) == Identity(7, 8, ())
    assert squash(0, 0, (), "none", 7, 8) == Identity(0, 0, ())


def _stat(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


def test_mode_bit_permissions():
    st_ = _stat(0o640, 1000, 100)
    owner, group, other = Identity(1000, 99), Identity(4242, 100), Identity(4242, 4242)
    assert permitted(st_, owner, 6) and permitted(st_, group, 4) and not permitted(st_, group, 2)
    assert not permitted(st_, other, 4) and permitted(st_, Identity(4242, 1, (100,)), 4)
    read_only = _stat(0o400, 1000, 100)
    assert permitted(read_only, owner, 2, owner_override=True) and not permitted(read_only, owner, 2)
    assert permitted(read_only, Identity(0, 0), 6) and not permitted(read_only, Identity(0, 0), 1)


@pytest.mark.parametrize("mode, who, dropped", [
    (0o6777, Identity(0, 0), 0),  # CAP_FSETID
    (0o6777, Identity(1000, 100), 0o6000),  # the owner too
    (0o4755, Identity(5, 5), 0o4000),
    (0o2777, Identity(5, 100), 0o2000),  # group-exec: a real setgid program, dropped even for the group
    (0o2767, Identity(5, 100), 0),  # no group-exec, caller in the group: kept
    (0o2767, Identity(5, 5, (100,)), 0),  # ... also through a supplementary group
    (0o2767, Identity(5, 5), 0o2000),  # ... caller outside the group: dropped (Linux 6.2+)
    (0o0777, Identity(5, 5), 0),
])
def test_setid_bits_a_data_change_drops(mode, who, dropped):
    assert setid_bits_to_drop(_stat(mode, 1000, 100), who) == dropped
    directory = os.stat_result((0o040000 | mode, 1, 1, 1, 1000, 100, 0, 0, 0, 0))
    assert setid_bits_to_drop(directory, who) == 0  # only regular files


@pytest.mark.parametrize("name, code", [("a/b", errno.EACCES), ("a\0", errno.EACCES), ("", errno.EACCES),
                                        ("n" * 256, errno.ENAMETOOLONG)])
def test_bad_names(name, code):
    with pytest.raises(OSError) as info:
        check_name(name)
    assert info.value.errno == code


@given(st.text(min_size=1, max_size=50))
def test_cookies_are_flagged_and_deterministic(name):
    cookie = name_cookie(name)
    assert cookie & COOKIE_FLAG and cookie == name_cookie(name) and cookie < 2**64


def test_mount_paths_match_the_longest_export_by_whole_components():
    table = ExportTable([Export("/a", "/x"), Export("/a/b", "/y")])
    assert [(e.path, rest) for e, rest in [find_export(table, "/a/b/c"), find_export(table, "/a//c/"),
                                           find_export(table, "/a/bc"), find_export(table, "/a/./b")]] == [
        ("/a/b", ["c"]), ("/a", ["c"]), ("/a", ["bc"]), ("/a/b", [])]
    for path in ("/ab", "a/b", "/", ""):
        with pytest.raises(MountRefused) as refused:
            find_export(table, path)
        assert refused.value.status == MountStat.NOENT
    assert find_export(ExportTable([Export("/", "/z")]), "/any/where")[1] == ["any", "where"]
