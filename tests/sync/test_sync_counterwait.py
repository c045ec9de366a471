"""Tests of acmenfs.sync.CounterWait with real threads and real asyncio loops.

Owns the behavioural contract of CounterWait: immediate return, ordered wake-ups,
no lost wake-ups, timeouts and cancellation leaving the queue, cross-thread asyncio
wake-ups, mixed waiters and a multi-updater stress run.  No mocks and no timing
assertions: the only clocks here are generous deadlines that turn a hang (a lost
wake-up) into a failure instead of a stuck test run.
"""

from __future__ import annotations

import asyncio
import queue
import random
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acmenfs.sync import CounterWait

HANG_DEADLINE = 30.0  # seconds; only reached if a wake-up is lost


def wait_until(predicate, what: str) -> None:
    """Poll until predicate() holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + HANG_DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.001)


def start_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join_all(threads) -> None:
    for thread in threads:
        thread.join(HANG_DEADLINE)
        assert not thread.is_alive(), "a waiter thread never returned"


class LoopThread:
    """A real asyncio loop running in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = start_thread(self.loop.run_forever)

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_DEADLINE)
        self.loop.close()


@pytest.fixture
def loop_thread():
    runner = LoopThread()
    yield runner
    runner.close()


# --------------------------------------------------------------------- basics


def test_value_starts_at_initial_and_inc_returns_new_value():
    counter = CounterWait(7)
    assert counter.value == 7
    assert counter.inc() == 8
    assert counter.inc() == 9
    assert counter.value == 9
    assert CounterWait().value == 0


def test_wait_for_reached_value_returns_current_value_immediately():
    counter = CounterWait(10)
    assert counter.wait_for(3) == 10
    assert counter.wait_for(10) == 10
    assert counter.wait_for(10, timeout=0) == 10
    assert counter.waiters_count() == 0


def test_wait_for_async_reached_value_returns_current_value_immediately():
    counter = CounterWait(10)

    async def main():
        return await counter.wait_for_async(4), await counter.wait_for_async(10, timeout=0)

    assert asyncio.run(main()) == (10, 10)
    assert counter.waiters_count() == 0


def test_update_to_lower_value_raises_value_error_and_keeps_value():
    counter = CounterWait(5)
    with pytest.raises(ValueError, match="may only increase"):
        counter.update(4)
    assert counter.value == 5


def test_update_to_equal_value_is_a_no_op():
    counter = CounterWait(5)
    assert counter.update(5) == 5
    assert counter.value == 5


def test_update_raises_counter_and_returns_it():
    counter = CounterWait()
    assert counter.update(42) == 42
    assert counter.value == 42


@pytest.mark.parametrize("bad", [1.5, "3", None, True])
def test_non_integer_values_are_refused_with_type_error(bad):
    counter = CounterWait()
    with pytest.raises(TypeError):
        counter.update(bad)
    with pytest.raises(TypeError):
        counter.wait_for(bad, timeout=0)
    with pytest.raises(TypeError):
        CounterWait(bad)


def test_negative_timeout_is_refused():
    counter = CounterWait()
    with pytest.raises(ValueError, match="timeout"):
        counter.wait_for(1, timeout=-1)


def test_zero_timeout_on_unreached_value_raises_without_queueing():
    counter = CounterWait()
    with pytest.raises(TimeoutError):
        counter.wait_for(1, timeout=0)
    assert counter.waiters_count() == 0


def test_blocking_wait_for_inside_running_event_loop_is_refused():
    counter = CounterWait()

    async def main():
        with pytest.raises(RuntimeError, match="wait_for_async"):
            counter.wait_for(1)
        return counter.wait_for(0)  # fast path still allowed

    assert asyncio.run(main()) == 0
    assert counter.waiters_count() == 0


# ------------------------------------------------------------ thread waiters


def test_thread_waiters_wake_in_value_order_one_inc_at_a_time():
    counter = CounterWait()
    targets = list(range(1, 41))
    random.Random(1).shuffle(targets)
    woken: queue.Queue[tuple[int, int]] = queue.Queue()

    def waiter(target):
        woken.put((target, counter.wait_for(target)))

    threads = [start_thread(waiter, target) for target in targets]
    wait_until(lambda: counter.waiters_count() == len(targets), "all waiters queued")

    for step in range(1, len(targets) + 1):
        counter.inc()
        assert counter.waiters_count() == len(targets) - step
        target, returned = woken.get(timeout=HANG_DEADLINE)
        assert target == step
        assert returned >= step
    join_all(threads)
    assert woken.empty()


def test_one_update_wakes_exactly_the_waiters_at_or_below_it():
    counter = CounterWait()
    woken: queue.Queue[int] = queue.Queue()
    targets = [3, 5, 5, 6, 9, 12]

    def waiter(target):
        assert counter.wait_for(target) >= target
        woken.put(target)

    threads = [start_thread(waiter, target) for target in targets]
    wait_until(lambda: counter.waiters_count() == len(targets), "all waiters queued")

    counter.update(6)
    assert counter.waiters_count() == 2
    assert sorted(woken.get(timeout=HANG_DEADLINE) for _ in range(4)) == [3, 5, 5, 6]

    counter.update(12)
    assert counter.waiters_count() == 0
    assert sorted(woken.get(timeout=HANG_DEADLINE) for _ in range(2)) == [9, 12]
    join_all(threads)


def test_many_thread_waiters_on_the_same_value_all_wake():
    counter = CounterWait()
    results: list[int] = []
    lock = threading.Lock()

    def waiter():
        value = counter.wait_for(3)
        with lock:
            results.append(value)

    threads = [start_thread(waiter) for _ in range(60)]
    wait_until(lambda: counter.waiters_count() == 60, "all waiters queued")
    counter.inc()
    counter.inc()
    assert counter.waiters_count() == 60
    counter.inc()
    join_all(threads)
    assert results == [3] * 60
    assert counter.waiters_count() == 0


def test_thread_timeout_raises_timeout_error_and_leaves_the_queue():
    counter = CounterWait()
    with pytest.raises(TimeoutError, match="not yet 5"):
        counter.wait_for(5, timeout=0.02)
    assert counter.waiters_count() == 0
    assert counter.update(5) == 5  # popping the dead entry must not break anything
    assert counter.waiters_count() == 0


def test_timed_out_waiter_does_not_disturb_live_waiters_at_same_value():
    counter = CounterWait()
    woken: queue.Queue[int] = queue.Queue()
    live = start_thread(lambda: woken.put(counter.wait_for(4)))
    wait_until(lambda: counter.waiters_count() == 1, "live waiter queued")
    with pytest.raises(TimeoutError):
        counter.wait_for(4, timeout=0.01)
    assert counter.waiters_count() == 1
    counter.update(4)
    assert woken.get(timeout=HANG_DEADLINE) == 4
    join_all([live])


# ---------------------------------------------- wake-up before the waiter sleeps


class WakeBetweenQueueAndSleep(CounterWait):
    """CounterWait whose updater runs after a waiter queues and before it sleeps.

    Forces the exact interleaving the binary-semaphore / future design exists for,
    deterministically, using the real wake path (optionally from another thread).
    """

    def __init__(self, from_other_thread: bool) -> None:
        super().__init__()
        self.from_other_thread = from_other_thread

    def _enqueue(self, waiter):
        queued = super()._enqueue(waiter)
        assert queued
        assert self.waiters_count() == 1
        if self.from_other_thread:
            join_all([start_thread(self.update, waiter.target)])
        else:
            self.update(waiter.target)
        assert self.waiters_count() == 0
        return queued


@pytest.mark.parametrize("from_other_thread", [False, True])
def test_thread_wake_up_before_sleep_is_not_lost(from_other_thread):
    # No timeout on the wait itself: a timed-out waiter that was in fact woken
    # returns successfully, which would hide a lost wake-up.
    counter = WakeBetweenQueueAndSleep(from_other_thread)
    returned: queue.Queue[int] = queue.Queue()
    start_thread(lambda: returned.put(counter.wait_for(3)))
    assert returned.get(timeout=HANG_DEADLINE) == 3


@pytest.mark.parametrize("from_other_thread", [False, True])
def test_async_wake_up_before_await_is_not_lost(from_other_thread):
    counter = WakeBetweenQueueAndSleep(from_other_thread)
    # The deadline cancels from outside so that a lost wake-up fails the test.
    assert asyncio.run(asyncio.wait_for(counter.wait_for_async(3), HANG_DEADLINE)) == 3


@pytest.fixture
def frequent_thread_switches():
    """Make the interpreter switch threads every microsecond to widen race windows."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_racing_waiters_and_updater_never_lose_a_wake_up(frequent_thread_switches):
    """Start waiters and the updater from one barrier, many times over."""
    counter = CounterWait()
    waiters_per_round = 3
    failures: list[str] = []

    for round_number in range(1, 301):
        barrier = threading.Barrier(waiters_per_round + 1)

        def waiter(target=round_number):
            barrier.wait()
            got = counter.wait_for(target)  # a lost wake-up hangs here; join_all fails
            if got < target:
                failures.append(f"returned {got} < {target}")

        threads = [start_thread(waiter) for _ in range(waiters_per_round)]
        barrier.wait()
        counter.inc()
        join_all(threads)
        assert counter.waiters_count() == 0
    assert failures == []


# ------------------------------------------------------------- async waiters


def test_async_waiters_wake_in_value_order_when_updated_on_their_loop():
    counter = CounterWait()

    async def main():
        targets = [2, 1, 3, 3]
        tasks = [asyncio.create_task(counter.wait_for_async(t)) for t in targets]
        await asyncio.sleep(0)
        assert counter.waiters_count() == 4
        done_after_each_inc = []
        for _ in range(3):
            counter.inc()
            await asyncio.sleep(0)
            done_after_each_inc.append([t for t, task in zip(targets, tasks) if task.done()])
        assert done_after_each_inc == [[1], [2, 1], [2, 1, 3, 3]]
        assert counter.waiters_count() == 0
        return [task.result() for task in tasks]

    assert asyncio.run(main()) == [2, 1, 3, 3]


def test_async_cancellation_leaves_the_queue():
    counter = CounterWait()

    async def main():
        task = asyncio.create_task(counter.wait_for_async(10))
        await asyncio.sleep(0)
        assert counter.waiters_count() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert counter.waiters_count() == 0
        counter.update(10)
        assert counter.waiters_count() == 0

    asyncio.run(main())


def test_async_timeout_raises_timeout_error_and_leaves_the_queue():
    counter = CounterWait()

    async def main():
        with pytest.raises(TimeoutError, match="not yet 2"):
            await counter.wait_for_async(2, timeout=0.01)
        assert counter.waiters_count() == 0

    asyncio.run(main())
    counter.inc()
    counter.inc()


def test_async_waiter_is_woken_by_an_updater_in_another_thread(loop_thread):
    counter = CounterWait()
    futures = [loop_thread.submit(counter.wait_for_async(target)) for target in (1, 2, 2, 7)]
    wait_until(lambda: counter.waiters_count() == 4, "async waiters queued")

    updater = start_thread(counter.update, 2)
    join_all([updater])
    assert [f.result(HANG_DEADLINE) for f in futures[:3]] == [2, 2, 2]
    assert counter.waiters_count() == 1
    assert not futures[3].done()

    join_all([start_thread(counter.update, 7)])
    assert futures[3].result(HANG_DEADLINE) == 7


def test_update_after_waiters_loop_closed_does_not_raise():
    counter = CounterWait()
    loop = asyncio.new_event_loop()
    task = loop.create_task(counter.wait_for_async(1))
    loop.run_until_complete(asyncio.sleep(0))
    assert counter.waiters_count() == 1
    loop.close()
    assert counter.inc() == 1
    assert counter.waiters_count() == 0
    del task


def test_many_cancelled_async_waiters_do_not_leak_heap_entries():
    counter = CounterWait()

    async def main():
        live = [asyncio.create_task(counter.wait_for_async(5)) for _ in range(10)]
        doomed = [asyncio.create_task(counter.wait_for_async(1_000 + i)) for i in range(2_000)]
        await asyncio.sleep(0)
        assert counter.waiters_count() == 2_010
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        assert counter.waiters_count() == 10
        # Lazy removal with compaction: dead entries never outnumber live ones by much.
        assert len(counter._heap) <= 2 * counter.waiters_count() + 65
        counter.update(5)
        assert await asyncio.gather(*live) == [5] * 10
        assert counter.waiters_count() == 0

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(
    targets=st.lists(st.integers(min_value=1, max_value=30), max_size=25),
    updates=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=12),
)
def test_async_waiters_done_exactly_when_counter_reaches_target(targets, updates):
    """Model check on one loop: after each update, done tasks == targets <= value."""
    counter = CounterWait()

    async def main():
        tasks = [asyncio.create_task(counter.wait_for_async(t)) for t in targets]
        await asyncio.sleep(0)
        for step in updates:
            counter.update(counter.value + step)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            expected = [t <= counter.value for t in targets]
            assert [task.done() for task in tasks] == expected
            assert counter.waiters_count() == expected.count(False)
            for task, target, done in zip(tasks, targets, expected):
                if done:
                    assert task.result() >= target
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert counter.waiters_count() == 0

    asyncio.run(main())


# ------------------------------------------------------- mixed and stressed


def test_mixed_thread_and_async_waiters_on_the_same_counter(loop_thread):
    counter = CounterWait()
    thread_results: queue.Queue[tuple[int, int]] = queue.Queue()
    thread_targets = [2, 4, 6]
    async_targets = [1, 3, 4, 6]

    threads = [start_thread(lambda t=t: thread_results.put((t, counter.wait_for(t)))) for t in thread_targets]
    futures = {t: loop_thread.submit(counter.wait_for_async(t)) for t in async_targets}
    total = len(thread_targets) + len(async_targets)
    wait_until(lambda: counter.waiters_count() == total, "mixed waiters queued")

    counter.update(4)
    assert counter.waiters_count() == 2
    for target in (1, 3, 4):
        assert futures[target].result(HANG_DEADLINE) >= target
    assert sorted(thread_results.get(timeout=HANG_DEADLINE)[0] for _ in range(2)) == [2, 4]
    counter.update(6)
    assert futures[6].result(HANG_DEADLINE) == 6
    assert thread_results.get(timeout=HANG_DEADLINE) == (6, 6)
    join_all(threads)
    assert counter.waiters_count() == 0


def test_stress_several_updaters_and_many_mixed_waiters(loop_thread):
    counter = CounterWait()
    final_value = 3_000
    rng = random.Random(7)
    thread_targets = [rng.randint(1, final_value) for _ in range(150)]
    async_targets = [rng.randint(1, final_value) for _ in range(1_500)]
    thread_results: list[tuple[int, int]] = []
    results_lock = threading.Lock()
    start = threading.Barrier(len(thread_targets) + 3)

    def thread_waiter(target):
        start.wait()
        value = counter.wait_for(target, timeout=HANG_DEADLINE)
        with results_lock:
            thread_results.append((target, value))

    def incrementer():
        start.wait()
        while counter.value < final_value:
            counter.inc()  # may overshoot final_value: that only satisfies targets sooner

    def jumper():
        start.wait()
        jump_rng = random.Random(11)
        while counter.value < final_value:
            try:
                counter.update(min(final_value, counter.value + jump_rng.randint(0, 5)))
            except ValueError:
                pass  # another updater got further first: a refused decrease is expected

    async def async_waiter(target):
        return target, await counter.wait_for_async(target, timeout=HANG_DEADLINE)

    async_futures = [loop_thread.submit(async_waiter(t)) for t in async_targets]
    threads = [start_thread(thread_waiter, t) for t in thread_targets]
    updaters = [start_thread(incrementer), start_thread(jumper)]
    start.wait()
    join_all(updaters + threads)
    async_results = [f.result(HANG_DEADLINE) for f in async_futures]

    assert len(thread_results) == len(thread_targets)
    assert all(value >= target for target, value in thread_results + async_results)
    assert counter.value >= final_value
    assert counter.waiters_count() == 0
