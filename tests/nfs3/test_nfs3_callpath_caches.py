"""The per-call caches of the NFS layer, tested with bytes through the real dispatcher.

``NfsState`` keeps a ``Route`` per (export, client address) and the last credential's
identity; ``HandleCodec`` remembers verified handles; ``CallStats`` counts per thread.
These tests check that none of them changes an answer: a forged handle is still
BADHANDLE after the real one was served, a removed export's handles are STALE, a
replaced export's new rules (read-only, other clients, squash) apply at once, and the
statistics stay exact under concurrent calls.  Also the one-pack fattr3 encoder and the
inlined sattr3 decoder against the RFC layout.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest

from acmenfs.fs.backend import SetAttributes
from acmenfs.nfs3 import client as nfs
from acmenfs.nfs3.const import NfsStat
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.server import CallStats, NfsServer
from acmenfs.nfs3.xdr import FATTR3, decode_sattr3, encode_sattr3, word_and_fattr3
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.xdr import Unpacker, XdrError

NFS_PROGRAM, MOUNT_PROGRAM = 100003, 100005
GETATTR, LOOKUP, CREATE = 1, 3, 8
LOCALHOST = ("127.0.0.1", 800)


class SansIoNfs:
    """An NfsServer's programs behind a dispatcher, called with bytes as the TCP transport does."""

    def __init__(self, exports: ExportTable, state_dir: Path) -> None:
        self.server = NfsServer(exports, state_dir, threads=2)
        self.dispatcher = self.server.nfs_dispatcher([self.server.nfs_program(), self.server.mount_program()])
        self.xid = 0

    def call(self, program: int, proc: int, args: bytes, *, client=LOCALHOST, uid: int = 0, gid: int = 0) -> bytes:
        """The procedure's result body (after the accepted-reply header)."""
        self.xid += 1
        record = rpc.encode_call(self.xid, program, 3, proc, args, cred_flavor=1,
                                 cred_body=rpc.encode_auth_sys(uid, gid))
        parts = self.dispatcher.call_here(record, client, "tcp")
        reply = b"".join(bytes(part) for part in parts)
        assert struct.unpack_from(">IIIIII", reply)[1:] == (1, 0, 0, 0, 0)  # REPLY, accepted, SUCCESS
        return reply[24:]

    def status(self, program: int, proc: int, args: bytes, **caller) -> int:
        return struct.unpack_from(">I", self.call(program, proc, args, **caller))[0]

    def mount(self, path: str = "/e") -> bytes:
        return nfs.decode_mnt_result(self.call(MOUNT_PROGRAM, 1, nfs.encode_mnt_args(path)))

    def close(self) -> None:
        self.server._shutdown_blocking()


@pytest.fixture
def sans_io(exports: ExportTable, tmp_path: Path):
    calls = SansIoNfs(exports, tmp_path / "state")
    yield calls
    calls.close()


def _rw_export(directory: Path, **options) -> Export:
    return Export("/e", str(directory), **({"rules": (ClientRule("127.0.0.1", squash="none"),)} | options))


def test_forged_handles_are_refused_after_the_real_one_was_served(sans_io):
    root = sans_io.mount()
    for _ in range(2):  # the second call is answered from the caches
        assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root)) == NfsStat.OK
    wrong_mac = root[:-1] + bytes([root[-1] ^ 1])
    wrong_body = root[:12] + bytes([root[12] ^ 1]) + root[13:]
    for forged in (wrong_mac, wrong_body, root[:-1]):
        assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(forged)) == NfsStat.BADHANDLE


def test_removed_export_is_stale_and_a_replaced_one_applies_its_new_rules(sans_io, exports, export_dir):
    root = sans_io.mount()
    create = nfs.encode_create_args(root, "one", 0o644, nfs.CreateMode.UNCHECKED)
    assert sans_io.status(NFS_PROGRAM, CREATE, create) == NfsStat.OK

    exports.remove("/e")
    assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root)) == NfsStat.STALE

    exports.add(_rw_export(export_dir, read_only=True))
    assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root)) == NfsStat.OK
    create_two = nfs.encode_create_args(root, "two", 0o644, nfs.CreateMode.UNCHECKED)
    assert sans_io.status(NFS_PROGRAM, CREATE, create_two) == NfsStat.ROFS

    exports.add(_rw_export(export_dir, rules=(ClientRule("10.0.0.1", squash="none"),)))
    assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root)) == NfsStat.ACCES
    assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root), client=("10.0.0.1", 800)) == NfsStat.OK

    exports.add(_rw_export(export_dir))
    assert sans_io.status(NFS_PROGRAM, CREATE, create_two) == NfsStat.OK
    assert sorted(os.listdir(export_dir)) == ["one", "two"]


def test_the_same_export_re_added_on_a_swapped_directory_is_served_from_the_new_tree(sans_io, exports,
                                                                                       export_dir, tmp_path):
    """A revert swaps the directory under an unchanged Export object: calls must not keep
    using the retired backend (whose root is the old tree: ".." there would climb out)."""
    (export_dir / "old-file").write_bytes(b"old")
    old_root = sans_io.mount()
    old_file = nfs.decode_lookup_result(sans_io.call(NFS_PROGRAM, LOOKUP, nfs.encode_lookup_args(old_root, "old-file")))[0]
    assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(old_file)) == NfsStat.OK

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "new-file").write_bytes(b"new")
    os.rename(export_dir, tmp_path / "previous")
    os.rename(staging, export_dir)
    shutil.rmtree(tmp_path / "previous")
    exports.add(exports.get("/e"))  # the very same Export object

    new_root = sans_io.mount()
    assert new_root != old_root
    for handle in (old_root, old_file):
        assert sans_io.status(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(handle)) == NfsStat.STALE
    parent_fh, parent_attrs = nfs.decode_lookup_result(
        sans_io.call(NFS_PROGRAM, LOOKUP, nfs.encode_lookup_args(new_root, "..")))
    assert parent_fh == new_root and parent_attrs.fileid == os.stat(export_dir).st_ino
    assert sans_io.status(NFS_PROGRAM, LOOKUP, nfs.encode_lookup_args(new_root, "new-file")) == NfsStat.OK


@pytest.mark.skipif(os.geteuid() != 0, reason="switching file-system identity needs root")
def test_each_call_acts_as_its_own_caller(sans_io, exports, export_dir):
    exports.add(_rw_export(export_dir, rules=(ClientRule("127.0.0.1", squash="root", anon_uid=4321, anon_gid=4321),)))
    root = sans_io.mount()
    callers = [("as-root", 0), ("as-user", 1234), ("as-root-again", 0), ("as-user-again", 1234)]
    for name, uid in callers:
        create = nfs.encode_create_args(root, name, 0o644, nfs.CreateMode.UNCHECKED)
        assert sans_io.status(NFS_PROGRAM, CREATE, create, uid=uid, gid=uid) == NfsStat.OK
    owners = {name: os.stat(export_dir / name).st_uid for name, _ in callers}
    assert owners == {"as-root": 4321, "as-user": 1234, "as-root-again": 4321, "as-user-again": 1234}


def test_server_statistics_count_every_call_and_failure(sans_io):
    root = sans_io.mount()
    for _ in range(5):
        sans_io.call(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root))
    sans_io.call(NFS_PROGRAM, GETATTR, nfs.encode_fh_args(root[:-1]))
    stats = sans_io.server.stats()
    assert stats["calls"][("NFS3", "GETATTR")] == 6
    assert stats["calls"][("MOUNT3", "MNT")] == 1
    assert stats["errors"] == {("NFS3", "GETATTR", "BADHANDLE"): 1}
    assert stats["latency_seconds_sum"][("NFS3", "GETATTR")] > 0


def test_call_stats_stay_exact_under_concurrent_threads():
    stats = CallStats()
    threads_count, per_thread = 6, 3000
    start = threading.Barrier(threads_count + 1)
    snapshots = []

    def count(index: int) -> None:
        start.wait()
        for i in range(per_thread):
            stats.record(("NFS3", "GETATTR"), 0.5, "STALE" if i % 3 == 0 else None)
            stats.record(("NFS3", f"T{index}"), 0.25, None)

    workers = [threading.Thread(target=count, args=(index,)) for index in range(threads_count)]
    for worker in workers:
        worker.start()
    start.wait()
    while any(worker.is_alive() for worker in workers):
        snapshots.append(stats.snapshot())
    for worker in workers:
        worker.join()

    calls, latency, errors = stats.snapshot()
    assert calls[("NFS3", "GETATTR")] == threads_count * per_thread
    assert latency[("NFS3", "GETATTR")] == 0.5 * threads_count * per_thread
    assert errors == {("NFS3", "GETATTR", "STALE"): threads_count * per_thread // 3}
    assert all(calls[("NFS3", f"T{index}")] == per_thread for index in range(threads_count))
    seen = [snapshot[0].get(("NFS3", "GETATTR"), 0) for snapshot in snapshots]
    assert seen == sorted(seen)
    for snapshot_calls, snapshot_latency, _ in snapshots:  # a call is never seen without its latency
        for key, count_seen in snapshot_calls.items():
            assert snapshot_latency[key] == count_seen * (0.5 if key[1] == "GETATTR" else 0.25)


def _fattr3_by_the_book(st: os.stat_result, fsid: int) -> bytes:
    """fattr3 field by field as RFC 1813 lists it (same device as the export root)."""
    kind = {0o100000: 1, 0o040000: 2, 0o020000: 4, 0o060000: 3, 0o120000: 5}[st.st_mode & 0o170000]
    times = []
    for ns in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
        times += [(ns // 10**9) & 0xFFFFFFFF, ns % 10**9]
    return FATTR3.pack(kind, st.st_mode & 0o7777, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
                       st.st_blocks * 512, os.major(st.st_rdev), os.minor(st.st_rdev), fsid, st.st_ino, *times)


@pytest.mark.parametrize("path", ["/dev/null", "/", "/etc/hostname"])
def test_one_pack_fattr3_matches_the_fields_of_rfc_1813(path):
    st = os.lstat(path)
    for word in (0, 1):
        assert word_and_fattr3(word, st, 77, st.st_dev) == struct.pack(">I", word) + _fattr3_by_the_book(st, 77)


def test_sattr3_decoder_refuses_every_truncation_and_bad_boolean():
    full = encode_sattr3(SetAttributes(mode=0o640, uid=7, gid=8, size=1 << 40, atime="server", mtime=5 * 10**9 + 6))
    assert decode_sattr3(Unpacker(full)) == SetAttributes(0o640, 7, 8, 1 << 40, "server", 5 * 10**9 + 6)
    for cut in range(len(full)):
        with pytest.raises(XdrError):
            decode_sattr3(Unpacker(full[:cut]))
    no_changes = encode_sattr3(SetAttributes())
    for word in range(4):  # mode, uid, gid, size "set_it" flags
        bad = no_changes[:4 * word] + struct.pack(">I", 2) + no_changes[4 * word + 4:]
        with pytest.raises(XdrError, match="bad boolean"):
            decode_sattr3(Unpacker(bad))


# LOOKUP's name cache (LocalExportBackend._dentries): trusted while the directory's ctime is the
# one seen, and only for directories unchanged for DENTRY_SETTLE_NS (100 ms) before that.
SETTLE_SECONDS = 0.15


def _lookup(sans_io, directory: bytes, name: str, **caller) -> tuple[int, bytes, int]:
    """(status, handle, size) of a LOOKUP."""
    body = sans_io.call(NFS_PROGRAM, LOOKUP, nfs.encode_lookup_args(directory, name), **caller)
    status = struct.unpack_from(">I", body)[0]
    if status != NfsStat.OK:
        return status, b"", -1
    handle, attrs = nfs.decode_lookup_result(body)
    return status, handle, attrs.size


def _dentry_hits(sans_io, exports) -> int:
    return sans_io.server.state.backend(exports.get("/e")).dentry_hits


def test_name_cache_answers_a_settled_directory_and_sees_every_change_behind_the_servers_back(
        sans_io, exports, export_dir):
    (export_dir / "d").mkdir()
    (export_dir / "d" / "a").write_bytes(b"first")
    time.sleep(SETTLE_SECONDS)
    root = sans_io.mount()
    status, directory, _ = _lookup(sans_io, root, "d")
    assert status == NfsStat.OK
    first = _lookup(sans_io, directory, "a")
    hits = _dentry_hits(sans_io, exports)
    assert _lookup(sans_io, directory, "a") == first
    assert _dentry_hits(sans_io, exports) == hits + 1  # answered from the cache

    # Changed at once (same clock tick as nothing: the server never waits) behind its back.
    os.rename(export_dir / "d" / "a", export_dir / "d" / "b")
    (export_dir / "d" / "a").write_bytes(b"second file")
    now_a = _lookup(sans_io, directory, "a")
    assert now_a[0] == NfsStat.OK and now_a[1] != first[1] and now_a[2] == len(b"second file")
    assert _lookup(sans_io, directory, "b")[1] == first[1]
    (export_dir / "d" / "a").unlink()
    assert _lookup(sans_io, directory, "a")[0] == NfsStat.NOENT


def test_a_directory_changed_within_the_settle_time_is_not_cached(sans_io, exports, export_dir):
    root = sans_io.mount()
    (export_dir / "fresh").write_bytes(b"x")  # the root's ctime is now
    hits = _dentry_hits(sans_io, exports)
    for _ in range(3):
        assert _lookup(sans_io, root, "fresh")[0] == NfsStat.OK
    assert _dentry_hits(sans_io, exports) == hits


@pytest.mark.skipif(os.geteuid() != 0, reason="switching file-system identity needs root")
def test_name_cache_is_per_caller_and_follows_permission_changes(sans_io, exports, export_dir):
    for name, mode in (("open", 0o755), ("private", 0o700)):
        (export_dir / name).mkdir()
        (export_dir / name / "a").write_bytes(b"a")
        os.chmod(export_dir / name, mode)
    time.sleep(SETTLE_SECONDS)
    root = sans_io.mount()
    opened, private = _lookup(sans_io, root, "open")[1], _lookup(sans_io, root, "private")[1]
    for _ in range(2):  # root resolves both; the second time from the cache
        assert _lookup(sans_io, private, "a")[0] == NfsStat.OK
        assert _lookup(sans_io, opened, "a", uid=1000, gid=1000)[0] == NfsStat.OK
    assert _lookup(sans_io, private, "a", uid=1000, gid=1000)[0] == NfsStat.ACCES  # root's entry is root's
    os.chmod(export_dir / "open", 0o700)
    assert _lookup(sans_io, opened, "a", uid=1000, gid=1000)[0] == NfsStat.ACCES
