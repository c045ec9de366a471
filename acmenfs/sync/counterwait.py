"""CounterWait: wait, from threads or asyncio tasks, for a counter to reach a value.

Owns one monotonically increasing integer and the set of waiters blocked until it
reaches their target value.  It is the rendezvous of NFS COMMIT group commit: a
flusher thread calls ``update(durable_seq)`` and COMMIT handlers (threads or
coroutines) call ``wait_for(seq)`` / ``await wait_for_async(seq)``.

It must not do I/O, own threads or event loops, call back into user code, or block
an event loop.  It knows nothing of NFS.

Design (intent from the "Synchronization tricks" post, our own code):

* Waiters live in a binary heap (``heapq``) of ``(target, seq, waiter)`` tuples, so
  an update pops only the k waiters it wakes: O(k log n), never a scan of all
  waiters.  ``seq`` breaks ties, so equal targets wake in arrival order.
* A wake-up that lands before its waiter sleeps must not be lost.  A thread waiter
  owns a ``threading.Lock`` acquired at construction (a binary semaphore); the
  waker releases it, and the waiter's later ``acquire`` returns at once.  An
  asyncio waiter owns a future; a result set before the ``await`` is kept.
* One ``threading.Lock`` guards the value and the heap.  It is held only to push,
  to pop the due waiters, or to mark a waiter abandoned; the woken waiters are
  signalled after it is released.  Asyncio futures are resolved directly when the
  updater runs on their loop, otherwise with one ``call_soon_threadsafe`` per loop
  per update (not one per waiter).
* Removal of timed-out or cancelled waiters is **lazy**: the waiter is marked dead
  under the lock (``waiters_count()`` drops at once) and its heap entry is skipped
  when popped.  So that far-future abandoned entries cannot pile up, the heap is
  compacted (rebuilt from live entries, O(n)) once dead entries outnumber live
  ones and exceed ``_COMPACT_MIN_DEAD``; this keeps the heap at most about twice
  the live size and costs amortised O(1) per abandoned waiter.
* The fast path (target already reached) reads ``_value`` without the lock: the
  value only grows, so a stale read can only send a caller to the locked slow path,
  which re-checks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import operator
import threading
from typing import Union

__all__ = ["CounterWait"]

# Dead heap entries tolerated before a compaction is considered.
_COMPACT_MIN_DEAD = 64


class _ThreadWaiter:
    """A blocked thread: a binary semaphore taken at construction, released by the waker."""

    __slots__ = ("target", "woken", "dead", "_gate")

    def __init__(self, target: int) -> None:
        self.target = target
        self.woken = False  # popped by an update (set under the CounterWait lock)
        self.dead = False  # abandoned by its owner (set under the CounterWait lock)
        self._gate = threading.Lock()
        self._gate.acquire()  # never blocks: the lock is fresh

    def sleep(self, timeout: float | None) -> bool:
        """Block until signalled; True if signalled, False on timeout."""
        if timeout is None:
            return self._gate.acquire()
        return self._gate.acquire(timeout=timeout)

    def signal(self) -> None:
        self._gate.release()


class _AsyncWaiter:
    """A waiting coroutine: a future on the loop it was created on."""

    __slots__ = ("target", "woken", "dead", "loop", "future")

    def __init__(self, target: int, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.woken = False
        self.dead = False
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


_Waiter = Union[_ThreadWaiter, _AsyncWaiter]


def _resolve_futures(futures: list[asyncio.Future[None]]) -> None:
    """Complete the futures still pending (a cancelled one stays cancelled)."""
    for future in futures:
        if not future.done():
            future.set_result(None)


def _running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    # asyncio._get_running_loop is the exception-free form of get_running_loop()
    # (exported by asyncio.events for loop implementations since Python 3.7); it
    # is on the wake path of every update that wakes an asyncio waiter.
    return asyncio._get_running_loop()


def _as_counter_value(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}") from None


def _checked_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout!r}")
    return float(timeout)


class CounterWait:
    """A counter that only increases, and waiters blocked until it reaches a value.

    Thread-safe for any number of updaters and waiters; waiters may be threads
    (``wait_for``) or asyncio tasks on any number of loops (``wait_for_async``).
    """

    def __init__(self, initial: int = 0) -> None:
        self._value = _as_counter_value(initial, "initial")
        self._lock = threading.Lock()
        self._heap: list[tuple[int, int, _Waiter]] = []
        self._arrivals = itertools.count()
        self._live_waiters = 0
        self._dead_in_heap = 0

    def __repr__(self) -> str:
        return f"<CounterWait value={self._value} waiters={self._live_waiters}>"

    @property
    def value(self) -> int:
        """The current counter value."""
        return self._value

    def waiters_count(self) -> int:
        """Number of waiters still waiting (abandoned ones are never counted)."""
        return self._live_waiters

    # ----------------------------------------------------------------- updaters

    def inc(self) -> int:
        """Add one to the counter, wake the waiters it satisfies; return the new value."""
        with self._lock:
            self._value += 1
            new_value = self._value
            woken = self._pop_due_locked(new_value)
        if woken:
            self._signal(woken)
        return new_value

    def update(self, value: int) -> int:
        """Raise the counter to ``value`` and wake the waiters it satisfies.

        Setting the current value again is a no-op; a lower value raises
        ``ValueError``.  Returns the counter value.
        """
        value = _as_counter_value(value, "value")
        with self._lock:
            current = self._value
            if value < current:
                raise ValueError(f"CounterWait may only increase: current value {current}, refused {value}")
            if value == current:
                return current
            self._value = value
            woken = self._pop_due_locked(value)
        if woken:
            self._signal(woken)
        return value

    def _pop_due_locked(self, value: int) -> list[_Waiter]:
        """Pop every live waiter with target <= value (caller holds the lock)."""
        heap = self._heap
        woken: list[_Waiter] = []
        while heap and heap[0][0] <= value:
            waiter = heapq.heappop(heap)[2]
            if waiter.dead:
                self._dead_in_heap -= 1
                continue
            waiter.woken = True
            woken.append(waiter)
        self._live_waiters -= len(woken)
        return woken

    @staticmethod
    def _signal(woken: list[_Waiter]) -> None:
        """Wake popped waiters, outside the lock."""
        futures_by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in woken:
            if isinstance(waiter, _ThreadWaiter):
                waiter.signal()
            else:
                futures_by_loop.setdefault(waiter.loop, []).append(waiter.future)
        if not futures_by_loop:
            return
        running = _running_loop_or_none()
        for loop, futures in futures_by_loop.items():
            if loop is running:
                _resolve_futures(futures)
                continue
            try:
                loop.call_soon_threadsafe(_resolve_futures, futures)
            except RuntimeError:
                # The loop is closed: its waiting coroutines can never run again,
                # so there is nobody left to wake.
                pass

    # ------------------------------------------------------------------ waiters

    def wait_for(self, value: int, timeout: float | None = None) -> int:
        """Block the calling thread until the counter is >= ``value``; return the counter.

        Returns at once if the value is already reached.  Raises ``TimeoutError``
        if ``timeout`` seconds pass first (``timeout=0`` only checks), and
        ``RuntimeError`` if it would block a running event loop.
        """
        target = _as_counter_value(value, "value")
        timeout = _checked_timeout(timeout)
        current = self._value
        if target <= current:
            return current
        if timeout == 0:
            raise TimeoutError(f"counter is {current}, not yet {target}")
        if _running_loop_or_none() is not None:
            raise RuntimeError("wait_for() would block the running event loop; use 'await wait_for_async()'")
        waiter = _ThreadWaiter(target)
        if not self._enqueue(waiter):
            return self._value
        try:
            signalled = waiter.sleep(timeout)
        except BaseException:  # KeyboardInterrupt while blocked: leave the queue
            self._abandon(waiter)
            raise
        if not signalled and self._abandon(waiter):
            raise TimeoutError(f"counter is {self._value}, not yet {target}, after {timeout}s")
        return self._value

    async def wait_for_async(self, value: int, timeout: float | None = None) -> int:
        """Wait, without blocking the event loop, until the counter is >= ``value``.

        Same semantics as ``wait_for``.  The updater may run on any thread.  On
        cancellation or timeout the waiter leaves the queue.
        """
        target = _as_counter_value(value, "value")
        timeout = _checked_timeout(timeout)
        current = self._value
        if target <= current:
            return current
        if timeout == 0:
            raise TimeoutError(f"counter is {current}, not yet {target}")
        waiter = _AsyncWaiter(target, asyncio.get_running_loop())
        if not self._enqueue(waiter):
            return self._value
        try:
            if timeout is None:
                await waiter.future
            else:
                async with asyncio.timeout(timeout):
                    await waiter.future
        except TimeoutError:
            if self._abandon(waiter):
                raise TimeoutError(f"counter is {self._value}, not yet {target}, after {timeout}s") from None
            # Woken while the timeout fired: the value was reached, report success.
        except BaseException:  # cancellation: leave the queue, keep cancelling
            self._abandon(waiter)
            raise
        return self._value

    def _enqueue(self, waiter: _Waiter) -> bool:
        """Queue the waiter; False (not queued) if the target was reached meanwhile."""
        with self._lock:
            if waiter.target <= self._value:
                return False
            heapq.heappush(self._heap, (waiter.target, next(self._arrivals), waiter))
            self._live_waiters += 1
        return True

    def _abandon(self, waiter: _Waiter) -> bool:
        """Withdraw a waiter that gave up; False if an update already woke it."""
        with self._lock:
            if waiter.woken:
                return False
            if waiter.dead:
                return True
            waiter.dead = True
            self._live_waiters -= 1
            self._dead_in_heap += 1
            if self._dead_in_heap > _COMPACT_MIN_DEAD and self._dead_in_heap > self._live_waiters:
                self._compact_locked()
        return True

    def _compact_locked(self) -> None:
        """Drop dead entries from the heap (caller holds the lock)."""
        self._heap = [entry for entry in self._heap if not entry[2].dead]
        heapq.heapify(self._heap)
        self._dead_in_heap = 0
