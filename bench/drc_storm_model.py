"""Models and a simulated-time driver for the DRC benchmarks (bench/bench_drc.py).

Owns two small models of the *original* Illumos duplicate request cache, used as
baselines, and a discrete-event simulation of a retransmission storm that drives
any cache with the ``check``/``done``/``drop``/``gc`` API of
``acmenfs.oncrpc.drc.DuplicateRequestCache`` on a simulated clock.

It must not be imported by the product, must not change ``acmenfs`` behaviour,
and sleeps nowhere: time is a number advanced by the event queue.

Baselines:

* ``IllumosDropWhenFullDrc`` -- the baseline as the lead specified it: one global
  lock, 257 hash chains on the xid, at most 1,024 entries; a new call is always
  inserted IN_PROGRESS, but when the cache is over the bound its reply is not
  kept; DONE entries expire after ``lifetime`` and are freed when their chain is
  walked or by ``gc``.
* ``IllumosRecycleRingDrc`` -- what the pre-rework ``svc_cots.c`` actually does
  (read for intent, not copied): one global lock, 257 chains, at most 1,024
  entries in a ring in LRU order; once full, a new call recycles the least
  recently used entry that is not IN_PROGRESS; no expiry and no GC.

Neither model checksums the arguments (the original compares xid, prog, vers,
proc and address only).
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol

from acmenfs.oncrpc.drc import DrcStatus, RequestKey, make_request_key

ORIGINAL_MAX_ENTRIES = 1024
ORIGINAL_HASH_CHAINS = 257
NFS_PROGRAM = 100003
NFS_VERSION = 3
NFSPROC3_CREATE = 8


class SimulatedClock:
    """A clock whose time only moves when the simulation says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class _OriginalEntry:
    __slots__ = ("identity", "state", "stamp", "reply")

    def __init__(self, identity: tuple, stamp: float) -> None:
        self.identity = identity
        self.state = DrcStatus.IN_PROGRESS
        self.stamp = stamp
        self.reply: bytes | None = None


def _original_identity(key: RequestKey) -> tuple:
    return (key.xid, key.client, key.prog, key.vers, key.proc)


class IllumosDropWhenFullDrc:
    """Global lock, 257 xid chains, 1,024 entries, replies dropped when full, expiry."""

    def __init__(self, max_entries: int = ORIGINAL_MAX_ENTRIES, lifetime: float = 120.0,
                 clock: Callable[[], float] = SimulatedClock()) -> None:
        self.max_entries = max_entries
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._chains: list[list[_OriginalEntry]] = [[] for _ in range(ORIGINAL_HASH_CHAINS)]
        self._count = 0
        self.overflows = 0

    def check(self, key: RequestKey) -> tuple[DrcStatus, object]:
        identity = _original_identity(key)
        now = self._clock()
        with self._lock:
            chain = self._chains[key.xid % ORIGINAL_HASH_CHAINS]
            found = None
            for entry in list(chain):
                if entry.state is DrcStatus.DONE and entry.stamp + self.lifetime < now:
                    chain.remove(entry)
                    self._count -= 1
                elif entry.identity == identity:
                    found = entry
                    break
            if found is not None:
                if found.state is DrcStatus.DONE:
                    return DrcStatus.DONE, found.reply
                return DrcStatus.IN_PROGRESS, None
            entry = _OriginalEntry(identity, now)
            chain.insert(0, entry)
            self._count += 1
            return DrcStatus.NEW, entry

    def done(self, token: _OriginalEntry, reply: bytes) -> None:
        with self._lock:
            if self._count <= self.max_entries:
                token.reply = bytes(reply)
                token.state = DrcStatus.DONE
                return
            self.overflows += 1
            self._unlink(token)

    def drop(self, token: _OriginalEntry) -> None:
        with self._lock:
            self._unlink(token)

    def gc(self) -> int:
        now = self._clock()
        freed = 0
        with self._lock:
            for chain in self._chains:
                expired = [e for e in chain if e.state is DrcStatus.DONE and e.stamp + self.lifetime < now]
                for entry in expired:
                    chain.remove(entry)
                freed += len(expired)
            self._count -= freed
        return freed

    def __len__(self) -> int:
        return self._count

    def _unlink(self, token: _OriginalEntry) -> None:
        self._chains[token.identity[0] % ORIGINAL_HASH_CHAINS].remove(token)
        self._count -= 1


class IllumosRecycleRingDrc:
    """Global lock, 257 xid chains, 1,024 entries recycled in LRU order, no expiry."""

    def __init__(self, max_entries: int = ORIGINAL_MAX_ENTRIES, lifetime: float = 120.0,
                 clock: Callable[[], float] = SimulatedClock()) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._chains: list[list[_OriginalEntry]] = [[] for _ in range(ORIGINAL_HASH_CHAINS)]
        self._ring: OrderedDict[_OriginalEntry, None] = OrderedDict()  # least recently used first

    def check(self, key: RequestKey) -> tuple[DrcStatus, object]:
        identity = _original_identity(key)
        now = self._clock()
        with self._lock:
            chain = self._chains[key.xid % ORIGINAL_HASH_CHAINS]
            for entry in chain:
                if entry.identity == identity:
                    if entry.state is DrcStatus.DONE:
                        return DrcStatus.DONE, entry.reply
                    return DrcStatus.IN_PROGRESS, None
            if len(self._ring) >= self.max_entries:
                self._recycle_least_recent_finished()
            entry = _OriginalEntry(identity, now)
            self._ring[entry] = None
            chain.insert(0, entry)
            return DrcStatus.NEW, entry

    def done(self, token: _OriginalEntry, reply: bytes) -> None:
        with self._lock:
            token.reply = bytes(reply)
            token.state = DrcStatus.DONE

    def drop(self, token: _OriginalEntry) -> None:
        with self._lock:
            self._forget(token)

    def gc(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self._ring)

    def _recycle_least_recent_finished(self) -> None:
        for entry in self._ring:
            if entry.state is not DrcStatus.IN_PROGRESS:
                self._forget(entry)
                return
        # every entry is in progress: like the original, grow past the bound

    def _forget(self, entry: _OriginalEntry) -> None:
        del self._ring[entry]
        self._chains[entry.identity[0] % ORIGINAL_HASH_CHAINS].remove(entry)


class DrcLike(Protocol):
    def check(self, key: RequestKey) -> tuple[DrcStatus, object]: ...
    def done(self, token: object, reply: bytes) -> None: ...
    def gc(self) -> int: ...


@dataclass(frozen=True)
class StormScenario:
    """One retransmission storm: who calls, how often, and what is retransmitted."""

    call_rate: float  # calls per simulated second, Poisson arrivals
    calls: int = 100_000
    clients: int = 64
    retransmit_share: float = 0.05
    max_retransmit_delay: float = 90.0
    service_time: float = 0.002
    gc_interval: float = 30.0
    seed: int = 1


@dataclass(frozen=True)
class StormResult:
    retransmissions: int
    answered_from_cache: int
    dropped_in_progress: int
    executed_again: int

    @property
    def answered_share(self) -> float:
        return self.answered_from_cache / self.retransmissions if self.retransmissions else 1.0


_ARRIVAL, _RETRANSMIT, _DONE, _GC = range(4)
_REPLY = b"\x00" * 136  # about the size of a CREATE3res with attributes


def _storm_keys(scenario: StormScenario, rng: random.Random) -> list[RequestKey]:
    clients = [(f"192.0.2.{n + 1}", 700 + n) for n in range(scenario.clients)]
    next_xid = [rng.getrandbits(32) for _ in clients]
    keys = []
    for call_number in range(scenario.calls):
        client_index = rng.randrange(scenario.clients)
        xid = next_xid[client_index]
        next_xid[client_index] = (xid + 1) & 0xFFFFFFFF
        args = call_number.to_bytes(8, "big") * 12
        keys.append(make_request_key(xid, clients[client_index], NFS_PROGRAM, NFS_VERSION, NFSPROC3_CREATE, args))
    return keys


def run_storm(make_cache: Callable[[SimulatedClock], DrcLike], scenario: StormScenario) -> StormResult:
    """Play the storm against a fresh cache on a simulated clock."""
    rng = random.Random(scenario.seed)
    keys = _storm_keys(scenario, rng)
    clock = SimulatedClock()
    cache = make_cache(clock)
    order = itertools.count()
    events: list[tuple[float, int, int, object]] = []
    arrival_time = clock.now
    for key in keys:
        arrival_time += rng.expovariate(scenario.call_rate)
        heapq.heappush(events, (arrival_time, next(order), _ARRIVAL, key))
        if rng.random() < scenario.retransmit_share:
            delay = rng.uniform(0.0, scenario.max_retransmit_delay)
            heapq.heappush(events, (arrival_time + delay, next(order), _RETRANSMIT, key))
    heapq.heappush(events, (clock.now + scenario.gc_interval, next(order), _GC, None))
    retransmissions = answered = dropped = executed_again = 0
    while events:
        when, _, kind, payload = heapq.heappop(events)
        clock.now = when
        if kind == _DONE:
            cache.done(payload, _REPLY)
        elif kind == _GC:
            cache.gc()
            if len(events) > 0:
                heapq.heappush(events, (when + scenario.gc_interval, next(order), _GC, None))
        else:
            status, value = cache.check(payload)
            if kind == _RETRANSMIT:
                retransmissions += 1
                answered += status is DrcStatus.DONE
                dropped += status is DrcStatus.IN_PROGRESS
                executed_again += status is DrcStatus.NEW
            if status is DrcStatus.NEW:
                heapq.heappush(events, (when + scenario.service_time, next(order), _DONE, value))
    return StormResult(retransmissions, answered, dropped, executed_again)
