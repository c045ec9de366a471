"""Capturing our own loopback traffic with tshark, for tests that check our bytes on the wire.

Owns ``loopback_capture``: start ``tshark`` on ``lo`` with a capture filter, wait until it is
really capturing, let the test send its traffic, then stop it with SIGINT (so the file is
complete) by pid.  Decoding and asserting stay with each test.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import pytest


@contextlib.contextmanager
def loopback_capture(tshark: str, capture_filter: str, path: Path):
    """``with loopback_capture(tshark, "tcp port 2049", path):`` traffic inside is in ``path``."""
    process = subprocess.Popen([tshark, "-i", "lo", "-B", "64", "-f", capture_filter, "-a", "duration:60",
                                "-w", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        line = b""
        while b"Capturing on" not in line and time.monotonic() - started < 30:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                pytest.fail("tshark exited before capturing")
        time.sleep(1.0)  # "Capturing on" is printed slightly before packets are taken
        yield path
        time.sleep(1.0)  # let the last packets reach the file
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
