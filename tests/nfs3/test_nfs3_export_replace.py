"""Re-adding an export at run time: a swapped directory (the appliance's revert), and
usage/quota after a replace.  Raw RPC against an in-process server, real directories,
a real RENAME_EXCHANGE."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import struct

import pytest

from acmenfs.nfs3.const import NfsProc, NfsStat, StableHow
from acmenfs.nfs3.exports import ClientRule, Export
from nfs3_helpers import NfsCalls, RunningNfsServer, create, lookup, new_fh_of, pack_fh, skip_post_op_attr

RENAME_EXCHANGE = 2
AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def exchange(first, second) -> None:
    """renameat2(RENAME_EXCHANGE), as the appliance swaps a share with a snapshot copy."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def read(calls, fh: bytes, count: int = 4096) -> tuple[int, bytes]:
    reply = calls.call(NfsProc.READ, pack_fh(fh) + struct.pack(">QI", 0, count))
    if reply.status != 0:
        return reply.status, b""
    skip_post_op_attr(reply.args)
    reply.args.unpack_uint(), reply.args.unpack_bool()
    return 0, reply.args.unpack_opaque()


def write(calls, fh: bytes, offset: int, data: bytes) -> int:
    args = pack_fh(fh) + struct.pack(">QIII", offset, len(data), StableHow.FILE_SYNC, len(data)) + data
    args += b"\0" * (-len(data) & 3)
    return calls.call(NfsProc.WRITE, args).status


def set_size(calls, fh: bytes, size: int) -> int:
    args = pack_fh(fh) + struct.pack(">IIIIQII", 0, 0, 0, 1, size, 0, 0) + struct.pack(">I", 0)
    return calls.call(NfsProc.SETATTR, args).status


def getattr_status(calls, fh: bytes) -> int:
    return calls.call(NfsProc.GETATTR, pack_fh(fh)).status


def same_export(export_dir, **changes) -> Export:
    return Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),), **changes)


@pytest.fixture(params=["kernel_handles", "path_table"])
def swap_server(request, exports, tmp_path):
    """The server in both handle modes (kernel handles as root, the handle table otherwise)."""
    server = RunningNfsServer(exports, tmp_path / "state", use_kernel_handles=request.param == "kernel_handles")
    calls = NfsCalls(server)
    yield calls
    calls.close()
    server.stop()


@pytest.mark.parametrize("swap", ["rename_exchange", "rename_dance"])
def test_swapped_directory_serves_new_content_and_old_handles_are_stale(swap_server, exports, export_dir,
                                                                          tmp_path, swap):
    calls = swap_server
    (export_dir / "volume").write_bytes(b"before the revert")
    (export_dir / "only-old").write_bytes(b"x")
    old_root = calls.root()
    status, old_volume = lookup(calls, old_root, "volume")
    assert status == 0 and read(calls, old_volume) == (0, b"before the revert")
    status, old_only = lookup(calls, old_root, "only-old")
    assert status == 0

    staging = tmp_path / "staging"
    staging.mkdir()
    staging.chmod(0o777)
    (staging / "volume").write_bytes(b"snapshot content")
    (staging / "only-new").write_bytes(b"y")
    if swap == "rename_exchange":
        exchange(staging, export_dir)
    else:
        os.rename(export_dir, tmp_path / "previous")
        os.rename(staging, export_dir)
        os.rename(tmp_path / "previous", staging)
    shutil.rmtree(staging)  # the old tree is discarded, as after a revert
    exports.add(same_export(export_dir))

    new_root = calls.root()
    assert new_root != old_root
    status, new_volume = lookup(calls, new_root, "volume")
    assert status == 0 and read(calls, new_volume) == (0, b"snapshot content")
    assert lookup(calls, new_root, "only-new")[0] == 0
    assert lookup(calls, new_root, "only-old")[0] == NfsStat.NOENT
    for handle in (old_volume, old_only, old_root):
        assert getattr_status(calls, handle) == NfsStat.STALE
    assert read(calls, old_volume)[0] == NfsStat.STALE
    assert lookup(calls, old_root, "volume")[0] == NfsStat.STALE


def test_re_added_export_on_the_same_directory_keeps_handles_and_rescans_usage(nfsd, calls, exports, export_dir):
    root = calls.root()
    fh = new_fh_of(create(calls, root, "kept"))
    assert write(calls, fh, 0, b"k" * 4096) == 0
    used_before = nfsd.server.export_usage("/e")
    with open(export_dir / "behind-the-servers-back", "wb") as out:
        out.write(os.urandom(256 * 1024))
        os.fsync(out.fileno())
    exports.add(same_export(export_dir, quota_bytes=64 * 1024 * 1024))
    assert calls.root() == root
    assert getattr_status(calls, fh) == 0
    assert nfsd.server.export_usage("/e") >= used_before + 256 * 1024


def test_quota_counts_allocation_so_a_sparse_volume_can_be_resized(nfsd, calls, exports, export_dir):
    quota = 256 * 1024
    exports.add(same_export(export_dir, quota_bytes=quota))
    root = calls.root()
    fh = new_fh_of(create(calls, root, "volume"))
    assert set_size(calls, fh, 10 * quota) == 0  # a sparse size far above the quota allocates nothing
    assert set_size(calls, fh, 0) == 0
    assert set_size(calls, fh, 10 * quota) == 0
    assert (export_dir / "volume").stat().st_size == 10 * quota
    assert write(calls, fh, 0, b"a" * (128 * 1024)) == 0
    assert write(calls, fh, 5 * quota, b"b" * (192 * 1024)) == NfsStat.DQUOT  # fills a hole past the quota
    assert write(calls, fh, 0, b"c" * (128 * 1024)) == 0  # overwriting allocated data allocates nothing
    assert write(calls, fh, 10 * quota, b"d" * (200 * 1024)) == NfsStat.DQUOT  # appending past the quota
    assert read(calls, fh, 4)[1] == b"cccc"


def test_a_volume_file_as_large_as_the_quota_can_be_written_completely(nfsd, calls, exports, export_dir):
    """File-system overhead (the export root, extent blocks) is not charged: a sparse volume of
    the share's size (the quota) fills up completely, and then nothing more fits."""
    quota = 4 * 1024 * 1024
    exports.add(same_export(export_dir, quota_bytes=quota))
    root = calls.root()
    fh = new_fh_of(create(calls, root, "volume"))
    assert set_size(calls, fh, quota) == 0
    chunk = 256 * 1024
    for offset in range(0, quota, chunk):
        assert write(calls, fh, offset, os.urandom(chunk)) == 0, offset
    assert write(calls, fh, 0, b"overwrite") == 0
    assert write(calls, fh, quota, b"m" * 4096) == NfsStat.DQUOT
    assert create(calls, root, "more").status == NfsStat.DQUOT
    assert nfsd.server.export_usage("/e") == quota


def test_usage_scan_and_counting_agree(nfsd, calls, exports, export_dir):
    (export_dir / "before").write_bytes(b"b" * 10000)
    exports.add(same_export(export_dir, quota_bytes=1 << 30))
    root = calls.root()
    fh = new_fh_of(create(calls, root, "counted"))
    assert write(calls, fh, 0, b"c" * 5000) == 0
    counted = nfsd.server.export_usage("/e")
    exports.add(same_export(export_dir, quota_bytes=1 << 30))  # forces a rescan
    assert nfsd.server.export_usage("/e") == counted == 12288 + 8192


def test_unchecked_create_of_an_existing_file_charges_nothing_and_keeps_its_data(nfsd, calls, exports, export_dir):
    """Re-creating (UNCHECKED, no size) a name that exists returns that file as it is; the quota
    usage must not count its blocks a second time (it used to, once per such CREATE)."""
    exports.add(same_export(export_dir, quota_bytes=64 * 1024 * 1024))
    root = calls.root()
    fh = new_fh_of(create(calls, root, "kept"))
    assert write(calls, fh, 0, b"k" * (256 * 1024)) == 0
    used = nfsd.server.export_usage("/e")
    for _ in range(3):
        assert new_fh_of(create(calls, root, "kept")) == fh
    assert nfsd.server.export_usage("/e") == used
    assert read(calls, fh, 4)[1] == b"kkkk"
