"""WRITE's wcc_data (RFC 1813 2.6): the pre-op attributes are the file's right before our
pwrite and the post-op ones right after it, even when the file was changed behind the
server's back between two of our WRITEs (no attributes are remembered from the last call).
Raw RPC against a real NfsServer; the expected values come from os.stat of the file."""

from __future__ import annotations

import os
import struct

from acmenfs.nfs3.const import NfsProc, StableHow
from nfs3_helpers import create, new_fh_of, pack_fh

PRE_OP = struct.Struct(">IQIIII")  # present, size, mtime s/ns, ctime s/ns
POST_OP = struct.Struct(">IIIIIIQQIIQQIIIIII")  # present, fattr3


def write_wcc(calls, fh: bytes, offset: int, data: bytes, stable: int = StableHow.UNSTABLE):
    """-> ((size, mtime ns, ctime ns) before, (size, mtime ns, ctime ns) after) of a WRITE."""
    args = pack_fh(fh) + struct.pack(">QIII", offset, len(data), stable, len(data)) + data + b"\0" * (-len(data) & 3)
    reply = calls.call(NfsProc.WRITE, args)
    assert reply.status == 0, reply.status
    pre = PRE_OP.unpack(reply.args.unpack_fopaque(PRE_OP.size))
    post = POST_OP.unpack(reply.args.unpack_fopaque(POST_OP.size))
    assert pre[0] == 1 and post[0] == 1
    before = (pre[1], pre[2] * 10**9 + pre[3], pre[4] * 10**9 + pre[5])
    after = (post[6], post[14] * 10**9 + post[15], post[16] * 10**9 + post[17])
    return before, after


def attributes(path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def test_a_change_behind_the_servers_back_shows_in_the_next_pre_op_attributes(nfsd, calls, export_dir):
    fh = new_fh_of(create(calls, calls.root(), "disk"))
    path = export_dir / "disk"
    before, after = write_wcc(calls, fh, 0, b"a" * 4096)
    assert before[0] == 0 and after == attributes(path)
    fd = os.open(path, os.O_WRONLY)  # another writer: grows the file and sets an mtime of its own
    try:
        os.pwrite(fd, b"b" * 4096, 65536)
    finally:
        os.close(fd)
    os.utime(path, ns=(1_000_000_123, 1_000_000_456))
    behind = attributes(path)
    assert behind[0] == 69632 and behind[1] == 1_000_000_456
    before, after = write_wcc(calls, fh, 4096, b"c" * 4096)
    assert before == behind  # not the post-op attributes of our first WRITE
    assert after == attributes(path) and after[0] == 69632 and after[1] != behind[1]


def test_post_op_attributes_follow_growth_overwrite_and_a_stable_write(nfsd, calls, export_dir):
    fh = new_fh_of(create(calls, calls.root(), "grow"))
    path = export_dir / "grow"
    sizes = []
    for offset, stable in ((0, StableHow.UNSTABLE), (8192, StableHow.UNSTABLE), (0, StableHow.UNSTABLE),
                           (100, StableHow.FILE_SYNC)):
        before, after = write_wcc(calls, fh, offset, b"x" * 4096, stable)
        assert after == attributes(path)
        assert after[0] == max(before[0], offset + 4096)
        sizes.append(after[0])
    assert sizes == [4096, 12288, 12288, 12288]
