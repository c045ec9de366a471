"""fattr4 encoding through the compiled per-request encoders of acmenfs.nfs4.attrs: every
attribute alone, all of them together, and the values checked against raw XDR built here."""

from __future__ import annotations

import os
import struct

import pytest

from acmenfs.nfs4.attrs import SUPPORTED, AttrSource, encode_attrlist, encode_fattr
from acmenfs.nfs4.const import Attr


def source(path: str, minor: int) -> AttrSource:
    return AttrSource(os.lstat(path), b"\x01\x02\x03\x04\x05", (7, 0), 99, 98, lambda: (1, 2, 3, 4, 5, 6),
                      90, minor, True, 0)


@pytest.mark.parametrize("minor", [0, 1, 2])
@pytest.mark.parametrize("path", ["/etc/hostname", "/tmp", "/dev/null"])
def test_all_attributes_encode_as_the_concatenation_of_each_alone(path, minor):
    src = source(path, minor)
    readable = SUPPORTED[minor] - {Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET}
    singles = [encode_attrlist({attr}, src)[1] for attr in sorted(readable)]
    assert all(singles)
    done, together = encode_attrlist(SUPPORTED[minor], src)
    assert done == readable
    singles = b"".join(singles)
    assert together == singles
    assert len(together) % 4 == 0


def test_linux_getattr_mask_values_match_raw_xdr(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 12345)
    os.chmod(path, 0o640)
    st = os.lstat(path)
    requested = {Attr.TYPE, Attr.SIZE, Attr.FILEID, Attr.MODE, Attr.OWNER, Attr.TIME_MODIFY}
    fattr = encode_fattr(requested, AttrSource(st, b"fh", (7, 0), 4242, 4242, None, 90, 1))
    bitmap_words = struct.unpack_from(">III", fattr)
    assert bitmap_words == (2, (1 << 1) | (1 << 4) | (1 << 20), (1 << (33 - 32)) | (1 << (36 - 32)) | (1 << (53 - 32)))
    length = struct.unpack_from(">I", fattr, 12)[0]
    owner = str(st.st_uid).encode()
    owner_xdr = struct.pack(">I", len(owner)) + owner + b"\0" * (-len(owner) & 3)
    expected = (struct.pack(">IQQI", 1, 12345, 4242, 0o640) + owner_xdr
                + struct.pack(">qI", st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9))
    assert fattr[16:] == expected and length == len(expected)


def test_write_only_and_unsupported_attributes_are_left_out():
    done, data = encode_attrlist({Attr.SIZE, Attr.TIME_MODIFY_SET, 200}, source("/etc/hostname", 2))
    assert done == {Attr.SIZE}
    assert data == struct.pack(">Q", os.lstat("/etc/hostname").st_size)


@pytest.mark.parametrize("minor", [0, 1, 2])
def test_getattr_by_bitmap_words_encodes_as_by_attribute_set(minor):
    from acmenfs.nfs4.attrs import encode_fattr_for_words
    from acmenfs.nfs4.xdr4 import decode_bitmap_words, encode_bitmap
    from acmenfs.oncrpc.xdr import Unpacker
    src = source("/etc/hostname", minor)
    for requested in ({Attr.SIZE}, SUPPORTED[minor], {Attr.TYPE, Attr.OWNER, 75, 200}):
        words = decode_bitmap_words(Unpacker(encode_bitmap(requested)))
        assert encode_fattr_for_words(words, src) == encode_fattr(requested, src)


@pytest.mark.parametrize("rdev", [0, os.makedev(1, 3), os.makedev(259, 70000)])
@pytest.mark.parametrize("ns", [0, 1_700_000_000_123_456_789, -1, -1_500_000_001])
def test_times_rawdev_and_owners_encode_as_raw_xdr(rdev, ns):
    """nfstime4 (seconds may be negative, nseconds never), specdata4 (major, minor) and the
    owner strings, from a stat with any values, as the compiled encoder inlines them."""
    from types import SimpleNamespace
    st = SimpleNamespace(st_mode=0o20644, st_rdev=rdev, st_uid=123456, st_gid=7, st_atime_ns=ns,
                         st_ctime_ns=ns + 1, st_mtime_ns=ns - 1, st_nlink=1, st_size=0, st_blocks=0)
    requested = {Attr.OWNER, Attr.OWNER_GROUP, Attr.RAWDEV, Attr.TIME_ACCESS, Attr.TIME_METADATA,
                 Attr.TIME_MODIFY}
    _, data = encode_attrlist(requested, AttrSource(st, b"fh", (7, 0), 1, 1, None, 90, 1))

    def string(text: bytes) -> bytes:
        return struct.pack(">I", len(text)) + text + b"\0" * (-len(text) & 3)

    def time(value: int) -> bytes:
        return struct.pack(">qI", value // 10**9, value % 10**9)
    expected = (string(b"123456") + string(b"7") + struct.pack(">II", os.major(rdev), os.minor(rdev))
                + time(ns) + time(ns + 1) + time(ns - 1))
    assert data == expected
