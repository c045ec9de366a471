"""Fixtures for the appliance tests: real file systems on loop devices, live APIs, servers.

Owns the per-test data dirs on the session-wide loop-mounted file systems
(tests/conftest.py), small throwaway loop file systems, ``service_factory``,
and the REST/CLI fixtures built on tests/appliance/api_fixtures.py: ``live_api``
and ``module_live_api`` (a live API in a thread), ``api`` and ``module_api``
(authenticated clients of them) and ``serve_processes`` (``acmenfs serve``
subprocesses stopped at teardown). Test modules use these by name without
importing them. Skips with a reason when not root or when loop devices cannot
be used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from api_fixtures import LiveApi, ServeProcess  # tests/appliance/api_fixtures.py
from loopfs import MKFS, remove_data_dir, run as _run  # tests/loopfs.py (loop_filesystems: tests/conftest.py)

@pytest.fixture
def make_data_dir(loop_filesystems):
    """``make_data_dir(kind)`` -> a fresh empty directory on that kind of file system."""
    made: list[Path] = []

    def make(kind: str) -> Path:
        directory = loop_filesystems.get(kind) / f"data-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        made.append(directory)
        return directory

    yield make
    for directory in made:
        remove_data_dir(directory)


@pytest.fixture(params=["btrfs", "xfs", "ext4"])
def fs_kind(request) -> str:
    """The three backends that matter: btrfs subvolumes, XFS reflinks, ext4 copies."""
    return request.param


@pytest.fixture
def service_factory(make_data_dir):
    """``service_factory(kind, **options)`` -> an open ApplianceService (closed at teardown)."""
    from acmenfs.appliance.service import ApplianceService

    opened = []

    def make(kind: str, data_dir: Path | None = None, **options):
        service = ApplianceService(data_dir or make_data_dir(kind), **options)
        service.open()
        opened.append(service)
        return service

    yield make
    for service in opened:
        service.close()


SMALL_IMAGE_SIZE = 320 << 20  # XFS's minimum is 300 MiB; small enough to fill in a moment


@pytest.fixture
def small_filesystem(tmp_path_factory):
    """``small_filesystem(kind)`` -> the mount point of a fresh 320 MiB loop file system.

    Each call makes its own image (a full pool must not disturb other tests);
    all are unmounted, detached and removed at teardown, even after failures.
    """
    if os.geteuid() != 0:
        pytest.skip("real file systems on loop devices need root")
    base = Path(tempfile.mkdtemp(prefix="acmenfs-small-fs-", dir="/tmp"))
    mounted: list[Path] = []
    devices: list[str] = []

    def make(kind: str) -> Path:
        image = base / f"{kind}-{uuid.uuid4().hex[:6]}.img"
        with open(image, "wb") as handle:
            handle.truncate(SMALL_IMAGE_SIZE)
        device = _run("losetup", "--find", "--show", str(image))
        devices.append(device)
        _run(*MKFS[kind], device)
        mount_point = image.with_suffix(".mnt")
        mount_point.mkdir()
        _run("mount", device, str(mount_point))
        mounted.append(mount_point)
        return mount_point

    try:
        yield make
    finally:
        for mount_point in reversed(mounted):
            subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
        for device in reversed(devices):
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        if not any(os.path.ismount(mount) for mount in mounted):
            shutil.rmtree(base, ignore_errors=True)


# ----- REST API and ``acmenfs serve`` fixtures (helpers: api_fixtures.py) -------------------------

@pytest.fixture
def live_api(tmp_path):
    api = LiveApi(tmp_path / "data").start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def module_live_api(tmp_path_factory):
    """One live API for a whole module, for tests that only add uniquely named things."""
    api = LiveApi(tmp_path_factory.mktemp("module-api") / "data").start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def module_api(module_live_api):
    with module_live_api.client() as client:
        yield client


@pytest.fixture
def api(live_api):
    """An authenticated httpx client of ``live_api``."""
    with live_api.client() as client:
        yield client


@pytest.fixture
def serve_processes():
    """A list to append started ``ServeProcess`` objects to; each is stopped at teardown."""
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.stop()
