"""Stopping a server subprocess that a test started: one signal by pid, a bounded wait, SIGKILL.

Owns ``stop_process``, the common part of every test harness's ``stop()`` (``acmenfs nfsd`` and
``acmenfs serve`` subprocesses in tests/appliance, tests/nfs3, tests/nfs4 and tests/workers).
What a harness adds stays with it: closing its log, checking that workers are gone too.
"""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, timeout: float, signum: int = signal.SIGTERM) -> int:
    """Send ``signum`` to ``process`` if it still runs, wait up to ``timeout`` seconds for it to
    exit, SIGKILL it if it has not (then wait up to ``timeout`` again); returns its exit code
    (negative: killed by that signal, so a test asserting 0 sees a stop that needed the kill)."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode
