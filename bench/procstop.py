"""Stopping a server subprocess that a benchmark started: one signal by pid, a bounded wait, SIGKILL.

Owns ``stop_process``, the common part of the benchmarks' server ``stop()`` (bench_nfs,
bench_nfs4 --wire, bench_rpc_null, bench_vmio, bench_workers).  The tests have their own
(tests/procstop.py): the two trees do not import each other.  Unlike the tests, which assert
on the exit code, the benchmarks ignore it, so a kill is also said on stderr.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def stop_process(process: subprocess.Popen, timeout: float = 60, signum: int = signal.SIGTERM) -> int:
    """Send ``signum`` to ``process`` if it still runs, wait up to ``timeout`` seconds for it to
    exit, SIGKILL it if it has not (then wait up to ``timeout`` again); returns its exit code."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"pid {process.pid} did not exit within {timeout:g} s of {signal.Signals(signum).name}: killing it",
                  file=sys.stderr, flush=True)
            process.kill()
            process.wait(timeout)
    return process.returncode
