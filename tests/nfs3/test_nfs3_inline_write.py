"""WRITE inline first: an UNSTABLE write into the page cache runs on the event loop; a stable
write, a partial page that is not in the page cache, a first quota scan, or a pause after an
inline write that blocked send it to the thread pool (re-run from its first argument byte, the
DRC entry still pending).  Raw RPC against a real NfsServer, and nfs-cp / nfs-cat."""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import threading
import time

import pytest

from acmenfs.fs.local_common import (INLINE_CHANGE_PAUSE_SECONDS, INLINE_PAUSE_FIRST_SECONDS, INLINE_WATCH_SECONDS,
                                     InlinePause, next_pause)
from acmenfs.fs.nonblocking import WouldBlock, inline, inline_active
from acmenfs.nfs3.const import NfsProc, StableHow
from acmenfs.nfs3.exports import ClientRule, Export
from nfs3_helpers import NfsCalls, create, lookup, new_fh_of, pack_fh, require_tool, skip_wcc


def write(calls: NfsCalls, fh: bytes, offset: int, data: bytes, stable: int = StableHow.UNSTABLE,
          xid: int | None = None):
    args = pack_fh(fh) + struct.pack(">QIII", offset, len(data), stable, len(data)) + data
    args += b"\0" * (-len(data) & 3)
    return calls.call(NfsProc.WRITE, args, xid=xid)


def committed(reply) -> tuple[int, int, bytes]:
    assert reply.status == 0, reply.status
    skip_wcc(reply.args)
    return reply.args.unpack_uint(), reply.args.unpack_uint(), reply.args.unpack_fopaque(8)


def backend_of(nfsd):
    return next(iter(nfsd.server.state._backends.values()))[1]


@pytest.fixture
def recorded(nfsd):
    """Records, for every backend.write call, whether it ran inline and how it ended."""
    backend = backend_of_started(nfsd)
    calls_seen: list[tuple[bool, str]] = []
    original = backend.write

    def recording_write(*args, **kwargs):
        try:
            result = original(*args, **kwargs)
        except WouldBlock:
            calls_seen.append((inline_active(), "wouldblock"))
            raise
        calls_seen.append((inline_active(), "done"))
        return result

    backend.write = recording_write
    yield backend, calls_seen


def backend_of_started(nfsd):
    client = NfsCalls(nfsd)
    try:
        client.root()  # opens the export's backend
    finally:
        client.close()
    return backend_of(nfsd)


def test_unstable_page_aligned_write_runs_inline_and_commit_makes_it_durable(nfsd, calls, export_dir, recorded):
    backend, seen = recorded
    fh = new_fh_of(create(calls, calls.root(), "disk"))
    data = os.urandom(8192)
    count, how, verifier = committed(write(calls, fh, 4096, data))
    assert (count, how) == (8192, StableHow.UNSTABLE) and verifier == backend.committer.verifier
    assert seen == [(True, "done")]
    assert len(backend.committer._dirty) == 1  # the inline write left its file to the group committer
    durable = backend.committer.durable.value
    reply = calls.call(NfsProc.COMMIT, pack_fh(fh) + struct.pack(">QI", 0, 0))
    assert reply.status == 0
    assert backend.committer.durable.value > durable and not backend.committer._dirty  # flushed before the reply
    assert (export_dir / "disk").read_bytes() == b"\0" * 4096 + data


@pytest.mark.parametrize("stable", [StableHow.DATA_SYNC, StableHow.FILE_SYNC])
def test_stable_write_moves_to_the_pool(nfsd, calls, export_dir, recorded, stable):
    _, seen = recorded
    fh = new_fh_of(create(calls, calls.root(), "sync"))
    count, how, _ = committed(write(calls, fh, 0, b"durable!", stable))
    assert (count, how) == (8, stable)
    assert seen in ([(False, "done")],  # the v3 fast path sends it to the pool without trying
                    [(True, "wouldblock"), (False, "done")])  # the general path tries inline first
    assert (export_dir / "sync").read_bytes() == b"durable!"


def test_partial_page_not_in_the_page_cache_moves_to_the_pool(nfsd, calls, export_dir, recorded):
    _, seen = recorded
    path = export_dir / "cold"
    path.write_bytes(b"a" * 16384)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    root = calls.root()
    status, cold_fh = lookup(calls, root, "cold")
    assert status == 0
    fd = os.open(path, os.O_RDONLY)
    try:  # (no RWF_NOWAIT probe here: a probe that misses starts readahead of the page)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages leave the page cache
    finally:
        os.close(fd)
    committed(write(calls, cold_fh, 100, b"XYZ"))  # inside page 0, which is on disk only
    assert seen == [(True, "wouldblock"), (False, "done")]
    seen.clear()
    committed(write(calls, cold_fh, 8192, b"c" * 4096))  # a whole page: nothing to read
    assert seen == [(True, "done")]
    assert path.read_bytes() == b"a" * 100 + b"XYZ" + b"a" * 8089 + b"c" * 4096 + b"a" * 4096


def test_paused_inline_writes_and_a_retransmission_of_a_pooled_write(nfsd, calls, export_dir, recorded):
    backend, seen = recorded
    fh = new_fh_of(create(calls, calls.root(), "paused"))
    backend.inline_writes.paused_until = float("inf")  # as after an inline write that blocked
    first = write(calls, fh, 0, b"once", xid=0x5151)
    again = write(calls, fh, 0, b"once", xid=0x5151)  # retransmission: the DRC's reply
    assert first.body == again.body
    assert seen == [(True, "wouldblock"), (False, "done")]
    backend.inline_writes.paused_until = 0.0
    seen.clear()
    committed(write(calls, fh, 4, b"more"))
    assert seen == [(True, "done")]
    assert (export_dir / "paused").read_bytes() == b"oncemore"


def test_first_quota_scan_is_not_done_inline(nfsd, export_dir, exports):
    exports.add(Export("/q", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),),
                       quota_bytes=1 << 30))
    calls = NfsCalls(nfsd)
    try:
        root = calls.root("/q")
        fh = new_fh_of(create(calls, root, "quota"))  # in the pool too (usage unknown)
        count, _, _ = committed(write(calls, fh, 0, b"q" * 4096))
        assert count == 4096 and (export_dir / "quota").read_bytes() == b"q" * 4096
    finally:
        calls.close()


def test_an_inline_write_that_slept_pauses_inline_writes_and_preemption_does_not(nfsd):
    backend = backend_of_started(nfsd)
    nvcsw = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    backend._end_inline_write((time.monotonic() - 1.0, nvcsw))  # slow, but no voluntary switch: preempted
    assert backend.inline_writes.paused_until == 0.0 and backend.inline_writes.slow == 0
    backend._end_inline_write((time.monotonic() - 1.0, nvcsw - 1))  # slow and slept in the kernel
    assert backend.inline_writes.paused_until > time.monotonic() and backend.inline_writes.slow == 1
    node = backend.root
    with inline(), pytest.raises(WouldBlock):
        backend._begin_inline_write(-1, 0, 4096, StableHow.UNSTABLE, 0)
    assert node is backend.root


def test_nfs_cp_writes_inline_and_nfs_cat_reads_back(nfsd, export_dir, tmp_path, recorded):
    """A real client: nfs-cp writes 1 MiB UNSTABLE chunks (inline) and ends with COMMIT."""
    _, seen = recorded
    nfs_cp, nfs_cat = require_tool("nfs-cp"), require_tool("nfs-cat")
    source = tmp_path / "image.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
    subprocess.run([nfs_cp, str(source), nfsd.url(path="/image.bin")], check=True, timeout=60,
                   capture_output=True)
    assert (export_dir / "image.bin").read_bytes() == source.read_bytes()
    assert (True, "done") in seen
    out = subprocess.run([nfs_cat, nfsd.url(path="/image.bin")], check=True, timeout=60, capture_output=True).stdout
    assert out == source.read_bytes()


def test_overwrite_of_allocated_data_in_a_quota_export_runs_inline_without_a_usage_scan(nfsd, export_dir, exports):
    """A VM disk in a share: overwriting allocated blocks allocates nothing, so it needs no usage
    figure and runs inline (the usage is scanned meanwhile, off the event loop); a write into a
    hole of the same file still goes to the pool first while the usage is unknown."""
    (export_dir / "vm.img").write_bytes(b"v" * 65536)
    with open(export_dir / "vm.img", "r+b") as file:
        file.truncate(4 * 65536)  # a hole after the data
    exports.add(Export("/q", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),),
                       quota_bytes=1 << 30))
    calls = NfsCalls(nfsd)
    try:
        status, fh = lookup(calls, calls.root("/q"), "vm.img")
        assert status == 0
        backend = next(b for e, b in nfsd.server.state._backends.values() if e.path == "/q")
        seen: list[tuple[bool, str]] = []
        original = backend.write

        def recording_write(*args, **kwargs):
            try:
                result = original(*args, **kwargs)
            except WouldBlock:
                seen.append((inline_active(), "wouldblock"))
                raise
            seen.append((inline_active(), "done"))
            return result

        backend.write = recording_write
        release = threading.Event()
        real_current = backend.usage.current

        def held_scan(may_scan=True):  # the background scan waits until the hole write is done
            if may_scan and threading.current_thread().name == "acmenfs-usage-scan":
                release.wait(10)
            return real_current(may_scan)

        backend.usage.current = held_scan
        committed(write(calls, fh, 4096, b"w" * 4096))
        assert seen == [(True, "done")]
        seen.clear()
        committed(write(calls, fh, 3 * 65536, b"h" * 4096))  # into the hole: allocates
        assert seen == [(True, "wouldblock"), (False, "done")] and backend.usage.scanned
        release.set()
    finally:
        calls.close()


def test_a_thick_volume_at_its_quota_is_writable_with_a_cold_page_cache(nfsd, export_dir, exports):
    """The appliance's share: a preallocated volume as large as the quota (used == quota).
    Writing a block never written before allocates nothing, so it is no DQUOT, even when the
    page cache holds none of the file (SEEK_HOLE calls such blocks holes; FIEMAP does not)."""
    size = 8 << 20
    fd = os.open(export_dir / "thick.img", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    exports.add(Export("/q", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),),
                       quota_bytes=size))
    calls = NfsCalls(nfsd)
    try:
        status, fh = lookup(calls, calls.root("/q"), "thick.img")
        assert status == 0
        for offset in (5 << 20, 0, size - 4096):
            count, _, _ = committed(write(calls, fh, offset, b"t" * 4096))
            assert count == 4096
        assert write(calls, fh, size, b"x" * 4096).status == 69  # NFS3ERR_DQUOT: past the end allocates
        with open(export_dir / "thick.img", "rb") as volume:
            volume.seek(5 << 20)
            assert volume.read(4096) == b"t" * 4096
    finally:
        calls.close()


def test_pause_after_a_blocked_inline_call_starts_short_and_doubles_while_blocks_keep_coming():
    first, longest = INLINE_PAUSE_FIRST_SECONDS, INLINE_CHANGE_PAUSE_SECONDS
    assert next_pause(0.0, 0.0, 100.0) == first  # the first block ever
    assert next_pause(first, 100.1, 100.2) == 2 * first  # soon after the last pause ended
    assert next_pause(0.8, 100.0, 100.5) == 1.6
    assert next_pause(1.6, 100.0, 100.5) == longest  # capped
    assert next_pause(longest, 100.0, 100.0 + longest + 0.01) == first  # quiet since: short again


def test_voluntary_switches_are_counted_only_while_watching_after_a_slow_call():
    """A fast call pays no getrusage; a slow uncounted one starts a watch, the next slow call in it
    is judged by its switches (blocked: pause; preempted: none), and after a pause the watch goes on."""
    pause = InlinePause("writes")
    started = pause.start()
    assert started[1] == -1  # nothing slow yet: not counted
    pause.finish(started, "/e")
    assert pause.watch_until == 0.0 and pause.slow == 0
    pause.finish((time.monotonic() - 1.0, -1), "/e")  # slow, uncounted: cannot tell, so watch
    assert pause.paused_until == 0.0 and pause.slow == 0
    assert time.monotonic() < pause.watch_until <= time.monotonic() + INLINE_WATCH_SECONDS
    counted = pause.start()
    assert counted[1] == resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw  # no sleep in between
    pause.finish((counted[0] - 1.0, counted[1]), "/e")  # slow, no voluntary switch: preempted
    assert pause.paused_until == 0.0 and pause.slow == 0
    pause.finish((counted[0] - 1.0, counted[1] - 1), "/e")  # slow and slept in the kernel
    assert pause.slow == 1 and pause.paused_until > time.monotonic()
    assert pause.watch_until >= pause.paused_until + INLINE_WATCH_SECONDS
    with pytest.raises(WouldBlock):
        pause.start()


def test_an_isolated_blocked_inline_write_pauses_inline_writes_briefly_and_a_second_one_longer(nfsd):
    backend = backend_of_started(nfsd)
    nvcsw = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    before = time.monotonic()
    backend._end_inline_write((time.monotonic() - 1.0, nvcsw - 1))
    first_until = backend.inline_writes.paused_until
    assert before + INLINE_PAUSE_FIRST_SECONDS <= first_until <= time.monotonic() + INLINE_PAUSE_FIRST_SECONDS
    backend._end_inline_write((time.monotonic() - 1.0, nvcsw - 1))  # blocked again at once
    assert backend.inline_writes.paused_until >= first_until + INLINE_PAUSE_FIRST_SECONDS
    assert backend.inline_writes.slow == 2
