"""Tests of the duplicate request cache (acmenfs.oncrpc.drc).

Owns checking the DRC's behaviour with real bytes, a settable clock and real
threads: replay, in-progress drops, payload misses, expiry, the entry bound,
statistics, a model-based stateful test and a multi-threaded hammer test.
Must not assert on timing.
"""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from acmenfs.oncrpc.drc import (
    CHECKSUM_PREFIX_BYTES,
    DrcStatus,
    DuplicateRequestCache,
    RequestKey,
    make_request_key,
)

CLIENT = ("192.0.2.7", 801)
NFS_PROGRAM, NFS_VERSION, NFSPROC3_CREATE, NFSPROC3_REMOVE = 100003, 3, 8, 12


class SettableClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def create_key(xid: int, client=CLIENT, args: bytes = b"\x00\x00\x00\x05hello\x00\x00\x00") -> RequestKey:
    return make_request_key(xid, client, NFS_PROGRAM, NFS_VERSION, NFSPROC3_CREATE, args)


def finish(cache: DuplicateRequestCache, key: RequestKey, reply: bytes) -> None:
    status, token = cache.check(key)
    assert status is DrcStatus.NEW
    cache.done(token, reply)


def keys_in_one_bucket(cache: DuplicateRequestCache, count: int) -> list[RequestKey]:
    """Keys that the cache puts in the same bucket (found by trying xids)."""
    buckets = cache.stats().buckets
    wanted_bucket = hash((1, CLIENT)) & (buckets - 1)
    xids = (x for x in range(1, 10**6) if hash((x, CLIENT)) & (buckets - 1) == wanted_bucket)
    return [create_key(next(xids)) for _ in range(count)]


# -- keys ---------------------------------------------------------------------


def test_key_checksums_only_the_first_256_argument_bytes():
    head = bytes(range(256))
    key_a = make_request_key(9, CLIENT, 1, 2, 3, head + b"tail-one")
    key_b = make_request_key(9, CLIENT, 1, 2, 3, memoryview(head + b"tail-two"))
    assert key_a == key_b
    assert key_a.arg_length == CHECKSUM_PREFIX_BYTES + 8
    assert make_request_key(9, CLIENT, 1, 2, 3, b"x" + head[1:] + b"tail-one") != key_a


def test_key_differs_by_length_of_arguments():
    assert create_key(5, args=b"abcd") != create_key(5, args=b"abcd\0\0\0\0")


# -- check / done / drop ------------------------------------------------------


def test_retransmission_of_done_call_gets_identical_reply_bytes():
    cache = DuplicateRequestCache()
    reply = bytes(range(200)) * 3
    finish(cache, create_key(42), reply)
    status, replayed = cache.check(create_key(42))
    assert status is DrcStatus.DONE
    assert replayed == reply
    assert cache.stats().hits == 1


def test_reply_is_copied_so_the_caller_may_reuse_its_buffer():
    cache = DuplicateRequestCache()
    buffer = bytearray(b"reply-v1")
    _, token = cache.check(create_key(1))
    cache.done(token, buffer)
    buffer[:] = b"XXXXXXXX"
    assert cache.check(create_key(1)) == (DrcStatus.DONE, b"reply-v1")


def test_retransmission_while_in_progress_is_dropped():
    cache = DuplicateRequestCache()
    status, token = cache.check(create_key(7))
    assert status is DrcStatus.NEW
    assert cache.check(create_key(7)) == (DrcStatus.IN_PROGRESS, None)
    cache.done(token, b"late reply")
    assert cache.check(create_key(7)) == (DrcStatus.DONE, b"late reply")
    stats = cache.stats()
    assert (stats.in_progress_hits, stats.hits, stats.in_progress) == (1, 1, 0)


def test_reused_xid_with_other_arguments_is_a_payload_miss_not_a_replay():
    cache = DuplicateRequestCache()
    finish(cache, create_key(99, args=b"create file a"), b"reply for a")
    status, token = cache.check(create_key(99, args=b"create file b"))
    assert status is DrcStatus.NEW
    cache.done(token, b"reply for b")
    assert cache.check(create_key(99, args=b"create file b")) == (DrcStatus.DONE, b"reply for b")
    assert cache.check(create_key(99, args=b"create file a"))[0] is DrcStatus.NEW
    assert cache.stats().payload_misses == 2


def test_reused_xid_with_other_procedure_is_a_payload_miss():
    cache = DuplicateRequestCache()
    args = b"same bytes"
    finish(cache, make_request_key(5, CLIENT, NFS_PROGRAM, NFS_VERSION, NFSPROC3_CREATE, args), b"r")
    status, _ = cache.check(make_request_key(5, CLIENT, NFS_PROGRAM, NFS_VERSION, NFSPROC3_REMOVE, args))
    assert status is DrcStatus.NEW
    assert cache.stats().payload_misses == 1


def test_payload_miss_against_in_progress_call_runs_uncached_and_keeps_original():
    cache = DuplicateRequestCache()
    _, original = cache.check(create_key(3, args=b"first"))
    status, detached = cache.check(create_key(3, args=b"second"))
    assert status is DrcStatus.NEW
    cache.done(detached, b"second reply")
    cache.done(original, b"first reply")
    assert cache.check(create_key(3, args=b"first")) == (DrcStatus.DONE, b"first reply")
    assert len(cache) == 1


def test_other_client_port_is_another_entry():
    cache = DuplicateRequestCache()
    finish(cache, create_key(11, client=("192.0.2.7", 801)), b"for port 801")
    status, token = cache.check(create_key(11, client=("192.0.2.7", 802)))
    assert status is DrcStatus.NEW
    cache.done(token, b"for port 802")
    assert cache.check(create_key(11, client=("192.0.2.7", 801))) == (DrcStatus.DONE, b"for port 801")
    assert cache.check(create_key(11, client=("192.0.2.7", 802))) == (DrcStatus.DONE, b"for port 802")
    assert len(cache) == 2


def test_drop_removes_the_entry():
    cache = DuplicateRequestCache()
    _, token = cache.check(create_key(8))
    cache.drop(token)
    assert len(cache) == 0
    assert cache.check(create_key(8))[0] is DrcStatus.NEW
    assert cache.stats().in_progress == 1


def test_completing_a_token_twice_is_refused():
    cache = DuplicateRequestCache()
    _, token = cache.check(create_key(8))
    cache.done(token, b"r")
    with pytest.raises(ValueError, match="already completed"):
        cache.done(token, b"r")
    with pytest.raises(ValueError, match="already completed"):
        cache.drop(token)
    with pytest.raises(TypeError, match="not a DRC token"):
        cache.done(object(), b"r")


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        DuplicateRequestCache(buckets=1000)
    with pytest.raises(ValueError, match="max_entries"):
        DuplicateRequestCache(max_entries=0)
    with pytest.raises(ValueError, match="lifetime"):
        DuplicateRequestCache(lifetime=0)


# -- expiry -------------------------------------------------------------------


def test_expired_entry_is_freed_when_its_bucket_is_walked():
    clock = SettableClock()
    cache = DuplicateRequestCache(lifetime=120, buckets=1, clock=clock)
    finish(cache, create_key(1), b"old")
    clock.now += 120
    assert cache.check(create_key(1))[0] is DrcStatus.DONE  # not yet past the lifetime
    clock.now += 120.5
    status, token = cache.check(create_key(2))
    cache.done(token, b"new")
    assert cache.stats().walk_frees == 1
    assert len(cache) == 1
    assert cache.check(create_key(1))[0] is DrcStatus.NEW


def test_gc_frees_expired_done_entries_everywhere_but_not_in_progress():
    clock = SettableClock()
    cache = DuplicateRequestCache(lifetime=60, clock=clock)
    for xid in range(100):
        finish(cache, create_key(xid), b"r%d" % xid)
    _, running = cache.check(create_key(1000))
    clock.now += 30
    finish(cache, create_key(500), b"young")
    clock.now += 31
    assert cache.gc() == 100
    stats = cache.stats()
    assert (stats.gc_frees, stats.entries, stats.in_progress) == (100, 2, 1)
    assert stats.mean_cached_lifetime == pytest.approx(61)
    cache.done(running, b"finally")
    assert cache.check(create_key(1000)) == (DrcStatus.DONE, b"finally")


def test_hit_refreshes_timestamp_and_lru_position():
    clock = SettableClock()
    cache = DuplicateRequestCache(max_entries=2, lifetime=100, buckets=1, clock=clock)
    finish(cache, create_key(1), b"one")
    clock.now += 10
    finish(cache, create_key(2), b"two")
    clock.now += 80
    assert cache.check(create_key(1)) == (DrcStatus.DONE, b"one")  # 1 is now the newest
    clock.now += 15  # 1 was refreshed 15 s ago, 2 finished 95 s ago
    finish(cache, create_key(3), b"three")  # over the bound: replaces the oldest DONE, i.e. 2
    assert cache.check(create_key(1)) == (DrcStatus.DONE, b"one")
    assert cache.check(create_key(2))[0] is DrcStatus.NEW
    clock.now += 101  # 1 expires only 100 s after its last hit
    assert cache.gc() == 2  # 1 and 3 (2 is in progress again)


# -- the entry bound ----------------------------------------------------------


def test_at_the_bound_the_oldest_done_entry_of_the_bucket_is_replaced():
    cache = DuplicateRequestCache(max_entries=3, buckets=1)
    for xid in (1, 2, 3):
        finish(cache, create_key(xid), b"r%d" % xid)
    finish(cache, create_key(4), b"r4")
    assert len(cache) == 3
    assert cache.check(create_key(1))[0] is DrcStatus.NEW
    stats = cache.stats()
    assert (stats.replacements, stats.overflows) == (1, 0)


def test_new_calls_are_admitted_above_the_bound_and_in_progress_never_evicted():
    cache = DuplicateRequestCache(max_entries=2, buckets=1)
    tokens = [cache.check(create_key(xid))[1] for xid in range(5)]
    assert len(cache) == 5
    assert all(cache.check(create_key(xid)) == (DrcStatus.IN_PROGRESS, None) for xid in range(5))
    cache.done(tokens[0], b"r0")  # 5 entries > 2, no DONE to replace: not kept
    stats = cache.stats()
    assert (stats.overflows, stats.entries, stats.in_progress) == (1, 4, 4)
    assert all(cache.check(create_key(xid))[0] is DrcStatus.IN_PROGRESS for xid in range(1, 5))


def test_overflow_when_bucket_has_no_done_entry_even_if_others_do():
    cache = DuplicateRequestCache(max_entries=4, buckets=2)
    first_bucket = keys_in_one_bucket(cache, 4)
    first_index = hash((first_bucket[0].xid, CLIENT)) & 1
    other_bucket = next(create_key(x) for x in range(10**6) if hash((x, CLIENT)) & 1 != first_index)
    for key in first_bucket[:3]:
        finish(cache, key, b"kept")
    _, running = cache.check(other_bucket)
    _, last = cache.check(first_bucket[3])
    cache.done(running, b"other bucket reply")  # 5 > 4 and its bucket holds only itself
    cache.done(last, b"replaces oldest")  # 4 entries now: fits
    stats = cache.stats()
    assert (stats.overflows, stats.replacements, stats.entries) == (1, 0, 4)
    assert cache.check(other_bucket)[0] is DrcStatus.NEW


def test_replacement_skips_in_progress_head_and_takes_first_done():
    cache = DuplicateRequestCache(max_entries=2, buckets=1)
    _, running = cache.check(create_key(1))
    finish(cache, create_key(2), b"r2")
    finish(cache, create_key(3), b"r3")  # 3 entries > 2: 2 is replaced, 1 stays
    assert cache.check(create_key(1)) == (DrcStatus.IN_PROGRESS, None)
    assert cache.check(create_key(2))[0] is DrcStatus.NEW
    assert cache.stats().replacements == 1


# -- allocation failure -------------------------------------------------------


class CacheWhoseAllocationFails(DuplicateRequestCache):
    """Fault injection: Python allocation cannot be made to fail on demand."""

    def _allocate_entry(self, *args):
        raise MemoryError("simulated")


def test_allocation_failure_is_counted_and_the_call_runs_uncached():
    cache = CacheWhoseAllocationFails()
    status, token = cache.check(create_key(1))
    assert status is DrcStatus.NEW
    cache.done(token, b"not kept")
    assert len(cache) == 0
    assert cache.stats().allocation_failures == 1
    with pytest.raises(ValueError):
        cache.drop(token)


# -- GC thread ----------------------------------------------------------------


def test_gc_thread_frees_expired_entries_and_stops():
    clock = SettableClock()
    cache = DuplicateRequestCache(lifetime=1, clock=clock)
    finish(cache, create_key(1), b"r")
    clock.now += 5
    thread = cache.start_gc_thread(interval=0.01)
    pause = threading.Event()
    for _ in range(1000):  # poll: the thread runs gc() every 10 ms
        if len(cache) == 0:
            break
        pause.wait(0.01)
    cache.stop_gc_thread()
    assert len(cache) == 0
    assert not thread.is_alive()
    assert cache.stats().gc_frees == 1


# -- model-based stateful test ------------------------------------------------


class ReferenceCache:
    """The obvious single-list implementation with one bucket, for comparison."""

    def __init__(self, max_entries: int, lifetime: float) -> None:
        self.max_entries, self.lifetime = max_entries, lifetime
        self.entries: list[dict] = []  # oldest first

    def _find(self, key):
        return next((e for e in self.entries if (e["key"].xid, e["key"].client) == (key.xid, key.client)), None)

    def check(self, key, now):
        self.entries = [e for e in self.entries if not (e["state"] == "done" and e["stamp"] < now - self.lifetime)]
        found = self._find(key)
        if found is not None and found["key"] == key:
            self.entries.remove(found)
            found["stamp"] = now
            self.entries.append(found)
            return (DrcStatus.DONE, found["reply"]) if found["state"] == "done" else (DrcStatus.IN_PROGRESS, None)
        if found is not None:
            if found["state"] == "in_progress":
                return DrcStatus.NEW, None
            self.entries.remove(found)
        entry = {"key": key, "state": "in_progress", "stamp": now, "reply": None}
        self.entries.append(entry)
        return DrcStatus.NEW, entry

    def done(self, entry, reply, now):
        if entry is None:
            return
        if len(self.entries) > self.max_entries:
            oldest_done = next((e for e in self.entries if e["state"] == "done"), None)
            if oldest_done is None:
                self.entries.remove(entry)
                return
            self.entries.remove(oldest_done)
        entry.update(state="done", reply=reply, stamp=now)
        self.entries.remove(entry)
        self.entries.append(entry)

    def drop(self, entry):
        if entry is not None:
            self.entries.remove(entry)

    def gc(self, now):
        before = len(self.entries)
        self.entries = [e for e in self.entries if not (e["state"] == "done" and e["stamp"] < now - self.lifetime)]
        return before - len(self.entries)


XIDS = st.integers(min_value=0, max_value=5)
PORTS = st.sampled_from([801, 802])
ARGS = st.sampled_from([b"a", b"b"])


class DrcAgainstReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = SettableClock()
        self.cache = DuplicateRequestCache(max_entries=4, lifetime=10, buckets=1, clock=self.clock)
        self.reference = ReferenceCache(max_entries=4, lifetime=10)
        self.pending: list[tuple[object, object, RequestKey]] = []

    @rule(xid=XIDS, port=PORTS, args=ARGS)
    def check(self, xid, port, args):
        key = create_key(xid, client=("192.0.2.1", port), args=args)
        status, value = self.cache.check(key)
        expected_status, expected_value = self.reference.check(key, self.clock.now)
        assert status is expected_status
        if status is DrcStatus.DONE:
            assert value == expected_value
        if status is DrcStatus.NEW:
            self.pending.append((value, expected_value, key))

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(min_value=0), reply=st.binary(max_size=8))
    def done(self, index, reply):
        token, reference_entry, _ = self.pending.pop(index % len(self.pending))
        self.cache.done(token, reply)
        self.reference.done(reference_entry, reply, self.clock.now)

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(min_value=0))
    def drop(self, index):
        token, reference_entry, _ = self.pending.pop(index % len(self.pending))
        self.cache.drop(token)
        self.reference.drop(reference_entry)

    @rule(seconds=st.sampled_from([0.5, 3, 9, 11]))
    def advance(self, seconds):
        self.clock.now += seconds

    @rule()
    def gc(self):
        assert self.cache.gc() == self.reference.gc(self.clock.now)

    @invariant()
    def same_entries(self):
        assert len(self.cache) == len(self.reference.entries)
        stats = self.cache.stats()
        assert stats.entries == len(self.cache)
        assert stats.in_progress == sum(e["state"] == "in_progress" for e in self.reference.entries)


TestDrcAgainstReference = DrcAgainstReference.TestCase
TestDrcAgainstReference.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- threads ------------------------------------------------------------------


def test_many_threads_checking_and_completing_keep_counts_consistent():
    cache = DuplicateRequestCache(max_entries=300, buckets=8)
    clients = [("192.0.2.9", port) for port in range(800, 806)]
    thread_count, calls_per_thread = 6, 3000
    completions: list[tuple[object, bytes]] = []
    completions_lock = threading.Lock()
    errors: list[BaseException] = []
    replay_mismatches: list[RequestKey] = []
    start = threading.Barrier(thread_count + 1)

    def reply_for(key: RequestKey) -> bytes:
        return b"reply:%d:%d" % (key.xid, key.client[1])

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(calls_per_thread):
                key = create_key(rng.randrange(600), client=rng.choice(clients))
                status, value = cache.check(key)
                if status is DrcStatus.DONE and value != reply_for(key):
                    replay_mismatches.append(key)
                if status is DrcStatus.NEW:
                    with completions_lock:
                        completions.append((value, reply_for(key)))
                # complete someone's call, often one checked by another thread
                with completions_lock:
                    job = completions.pop(rng.randrange(len(completions))) if completions else None
                if job is not None:
                    token, reply = job
                    if rng.random() < 0.1:
                        cache.drop(token)
                    else:
                        cache.done(token, reply)
        except BaseException as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(thread_count)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    assert errors == []
    assert replay_mismatches == []
    for token, reply in completions:
        cache.done(token, reply)
    stats = cache.stats()
    assert stats.in_progress == 0
    assert stats.entries == len(cache) <= 300
    assert stats.checks == thread_count * calls_per_thread
    assert stats.hits + stats.in_progress_hits > 0
