"""Adaptive busy polling: the policy with a fake loop and clock, then a real server."""

from __future__ import annotations

import pytest

from acmenfs.oncrpc.busypoll import BusyPoller
from acmenfs.oncrpc.client import RpcClient
from acmenfs.oncrpc.dispatch import RpcDispatcher
from rpc_test_service import TEST_PROG, TEST_VERS, EchoService, ThreadedServer, wait_until


class FakeLoop:
    """Collects ``call_soon`` callbacks; ``run_ready`` runs the ones queued so far."""

    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, callback, *args):
        self.ready.append((callback, args))

    def run_ready(self) -> int:
        batch, self.ready = self.ready, []
        for callback, args in batch:
            callback(*args)
        return len(batch)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def poller(window=100e-6, **options) -> tuple[BusyPoller, FakeLoop, FakeClock]:
    loop, clock = FakeLoop(), FakeClock()
    busy = BusyPoller(window, clock=clock, **options)
    busy.attach(loop)
    return busy, loop, clock


def run_out_window(busy: BusyPoller, loop: FakeLoop, clock: FakeClock, step: float = 30e-6) -> int:
    """Tick until the open window closes; returns the number of ticks."""
    ticks = 0
    while loop.ready:
        ticks += loop.run_ready()
        clock.now += step
        assert ticks < 10_000
    return ticks


def test_a_window_keeps_the_loop_busy_until_it_expires_then_counts_a_miss():
    busy, loop, clock = poller()
    busy.activity()
    assert len(loop.ready) == 1 and busy.windows == 1
    loop.run_ready()  # still inside the window: the tick schedules itself again
    assert len(loop.ready) == 1
    clock.now += 150e-6
    loop.run_ready()
    assert loop.ready == []
    assert busy.stats()["misses"] == 1 and busy.hits == 0
    assert busy.seconds == pytest.approx(150e-6)


def test_a_receive_inside_the_window_is_a_hit_and_extends_it():
    busy, loop, clock = poller()
    busy.activity()
    clock.now += 80e-6
    loop.run_ready()
    busy.activity()  # the next call arrived while awake
    assert busy.hits == 1 and busy.windows == 1 and len(loop.ready) == 1
    clock.now += 80e-6  # past the first deadline, inside the extended one
    loop.run_ready()
    assert len(loop.ready) == 1
    clock.now += 30e-6
    loop.run_ready()
    assert loop.ready == [] and busy.misses == 0


def test_a_deferred_reply_extends_the_window_without_counting_a_hit():
    busy, loop, clock = poller()
    busy.activity(received=False)
    busy.activity(received=False)
    assert busy.windows == 1 and busy.hits == 0
    run_out_window(busy, loop, clock)
    assert busy.misses == 1


def test_misses_in_a_row_back_off_to_probes_and_a_caught_probe_resumes():
    busy, loop, clock = poller(backoff_after=3, probe_every=4)
    for _ in range(3):
        busy.activity()
        run_out_window(busy, loop, clock)
    assert busy.misses == 3
    opened = busy.windows
    for _ in range(3):  # backed off: skipped, nothing scheduled
        busy.activity()
        assert loop.ready == []
    assert busy.skipped == 3 and busy.windows == opened
    busy.activity()  # the probe
    assert busy.windows == opened + 1 and len(loop.ready) == 1
    busy.activity()  # caught inside the probe's window
    run_out_window(busy, loop, clock)
    busy.activity()  # back to opening a window every time
    assert busy.windows == opened + 2 and busy.skipped == 3


def test_window_zero_never_schedules_anything():
    busy, loop, _ = poller(window=0)
    for _ in range(5):
        busy.activity()
    assert loop.ready == [] and busy.windows == 0 and not busy.enabled


def test_invalid_settings_and_a_second_loop_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        BusyPoller(-1)
    with pytest.raises(ValueError):
        BusyPoller(1e-4, probe_every=0)
    busy, _, _ = poller()
    busy.attach(busy._loop)  # the same loop again is fine
    with pytest.raises(RuntimeError, match="single event loop"):
        busy.attach(FakeLoop())


def test_unattached_poller_ignores_activity():
    busy = BusyPoller(1e-4)
    busy.activity()
    assert busy.windows == 0


# -- with a real server -------------------------------------------------------------------


@pytest.fixture
def polling_server():
    busy = BusyPoller(0.2)  # a long window, so back-to-back calls are certainly caught
    server = ThreadedServer(RpcDispatcher([EchoService().program()]), busy_poller=busy).start()
    yield server, busy
    server.stop()


def test_back_to_back_calls_are_caught_by_the_open_window_and_answered(polling_server):
    server, busy = polling_server
    with RpcClient("127.0.0.1", server.port) as client:
        for index in range(20):
            payload = index.to_bytes(4, "big") * (index + 1)
            assert client.call(TEST_PROG, TEST_VERS, 1, len(payload).to_bytes(4, "big") + payload) == \
                len(payload).to_bytes(4, "big") + payload
    assert busy.hits >= 15  # without polling every one of these would have needed a wake-up
    assert wait_until(lambda: not busy._awake, 5.0)  # the loop goes back to sleep
    assert busy.stats()["seconds"] > 0


def test_an_open_window_does_not_starve_other_connections_or_udp(polling_server):
    server, busy = polling_server
    with RpcClient("127.0.0.1", server.port) as first, \
            RpcClient("127.0.0.1", server.port) as second, \
            RpcClient("127.0.0.1", server.udp_port, transport="udp") as datagrams:
        for _ in range(10):
            assert first.call(TEST_PROG, TEST_VERS, 0) == b""
            assert second.call(TEST_PROG, TEST_VERS, 0) == b""
            assert datagrams.call(TEST_PROG, TEST_VERS, 0) == b""
    assert busy.hits >= 20


def test_server_stats_include_nothing_polled_when_off():
    busy = BusyPoller(0)
    server = ThreadedServer(RpcDispatcher([EchoService().program()]), busy_poller=busy).start()
    try:
        with RpcClient("127.0.0.1", server.port) as client:
            for _ in range(5):
                client.call(TEST_PROG, TEST_VERS, 0)
    finally:
        server.stop()
    assert busy.stats() == {"window_seconds": 0, "windows": 0, "hits": 0, "misses": 0, "skipped": 0,
                            "seconds": 0.0}


def drive(busy: BusyPoller, loop: FakeLoop, clock: FakeClock, calls: int, polled: float, slept: float) -> list[bool]:
    """``calls`` receives, each ``polled`` seconds after the last while windows open, else ``slept``;
    returns whether each one found polling on."""
    seen = []
    for _ in range(calls):
        polling = busy.polling
        seen.append(polling)
        clock.now += polled if polling else slept
        busy.activity()
        loop.ready.clear()  # the window's tick is not run: the next receive lands inside it
    return seen


def test_polling_that_makes_calls_come_later_is_given_up_and_retried_each_cycle():
    busy, loop, clock = poller(trial_every=8, trial_length=4)
    # a host with no free core: with the loop spinning, the next call comes later (40 us) than without (30 us)
    seen = drive(busy, loop, clock, 12, polled=40e-6, slept=30e-6)
    assert seen == [True] * 8 + [False] * 4  # the long polling phase, then the trial without
    assert not busy.prefers_polling and busy.decisions_against == 1
    seen = drive(busy, loop, clock, 12, polled=40e-6, slept=30e-6)
    assert seen == [False] * 8 + [True] * 4  # now without polling, with a short polling trial
    assert not busy.prefers_polling and busy.decisions_against == 2


def test_polling_that_saves_wakeups_is_kept_and_is_taken_back_when_it_pays_again():
    busy, loop, clock = poller(trial_every=8, trial_length=4)
    seen = drive(busy, loop, clock, 24, polled=40e-6, slept=70e-6)  # a wake-up costs 30 us
    assert seen == ([True] * 8 + [False] * 4) * 2 and busy.prefers_polling
    drive(busy, loop, clock, 12, polled=40e-6, slept=30e-6)  # the host got busy
    assert not busy.prefers_polling
    drive(busy, loop, clock, 12, polled=40e-6, slept=70e-6)  # and idle again
    assert busy.prefers_polling and busy.polling


def test_a_gain_below_the_threshold_does_not_pay_for_polling_and_think_time_is_not_compared():
    busy, loop, clock = poller(trial_every=8, trial_length=4, gain=0.05)
    drive(busy, loop, clock, 12, polled=40e-6, slept=41e-6)  # 2.5 % shorter: not worth the CPU
    assert not busy.prefers_polling
    busy, loop, clock = poller(trial_every=8, trial_length=4)
    drive(busy, loop, clock, 8, polled=40e-6, slept=30e-6)
    drive(busy, loop, clock, 4, polled=40e-6, slept=5.0)  # seconds apart: idle, not a slower call
    assert busy.prefers_polling  # no interval measured without polling: nothing to decide on


def test_a_burst_after_an_idle_pause_is_judged_on_its_own_from_polling():
    busy, loop, clock = poller(trial_every=8, trial_length=4)
    drive(busy, loop, clock, 12, polled=40e-6, slept=30e-6)  # a busy host: polling given up
    drive(busy, loop, clock, 6, polled=40e-6, slept=30e-6)   # and part of the next long phase
    assert not busy.prefers_polling and not busy.polling
    clock.now += 0.2  # idle; then another client (or workload) starts
    busy.activity()
    loop.ready.clear()
    assert busy.prefers_polling and busy.polling  # back to the default at once
    # its cycle compares its own intervals only: the earlier 40/30 us are forgotten
    seen = drive(busy, loop, clock, 12, polled=40e-6, slept=70e-6)
    assert seen == [True] * 7 + [False] * 4 + [True] and busy.prefers_polling
    clock.now += 0.01  # a pause shorter than IDLE_RESTART (think time) does not start over
    drive(busy, loop, clock, 12, polled=40e-6, slept=30e-6)
    assert not busy.prefers_polling


def test_trial_settings_are_checked():
    with pytest.raises(ValueError):
        BusyPoller(100e-6, trial_every=0)
    with pytest.raises(ValueError):
        BusyPoller(100e-6, trial_length=0)
    with pytest.raises(ValueError):
        BusyPoller(100e-6, gain=-0.1)
