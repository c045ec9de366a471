"""Adaptive busy polling: keep the event loop awake for a short window after RPC work.

Owns one decision: after the server has handled a receive or sent a reply, should
the event loop stay awake (polling its sockets without sleeping) for a few tens of
microseconds?  A client that waits for each reply before sending its next call
(libnfs, a shell tool, a metadata-heavy application) sends the next call very soon
after the reply.  If the loop is asleep in ``epoll_wait`` by then, the call pays a
process wake-up, which on virtual machines costs 20-30 us, as much as the whole
call.  Staying awake catches it instead.

How the loop stays awake: a callback re-schedules itself with ``call_soon`` until
the window has passed.  While a callback is ready the loop polls with a zero
timeout, so every socket, timer and thread-safe callback is still served in
order: nothing is read behind the transports' backs and no connection waits for
another's window.

It adapts, like an adaptive mutex: a window in which nothing arrived is a miss.
After ``backoff_after`` misses in a row the poller stops opening windows, except
one in ``probe_every`` (a probe), until a probe catches something.  A client whose
next call comes later than the window costs at most window / probe_every of CPU
per call.  An idle server never polls.  A window of 0 turns polling off.

It also checks that polling pays.  Polling is worth its CPU only when a core is free
for the client (or the kernel) meanwhile; on a host whose cores are all busy (the
client on the same few cores, other workers, other load) the spinning loop takes the
CPU the next call needs, and calls come *later* than without it.  So the poller
measures what it is for: the mean interval between received calls (those under
``INTERVAL_CAP``: think time is not compared), in a long phase of the mode it prefers
(``trial_every`` receives) and then a short phase of the other mode (``trial_length``
receives).  Polling stays (or becomes) preferred only if its mean interval is at
least ``gain`` shorter than without it; the comparison is redone every cycle, so a
host that gets busy or idle is followed within a second or so.

After ``IDLE_RESTART`` without a receive the poller starts over: a new burst of calls is
a new workload, so it is judged on its own, from the default (polling), with nothing
measured before the pause in either mean.  Without that, a cycle that straddled two
workloads compared the one's intervals with the other's: the intervals of a deep-queue
run (with polling) against the first calls of a QD1 client that came next (without),
and that client then ran its first second without polling, a third slower (seen in
bench_vmio's server logs).

This module never touches sockets; the loop is anything with ``call_soon`` and the
clock is injectable, so the policy is tested with a fake loop and clock.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("acmenfs.oncrpc.busypoll")

DEFAULT_WINDOW = 100e-6
DEFAULT_BACKOFF_AFTER = 16
DEFAULT_PROBE_EVERY = 16
DEFAULT_TRIAL_EVERY = 4096
DEFAULT_TRIAL_LENGTH = 512
DEFAULT_GAIN = 0.05
INTERVAL_CAP = 1e-3
IDLE_RESTART = 0.05  # a pause this long between receives ends the workload being measured


class BusyPoller:
    """Keeps one event loop awake for ``window`` seconds after each ``activity()``."""

    def __init__(self, window: float = DEFAULT_WINDOW, *, backoff_after: int = DEFAULT_BACKOFF_AFTER,
                 probe_every: int = DEFAULT_PROBE_EVERY, trial_every: int = DEFAULT_TRIAL_EVERY,
                 trial_length: int = DEFAULT_TRIAL_LENGTH, gain: float = DEFAULT_GAIN,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if window < 0:
            raise ValueError("busy-poll window must be >= 0")
        if backoff_after < 1 or probe_every < 1 or trial_every < 1 or trial_length < 1:
            raise ValueError("backoff_after, probe_every, trial_every and trial_length must be >= 1")
        if gain < 0:
            raise ValueError("gain must be >= 0")
        self.window = window
        self.backoff_after = backoff_after
        self.probe_every = probe_every
        self._clock = clock
        self._loop = None
        self._awake = False
        self._deadline = 0.0
        self._opened_at = 0.0
        self._caught = False  # something arrived in the current window
        self._miss_streak = 0
        self._declined = 0
        self.windows = 0  # windows opened
        self.hits = 0  # receives handled while a window was open (caught without a wake-up)
        self.misses = 0  # windows that ended with nothing caught
        self.skipped = 0  # windows not opened because of back-off
        self.seconds = 0.0  # time spent with a window open
        # does polling pay (see the module docstring): phases and their measured intervals
        self.trial_every = trial_every
        self.trial_length = trial_length
        self.gain = gain
        self.prefers_polling = True
        self._phase_polls = True
        self._phase_left = trial_every
        self._last_received = 0.0
        self._sums = {True: 0.0, False: 0.0}  # polling or not -> summed intervals
        self._counts = {True: 0, False: 0}
        self.decisions_against = 0  # cycles that ended preferring not to poll

    @property
    def enabled(self) -> bool:
        return self.window > 0

    @property
    def polling(self) -> bool:
        """Whether receives open windows now (False in a phase without polling)."""
        return self.enabled and self._phase_polls

    def attach(self, loop) -> None:
        """Use ``loop`` (one poller serves one loop; re-attaching to the same loop is fine)."""
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("a BusyPoller serves a single event loop")
        self._loop = loop

    def activity(self, received: bool = True) -> None:
        """The server handled a receive (``received``) or sent a deferred reply."""
        if self.window <= 0 or self._loop is None:
            return
        now = self._clock()
        if received:
            self._measure(now)
        if not self._phase_polls:
            return
        if self._awake:
            if received:
                self.hits += 1
                self._caught = True
            self._deadline = now + self.window
            return
        if self._miss_streak >= self.backoff_after:
            self._declined += 1
            if self._declined % self.probe_every:
                self.skipped += 1
                return
        self._awake = True
        self._caught = False
        self._opened_at = now
        self._deadline = now + self.window
        self.windows += 1
        self._loop.call_soon(self._tick)

    def _measure(self, now: float) -> None:
        """Account the interval since the last receive to the current phase; move between phases."""
        interval = now - self._last_received
        self._last_received = now
        if interval >= IDLE_RESTART:
            self._start_over()  # (this receive is the first of the fresh phase)
        elif interval < INTERVAL_CAP:
            polls = self._phase_polls
            self._sums[polls] += interval
            self._counts[polls] += 1
        self._phase_left -= 1
        if self._phase_left > 0:
            return
        if self._phase_polls == self.prefers_polling:  # the long phase ended: try the other mode
            self._phase_polls = not self.prefers_polling
            self._phase_left = self.trial_length
            return
        counts, sums = self._counts, self._sums
        if counts[True] and counts[False]:
            polled, slept = sums[True] / counts[True], sums[False] / counts[False]
            prefers = polled * (1 + self.gain) <= slept
            if prefers != self.prefers_polling:
                log.info("busy polling %s: calls came %.1f us apart with it, %.1f us without",
                         "resumed" if prefers else "paused", polled * 1e6, slept * 1e6)
            self.prefers_polling = prefers
            if not prefers:
                self.decisions_against += 1
        self._new_cycle()

    def _new_cycle(self) -> None:
        """A long phase of the preferred mode begins, with both means emptied."""
        self._sums = {True: 0.0, False: 0.0}
        self._counts = {True: 0, False: 0}
        self._phase_polls = self.prefers_polling
        self._phase_left = self.trial_every

    def _start_over(self) -> None:
        """A new burst after an idle pause: a new cycle, from the default (polling)."""
        self.prefers_polling = True
        self._new_cycle()

    def _tick(self) -> None:
        now = self._clock()
        if now < self._deadline:
            self._loop.call_soon(self._tick)
            return
        self._awake = False
        self.seconds += now - self._opened_at
        if self._caught:
            self._miss_streak = 0
            self._declined = 0
        else:
            self.misses += 1
            self._miss_streak += 1

    def stats(self) -> dict[str, float]:
        return {"window_seconds": self.window, "windows": self.windows, "hits": self.hits,
                "misses": self.misses, "skipped": self.skipped, "seconds": self.seconds}
