"""Benchmark: CounterWait wake path against a notify-all baseline.

Owns the measurement of acmenfs.sync.CounterWait wake-ups: N waiters, each waiting
for a distinct value 1..N, all registered and asleep before the clock starts; then
one updater calls inc() N times back to back (unpaced).  It must not change
CounterWait or tune the scenario to favour it.

Sizes: asyncio variants use N = 10,000 tasks.  Thread variants default to
N = 2,000 real OS threads: 10,000 OS threads work for CounterWait (pass
``--thread-waiters 10000``) but the notify-all baseline is quadratic in wake-ups
and did not finish one 10,000-thread run in 9 minutes on this 2-core VM (3,000
threads: 32 s).  ``--no-thread-baseline`` runs CounterWait threads alone.

Variants (each run alternately, repeated, medians reported):

* threads / CounterWait        N real OS threads blocked in ``wait_for``.
* threads / Condition baseline N real OS threads in the classic loop
  ``with cond: while value < target: cond.wait()``, updater does
  ``value += 1; cond.notify_all()``: every waiter re-checks on every notify.
* asyncio / CounterWait        N tasks on one event loop (its own thread) in
  ``await wait_for_async``; the updater is the main thread.
* asyncio / notify-all baseline N tasks re-checking on a per-update
  ``asyncio.Event`` that the updater replaces and sets (through
  ``call_soon_threadsafe``, the updater being another thread).

Figures: wake-ups/s = N / (last waiter running - first inc() started);
latency of a waiter = time it runs again - time the inc() that reached its value
started; p50/p99 over the N waiters; updater = time for the N inc() calls.

Run: ``python bench/bench_counterwait.py [--thread-waiters N] [--async-waiters N]
[--repeats R] [--mode all|threads|asyncio] [--no-thread-baseline]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from acmenfs.sync import CounterWait

THREAD_STACK_BYTES = 256 * 1024
SETTLE_SECONDS = 0.3  # let registered waiters actually fall asleep before the clock
now = time.perf_counter


@dataclass
class RunResult:
    wakeups_per_second: float
    p50_ms: float
    p99_ms: float
    updater_seconds: float


def summarize(inc_started: list[float], woke_at: list[float], updater_seconds: float) -> RunResult:
    """Turn per-value timestamps (index = target value) into one run's figures."""
    values = range(1, len(inc_started))
    latencies = sorted(woke_at[v] - inc_started[v] for v in values)
    span = max(woke_at[v] for v in values) - inc_started[1]
    count = len(latencies)
    return RunResult(
        wakeups_per_second=count / span,
        p50_ms=latencies[count // 2] * 1e3,
        p99_ms=latencies[min(count - 1, int(count * 0.99))] * 1e3,
        updater_seconds=updater_seconds,
    )


def drive_updater(count: int, inc: Callable[[], object]) -> tuple[list[float], float]:
    """Call inc() count times back to back; return start times per value, duration."""
    inc_started = [0.0] * (count + 1)
    began = now()
    for value in range(1, count + 1):
        inc_started[value] = now()
        inc()
    return inc_started, now() - began


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark setup stuck waiting for {what}")
        time.sleep(0.005)


# ------------------------------------------------------------------ threads


def run_threads_counterwait(count: int) -> RunResult:
    counter = CounterWait()
    woke_at = [0.0] * (count + 1)

    def waiter(target: int) -> None:
        counter.wait_for(target)
        woke_at[target] = now()

    threads = [threading.Thread(target=waiter, args=(v,), daemon=True) for v in range(1, count + 1)]
    for thread in threads:
        thread.start()
    wait_until(lambda: counter.waiters_count() == count, "CounterWait waiters")
    time.sleep(SETTLE_SECONDS)
    inc_started, updater_seconds = drive_updater(count, counter.inc)
    for thread in threads:
        thread.join()
    return summarize(inc_started, woke_at, updater_seconds)


class ConditionCounter:
    """The baseline: one Condition, notify_all on every increment."""

    def __init__(self) -> None:
        self.value = 0
        self.sleeping = 0
        self.cond = threading.Condition()

    def inc(self) -> None:
        with self.cond:
            self.value += 1
            self.cond.notify_all()

    def wait_for(self, target: int) -> None:
        with self.cond:
            self.sleeping += 1
            while self.value < target:
                self.cond.wait()
            self.sleeping -= 1

    def all_asleep(self, count: int) -> bool:
        with self.cond:  # wait() released the lock, so these are really waiting
            return self.sleeping == count


def run_threads_condition(count: int) -> RunResult:
    counter = ConditionCounter()
    woke_at = [0.0] * (count + 1)

    def waiter(target: int) -> None:
        counter.wait_for(target)
        woke_at[target] = now()

    threads = [threading.Thread(target=waiter, args=(v,), daemon=True) for v in range(1, count + 1)]
    for thread in threads:
        thread.start()
    wait_until(lambda: counter.all_asleep(count), "Condition waiters")
    time.sleep(SETTLE_SECONDS)
    inc_started, updater_seconds = drive_updater(count, counter.inc)
    for thread in threads:
        thread.join()
    return summarize(inc_started, woke_at, updater_seconds)


# ------------------------------------------------------------------ asyncio


class LoopInThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def run_asyncio_counterwait(count: int) -> RunResult:
    counter = CounterWait()
    woke_at = [0.0] * (count + 1)
    runner = LoopInThread()

    async def waiter(target: int) -> None:
        await counter.wait_for_async(target)
        woke_at[target] = now()

    async def spawn() -> list[asyncio.Task[None]]:
        return [asyncio.create_task(waiter(v)) for v in range(1, count + 1)]

    asyncio.run_coroutine_threadsafe(spawn(), runner.loop).result()
    wait_until(lambda: counter.waiters_count() == count, "async CounterWait waiters")
    time.sleep(SETTLE_SECONDS)
    inc_started, updater_seconds = drive_updater(count, counter.inc)
    wait_until(lambda: all(woke_at[1:]), "async waiters to finish")
    runner.close()
    return summarize(inc_started, woke_at, updater_seconds)


class NotifyAllAsyncCounter:
    """The asyncio baseline: every waiter re-checks on every update."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.value = 0
        self.sleeping = 0
        self.changed = asyncio.Event()

    def _bump_on_loop(self) -> None:
        self.value += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def inc(self) -> None:
        self.loop.call_soon_threadsafe(self._bump_on_loop)

    async def wait_for(self, target: int) -> None:
        self.sleeping += 1
        while self.value < target:
            await self.changed.wait()
        self.sleeping -= 1


def run_asyncio_notify_all(count: int) -> RunResult:
    runner = LoopInThread()
    woke_at = [0.0] * (count + 1)

    async def make_counter() -> NotifyAllAsyncCounter:
        return NotifyAllAsyncCounter(asyncio.get_running_loop())

    counter = asyncio.run_coroutine_threadsafe(make_counter(), runner.loop).result()

    async def waiter(target: int) -> None:
        await counter.wait_for(target)
        woke_at[target] = now()

    async def spawn() -> None:
        for v in range(1, count + 1):
            asyncio.create_task(waiter(v))

    asyncio.run_coroutine_threadsafe(spawn(), runner.loop).result()
    wait_until(lambda: counter.sleeping == count, "async notify-all waiters")
    time.sleep(SETTLE_SECONDS)
    inc_started, updater_seconds = drive_updater(count, counter.inc)
    wait_until(lambda: all(woke_at[1:]), "async baseline waiters to finish")
    runner.close()
    return summarize(inc_started, woke_at, updater_seconds)


# ---------------------------------------------------------------- reporting

VARIANTS: list[tuple[str, str, Callable[[int], RunResult]]] = [
    ("threads", "CounterWait", run_threads_counterwait),
    ("threads", "Condition.notify_all", run_threads_condition),
    ("asyncio", "CounterWait", run_asyncio_counterwait),
    ("asyncio", "Event notify-all", run_asyncio_notify_all),
]


def median_result(results: list[RunResult]) -> RunResult:
    return RunResult(
        wakeups_per_second=statistics.median(r.wakeups_per_second for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        updater_seconds=statistics.median(r.updater_seconds for r in results),
    )


def print_table(sizes: dict[str, int], repeats: int, medians: dict[tuple[str, str], RunResult]) -> None:
    print()
    print("CounterWait wake path: N waiters at distinct values 1..N, one updater calling inc() N times")
    print(f"back to back; medians of {repeats} alternating runs; Python {sys.version.split()[0]}")
    header = (
        f"{'mode':8} {'N':>6} {'implementation':22} {'wake-ups/s':>12} {'p50 ms':>9} {'p99 ms':>9} {'updater s':>10}"
    )
    print(header)
    print("-" * len(header))
    for (mode, name), r in medians.items():
        print(
            f"{mode:8} {sizes[mode]:6} {name:22} {r.wakeups_per_second:12,.0f} {r.p50_ms:9.2f} {r.p99_ms:9.2f} "
            f"{r.updater_seconds:10.3f}"
        )
    print()
    for mode in ("threads", "asyncio"):
        pair = [r for (m, _), r in medians.items() if m == mode]
        if len(pair) == 2:
            ours, base = pair
            print(
                f"{mode}: CounterWait / baseline: wake-ups/s x{ours.wakeups_per_second / base.wakeups_per_second:.2f}, "
                f"p50 latency x{ours.p50_ms / base.p50_ms:.2f}, p99 latency x{ours.p99_ms / base.p99_ms:.2f} "
                f"(latency < 1 is better)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thread-waiters", type=int, default=2_000)
    parser.add_argument("--async-waiters", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=("all", "threads", "asyncio"), default="all")
    parser.add_argument("--no-thread-baseline", action="store_true")
    args = parser.parse_args()
    threading.stack_size(THREAD_STACK_BYTES)
    sizes = {"threads": args.thread_waiters, "asyncio": args.async_waiters}
    variants = [
        v
        for v in VARIANTS
        if args.mode in ("all", v[0]) and not (args.no_thread_baseline and v[2] is run_threads_condition)
    ]
    results: dict[tuple[str, str], list[RunResult]] = {(m, n): [] for m, n, _ in variants}
    for repeat in range(args.repeats):
        for mode, name, run in variants:
            gc.collect()
            result = run(sizes[mode])
            results[(mode, name)].append(result)
            print(
                f"run {repeat + 1}: {mode:8} {name:22} {result.wakeups_per_second:12,.0f}/s "
                f"p50 {result.p50_ms:8.2f} ms p99 {result.p99_ms:8.2f} ms updater {result.updater_seconds:.3f} s",
                flush=True,
            )
    print_table(sizes, args.repeats, {key: median_result(rs) for key, rs in results.items()})


if __name__ == "__main__":
    main()
