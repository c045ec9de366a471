"""Fixtures shared by every test area: the local portmapper that rpcinfo needs."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest


def _portmapper_answers() -> bool:
    return subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def rpcbind():
    """A running rpcbind on 127.0.0.1:111 (Debian 12's rpcinfo asks it even with -n PORT).

    Started here (and stopped by pid) only if none answers already.
    """
    if shutil.which("rpcinfo") is None or shutil.which("rpcbind") is None:
        pytest.fail("rpcinfo/rpcbind missing: install the Debian package 'rpcbind'")
    if _portmapper_answers():
        yield None
        return
    process = subprocess.Popen(["rpcbind", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _portmapper_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("rpcbind did not start (it needs root)")
        time.sleep(0.1)
    yield process.pid
    process.terminate()
    process.wait(10)
