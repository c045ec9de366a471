"""READ's three paths, exact bytes over raw RPC: a small cached read copied on the event loop
(one preadv2 RWF_NOWAIT, one writev), a large one sent with sendfile, and data not in the page
cache read in the thread pool; unaligned counts are padded and EOF is flagged."""

from __future__ import annotations

import os
import struct

import pytest

from acmenfs.fs.local import INLINE_COPY_READ_BYTES
from acmenfs.fs.nonblocking import WouldBlock, inline
from acmenfs.nfs3.const import NfsProc
from nfs3_helpers import lookup, pack_fh, skip_post_op_attr


def read(calls, fh: bytes, offset: int, count: int) -> tuple[int, bool, bytes]:
    reply = calls.call(NfsProc.READ, pack_fh(fh) + struct.pack(">QI", offset, count))
    assert reply.status == 0, reply.status
    skip_post_op_attr(reply.args)
    got, eof = reply.args.unpack_uint(), reply.args.unpack_uint()
    data = reply.args.unpack_opaque()
    assert len(data) == got
    return got, bool(eof), data


@pytest.mark.parametrize("offset,count", [(0, 4096), (1, 3), (4093, 7), (0, INLINE_COPY_READ_BYTES),
                                          (5, INLINE_COPY_READ_BYTES + 1), (0, 1 << 20), (299_998, 100)])
def test_reads_of_every_size_return_the_exact_bytes(calls, export_dir, offset, count):
    content = os.urandom(300_000)
    (export_dir / "f").write_bytes(content)
    status, fh = lookup(calls, calls.root(), "f")
    assert status == 0
    got, eof, data = read(calls, fh, offset, count)
    assert data == content[offset:offset + count]
    assert eof == (offset + got >= len(content))


def test_cold_small_read_goes_to_the_pool(nfsd, calls, export_dir):
    path = export_dir / "cold"
    path.write_bytes(b"z" * 65536)
    status, fh = lookup(calls, calls.root(), "cold")
    assert status == 0
    backend = next(iter(nfsd.server.state._backends.values()))[1]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with inline(), pytest.raises(WouldBlock):
            backend._read_cached(fd, 8192, 4096)
    finally:
        os.close(fd)
    assert read(calls, fh, 8192, 4096)[2] == b"z" * 4096  # answered (from the pool)
