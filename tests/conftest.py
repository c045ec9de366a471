"""Fixtures shared by every test area: the local portmapper that rpcinfo needs, an export
directory (``export_dir``), and real file systems on loop devices (``loop_filesystems``,
``btrfs_mount``; see tests/loopfs.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from loopfs import LoopFilesystems, remove_data_dir


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


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """An empty directory anyone may write to, for a test server's export (tests/nfs3, tests/nfs4)."""
    directory = tmp_path / "export"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


@pytest.fixture(scope="session")
def loop_filesystems():
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemp
    # dirs with rmtree, which would descend into these mounts.
    base = Path(tempfile.mkdtemp(prefix="acmenfs-loops-", dir="/tmp"))
    filesystems = LoopFilesystems(base)
    try:
        yield filesystems
    finally:
        filesystems.close()
        if not any(os.path.ismount(mount) for mount in filesystems.mounted):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def btrfs_mount(loop_filesystems) -> Path:
    """A fresh directory of this test's own on the session's loop-mounted btrfs."""
    directory = loop_filesystems.get("btrfs") / f"test-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    yield directory
    remove_data_dir(directory)
