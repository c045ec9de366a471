"""Duplicate request cache (DRC) for non-idempotent ONC RPC calls.

Owns remembering which calls are being executed or were answered recently, so
that a retransmitted call (same client, same xid, same arguments) is either
dropped while the original still runs or answered with the exact reply bytes
sent the first time, instead of being executed twice.

It must not decode or encode RPC messages, decide which procedures are
idempotent, touch sockets or start anything on its own: the dispatcher builds
a ``RequestKey`` with ``make_request_key``, asks ``check``, runs the handler and
reports ``done`` (with the encoded reply) or ``drop``; the server calls ``gc``
on a timer (or uses ``start_gc_thread``).

Design (the Illumos ``svc_cots_kdup`` rework of the blog post "NFS Duplicate
request hash", converging with Linux knfsd ``nfscache.c``):

* A power-of-two table of buckets, each with its own ``threading.Lock`` and an
  ``OrderedDict`` kept in LRU order (oldest first). The bucket is chosen by
  hashing the xid and the client address. By default there is one bucket per
  64 entries (512 for 32768), as knfsd sizes its table: lookups are dict probes
  and walks stop at the first unexpired entry, so long buckets cost little,
  while replacement at the bound is only LRU within a bucket, and with short
  buckets (8 entries) a retransmission storm near the bound lost several times
  more replies (see bench/bench_drc.py).
* Inside a bucket an entry is found by its *identity* (xid, client). The rest of
  the key (prog, vers, proc, argument length, checksum of the first 256 argument
  bytes) is its *fingerprint*: a call whose identity matches but whose
  fingerprint differs is a reused xid with other arguments, counted as a
  "payload miss" and executed as a new call, never replayed.
* A new call is inserted IN_PROGRESS before its handler runs, even above
  ``max_entries``; the entry object is allocated before the bucket lock is taken
  because misses are the common case. ``done`` stores the reply, stamps the
  entry and moves it to the bucket tail (knfsd stamps at completion; the
  original stamps at arrival, which shortens the life of slow calls' replies).
  A hit also moves its entry to the tail with a fresh stamp, so every bucket
  stays ordered by stamp and expired entries form a prefix of it.
* Expired DONE entries are freed when a bucket is walked by ``check`` and by
  ``gc`` everywhere. IN_PROGRESS entries are never evicted or expired.
* When ``done`` finds more than ``max_entries`` entries, the oldest DONE entry
  of the same bucket is freed to make room (the original looks only at the
  bucket head; we take the first DONE one); if the bucket has none, the reply is
  not kept and the call is counted as an overflow.
* ``drop`` (the handler decided its reply must not be cached, or it failed)
  removes the entry.

Allocation failure: Python raises ``MemoryError`` instead of returning NULL. If
creating an entry raises it, the failure is counted, the lookup still happens
(a retransmission can still be answered), and a miss is returned as NEW with a
detached token: the call runs uncached and ``done``/``drop`` on that token do
nothing. Likewise a payload miss against an entry still IN_PROGRESS gets a
detached token, because that entry must not be evicted.

Thread safety: per-bucket state and per-bucket counters change only under the
bucket lock; the global entry count (needed for the ``max_entries`` bound) has
its own small lock, always taken after a bucket lock, never before one.
``check`` and ``done``/``drop`` for one token may run in different threads.
"""

from __future__ import annotations

import enum
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

CHECKSUM_PREFIX_BYTES = 256
DEFAULT_MAX_ENTRIES = 32768
DEFAULT_LIFETIME_SECONDS = 120.0
ENTRIES_PER_BUCKET_TARGET = 64  # knfsd's TARGET_BUCKET_SIZE; see below
MAX_DEFAULT_BUCKETS = 65536


class DrcStatus(enum.Enum):
    """What ``check`` found for a call."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class _EntryState(enum.Enum):
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FINISHED = "finished"  # token completed (done/drop) and no longer cached
    DETACHED = "detached"  # token of a call that runs uncached


class RequestKey(tuple):
    """Everything that tells one RPC call from another for the DRC.

    A tuple ``(identity, fingerprint)`` with ``identity = (xid, client)`` and
    ``fingerprint = (prog, vers, proc, arg_length, checksum)``: the two halves
    ``check`` needs, built in one step (a frozen dataclass cost a microsecond a
    call). Immutable, hashable, compared by value; the fields are properties.
    """

    __slots__ = ()

    def __new__(cls, xid: int, client: Hashable, prog: int, vers: int, proc: int,
                arg_length: int, checksum: int) -> "RequestKey":
        return tuple.__new__(cls, ((xid, client), (prog, vers, proc, arg_length, checksum)))

    @property
    def identity(self) -> tuple:
        return self[0]

    @property
    def fingerprint(self) -> tuple:
        return self[1]

    xid = property(lambda self: self[0][0])
    client = property(lambda self: self[0][1])
    prog = property(lambda self: self[1][0])
    vers = property(lambda self: self[1][1])
    proc = property(lambda self: self[1][2])
    arg_length = property(lambda self: self[1][3])
    checksum = property(lambda self: self[1][4])

    def __repr__(self) -> str:
        (xid, client), (prog, vers, proc, arg_length, checksum) = self
        return (f"RequestKey(xid={xid!r}, client={client!r}, prog={prog!r}, vers={vers!r}, "
                f"proc={proc!r}, arg_length={arg_length!r}, checksum={checksum!r})")


_new_tuple = tuple.__new__
_crc32 = zlib.crc32


def make_request_key(
    xid: int,
    client: Hashable,
    prog: int,
    vers: int,
    proc: int,
    args: bytes | bytearray | memoryview,
) -> RequestKey:
    """Build the key of a call; ``args`` are its encoded arguments.

    Only the first 256 argument bytes are checksummed (CRC-32), as knfsd does:
    together with the length this tells a retransmission from an xid reused
    for another call, without hashing whole WRITE payloads.
    """
    # tuple.__new__ directly: skips the Python-level RequestKey.__new__ call.
    return _new_tuple(RequestKey, ((xid, client), (prog, vers, proc, len(args),
                                                    _crc32(args[:CHECKSUM_PREFIX_BYTES]))))


@dataclass(frozen=True, slots=True)
class DrcStats:
    """A snapshot of the cache counters (read by /metrics).

    ``hits`` counts duplicates answered with a stored reply and
    ``in_progress_hits`` duplicates dropped because the original still runs.
    ``overflows`` counts replies not kept because the cache was full and the
    bucket had no DONE entry to replace; ``replacements`` counts DONE entries
    freed to make room. ``walk_frees``/``gc_frees`` count expired entries freed
    by a bucket walk in ``check`` or by ``gc``. ``mean_cached_lifetime`` is the
    mean age, in clock seconds, of DONE entries when they left the cache
    (expired or replaced); 0.0 before any left.
    """

    checks: int
    hits: int
    in_progress_hits: int
    payload_misses: int
    overflows: int
    replacements: int
    allocation_failures: int
    entries: int
    in_progress: int
    walk_frees: int
    gc_frees: int
    mean_cached_lifetime: float
    max_entries: int
    lifetime: float
    buckets: int


# Module globals for the per-call paths: an Enum member lookup costs ~70 ns on 3.11.
_NEW = DrcStatus.NEW
_IN_PROGRESS = _EntryState.IN_PROGRESS
_DONE = _EntryState.DONE
_FINISHED = _EntryState.FINISHED


class _Entry:
    """One remembered call; also the opaque token handed to the caller."""

    __slots__ = ("identity", "fingerprint", "bucket_index", "state", "stamp", "reply")

    def __init__(self, identity: tuple, fingerprint: tuple, bucket_index: int, stamp: float) -> None:
        self.identity = identity
        self.fingerprint = fingerprint
        self.bucket_index = bucket_index
        self.state = _IN_PROGRESS
        self.stamp = stamp
        self.reply: bytes | None = None


class _Bucket:
    """One hash chain: its lock, its entries in LRU order and its counters."""

    __slots__ = (
        "lock",
        "entries",
        "in_progress",
        "checks",
        "hits",
        "in_progress_hits",
        "payload_misses",
        "overflows",
        "replacements",
        "walk_frees",
        "gc_frees",
        "freed_done_count",
        "freed_done_age_total",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self.in_progress = 0
        self.checks = 0
        self.hits = 0
        self.in_progress_hits = 0
        self.payload_misses = 0
        self.overflows = 0
        self.replacements = 0
        self.walk_frees = 0
        self.gc_frees = 0
        self.freed_done_count = 0
        self.freed_done_age_total = 0.0


def _default_bucket_count(max_entries: int) -> int:
    wanted = max(1, max_entries // ENTRIES_PER_BUCKET_TARGET)
    return min(MAX_DEFAULT_BUCKETS, 1 << (wanted - 1).bit_length())


class DuplicateRequestCache:
    """Per-bucket-locked, LRU-ordered, time-bounded duplicate request cache."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        lifetime: float = DEFAULT_LIFETIME_SECONDS,
        buckets: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if not lifetime > 0:
            raise ValueError(f"lifetime must be a positive number of seconds, got {lifetime}")
        if buckets is None:
            buckets = _default_bucket_count(max_entries)
        if buckets < 1 or buckets & (buckets - 1):
            raise ValueError(f"buckets must be a power of two, got {buckets}")
        self.max_entries = max_entries
        self.lifetime = float(lifetime)
        self._clock = clock
        self._mask = buckets - 1
        self._buckets = tuple(_Bucket() for _ in range(buckets))
        self._entry_count = 0
        self._allocation_failures = 0
        self._count_lock = threading.Lock()
        self._gc_stop: threading.Event | None = None
        self._gc_thread: threading.Thread | None = None

    # -- the dispatcher's API -------------------------------------------------

    def check(self, key: RequestKey) -> tuple[DrcStatus, object]:
        """Look a call up; insert it IN_PROGRESS when it is new.

        Returns ``(NEW, token)``: run the handler, then ``done(token, reply)``
        or ``drop(token)``; ``(IN_PROGRESS, None)``: the original still runs,
        send nothing; ``(DONE, reply_bytes)``: send these bytes as they are.
        """
        identity, fingerprint = key
        bucket_index = hash(identity) & self._mask
        now = self._clock()
        try:
            new_entry = self._allocate_entry(identity, fingerprint, bucket_index, now)
        except MemoryError:
            new_entry = None
            self._count_allocation_failure()
        bucket = self._buckets[bucket_index]
        entries = bucket.entries
        with bucket.lock:
            bucket.checks += 1
            if entries and next(iter(entries.values())).stamp < now - self.lifetime:
                self._free_expired_prefix(bucket, now, from_gc=False)
            cached = entries.get(identity)
            if cached is not None:
                if cached.fingerprint == fingerprint:
                    return self._answer_duplicate(bucket, cached, now)
                bucket.payload_misses += 1
                if cached.state is _IN_PROGRESS:
                    return DrcStatus.NEW, self._detached(identity, fingerprint, now)
                self._free_done_entry(bucket, cached, now)
            if new_entry is None:
                return DrcStatus.NEW, self._detached(identity, fingerprint, now)
            entries[identity] = new_entry
            bucket.in_progress += 1
            with self._count_lock:
                self._entry_count += 1
        return _NEW, new_entry

    def done(self, token: object, reply: bytes | bytearray | memoryview) -> None:
        """Record the encoded reply of the call ``token`` stands for."""
        entry = token if type(token) is _Entry else self._validated_token(token)
        if entry.bucket_index < 0:
            self._finish_detached(entry)
            return
        stored_reply = reply if type(reply) is bytes else bytes(reply)
        bucket = self._buckets[entry.bucket_index]
        with bucket.lock:
            if entry.state is not _IN_PROGRESS:
                self._raise_completed_twice(entry)
            bucket.in_progress -= 1
            now = self._clock()
            if self._entry_count > self.max_entries and not self._replace_oldest_done(bucket, now):
                bucket.overflows += 1
                self._unlink(bucket, entry)
                entry.state = _FINISHED
                return
            entry.reply = stored_reply
            entry.state = _DONE
            entry.stamp = now
            bucket.entries.move_to_end(entry.identity)

    def drop(self, token: object) -> None:
        """Forget the call ``token`` stands for; its reply must not be replayed."""
        entry = self._validated_token(token)
        if entry.bucket_index < 0:
            self._finish_detached(entry)
            return
        bucket = self._buckets[entry.bucket_index]
        with bucket.lock:
            if entry.state is not _IN_PROGRESS:
                self._raise_completed_twice(entry)
            bucket.in_progress -= 1
            self._unlink(bucket, entry)
            entry.state = _FINISHED

    def gc(self) -> int:
        """Free expired DONE entries in every bucket; return how many."""
        now = self._clock()
        freed = 0
        for bucket in self._buckets:
            with bucket.lock:
                freed += self._free_expired_prefix(bucket, now, from_gc=True)
        return freed

    def stats(self) -> DrcStats:
        """Sum the per-bucket counters into one snapshot."""
        buckets = self._buckets
        freed_done_count = sum(b.freed_done_count for b in buckets)
        freed_done_age_total = sum(b.freed_done_age_total for b in buckets)
        mean_lifetime = freed_done_age_total / freed_done_count if freed_done_count else 0.0
        return DrcStats(
            checks=sum(b.checks for b in buckets),
            hits=sum(b.hits for b in buckets),
            in_progress_hits=sum(b.in_progress_hits for b in buckets),
            payload_misses=sum(b.payload_misses for b in buckets),
            overflows=sum(b.overflows for b in buckets),
            replacements=sum(b.replacements for b in buckets),
            allocation_failures=self._allocation_failures,
            entries=self._entry_count,
            in_progress=sum(b.in_progress for b in buckets),
            walk_frees=sum(b.walk_frees for b in buckets),
            gc_frees=sum(b.gc_frees for b in buckets),
            mean_cached_lifetime=mean_lifetime,
            max_entries=self.max_entries,
            lifetime=self.lifetime,
            buckets=len(buckets),
        )

    def __len__(self) -> int:
        return self._entry_count

    # -- periodic GC helper ---------------------------------------------------

    def start_gc_thread(self, interval: float | None = None) -> threading.Thread:
        """Run ``gc`` every ``interval`` seconds (default lifetime/4) in a daemon thread."""
        if self._gc_thread is not None:
            raise RuntimeError("the DRC garbage collection thread is already running")
        period = self.lifetime / 4 if interval is None else interval
        if not period > 0:
            raise ValueError(f"gc interval must be a positive number of seconds, got {interval}")
        stop = threading.Event()
        thread = threading.Thread(target=self._gc_loop, args=(stop, period), name="drc-gc", daemon=True)
        self._gc_stop, self._gc_thread = stop, thread
        thread.start()
        return thread

    def stop_gc_thread(self) -> None:
        """Stop the thread started by ``start_gc_thread`` and wait for it."""
        if self._gc_thread is None or self._gc_stop is None:
            return
        self._gc_stop.set()
        self._gc_thread.join()
        self._gc_stop = self._gc_thread = None

    def _gc_loop(self, stop: threading.Event, period: float) -> None:
        while not stop.wait(period):
            self.gc()

    # -- internals (bucket lock held where the name says so) -------------------

    def _allocate_entry(self, identity: tuple, fingerprint: tuple, bucket_index: int, now: float) -> _Entry:
        return _Entry(identity, fingerprint, bucket_index, now)

    def _count_allocation_failure(self) -> None:
        with self._count_lock:
            self._allocation_failures += 1

    @staticmethod
    def _detached(identity: tuple, fingerprint: tuple, now: float) -> _Entry:
        entry = _Entry(identity, fingerprint, -1, now)
        entry.state = _EntryState.DETACHED
        return entry

    def _answer_duplicate(self, bucket: _Bucket, cached: _Entry, now: float) -> tuple[DrcStatus, object]:
        # The client retried, so it may retry again: keep the entry longer.
        cached.stamp = now
        bucket.entries.move_to_end(cached.identity)
        if cached.state is _DONE:
            bucket.hits += 1
            return DrcStatus.DONE, cached.reply
        bucket.in_progress_hits += 1
        return DrcStatus.IN_PROGRESS, None

    def _free_expired_prefix(self, bucket: _Bucket, now: float, from_gc: bool) -> int:
        """Free expired DONE entries (bucket lock held); entries are ordered by stamp."""
        oldest_allowed = now - self.lifetime
        expired = []
        for entry in bucket.entries.values():
            if entry.stamp >= oldest_allowed:
                break
            if entry.state is _DONE:
                expired.append(entry)
        for entry in expired:
            self._free_done_entry(bucket, entry, now)
        if from_gc:
            bucket.gc_frees += len(expired)
        else:
            bucket.walk_frees += len(expired)
        return len(expired)

    def _replace_oldest_done(self, bucket: _Bucket, now: float) -> bool:
        """Free the bucket's oldest DONE entry (bucket lock held); False if none."""
        for entry in bucket.entries.values():
            if entry.state is _DONE:
                self._free_done_entry(bucket, entry, now)
                bucket.replacements += 1
                return True
        return False

    def _free_done_entry(self, bucket: _Bucket, entry: _Entry, now: float) -> None:
        bucket.freed_done_count += 1
        bucket.freed_done_age_total += now - entry.stamp
        self._unlink(bucket, entry)
        entry.state = _FINISHED
        entry.reply = None

    def _unlink(self, bucket: _Bucket, entry: _Entry) -> None:
        del bucket.entries[entry.identity]
        with self._count_lock:
            self._entry_count -= 1

    @staticmethod
    def _validated_token(token: object) -> _Entry:
        if not isinstance(token, _Entry):
            raise TypeError(f"not a DRC token: {type(token).__name__}")
        return token

    @staticmethod
    def _raise_completed_twice(entry: _Entry) -> None:
        raise ValueError(f"DRC token for xid {entry.identity[0]} was already completed (done or drop called twice)")

    @classmethod
    def _finish_detached(cls, entry: _Entry) -> None:
        if entry.state is not _EntryState.DETACHED:
            cls._raise_completed_twice(entry)
        entry.state = _FINISHED
