"""Fixtures for the appliance core tests: real file systems on loop devices.

Owns the session-wide loop-mounted btrfs, XFS (reflink=1), ext4 and tmpfs file
systems (made lazily on first use, unmounted and detached at session end even
after failures) and per-test data dirs on them. Skips with a reason when not
root or when loop devices cannot be used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

IMAGE_SIZE = 4 << 30  # 4 GiB sparse image files (btrfs frees deleted subvolumes lazily)
MKFS = {
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


class LoopFilesystems:
    """Mounts one file system per kind on first request; ``close()`` undoes everything."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounts: dict[str, Path] = {}
        self.devices: list[str] = []
        self.mounted: list[Path] = []

    def get(self, kind: str) -> Path:
        if kind not in self.mounts:
            self.mounts[kind] = self._make(kind)
        return self.mounts[kind]

    def _make(self, kind: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("real file systems on loop devices need root")
        mount_point = self.base / f"mnt-{kind}"
        mount_point.mkdir()
        if kind == "tmpfs":
            _run("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mount_point))
            self.mounted.append(mount_point)
            return mount_point
        image = self.base / f"{kind}.img"
        with open(image, "wb") as handle:
            handle.truncate(IMAGE_SIZE)
        try:
            device = _run("losetup", "--find", "--show", str(image))
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"loop devices unavailable: {getattr(exc, 'stderr', exc)}")
        self.devices.append(device)
        _run(*MKFS[kind], device)
        _run("mount", device, str(mount_point))
        self.mounted.append(mount_point)
        return mount_point

    def close(self) -> None:
        for mount_point in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
        for device in reversed(self.devices):
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


@pytest.fixture(scope="session")
def loop_filesystems():
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemp
    # dirs with rmtree, which would descend into these mounts.
    base = Path(tempfile.mkdtemp(prefix="acmenfs-appliance-loops-", dir="/tmp"))
    filesystems = LoopFilesystems(base)
    try:
        yield filesystems
    finally:
        filesystems.close()
        if not any(os.path.ismount(mount) for mount in filesystems.mounted):
            shutil.rmtree(base, ignore_errors=True)


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
        _remove_data_dir(directory)


def _remove_data_dir(directory: Path) -> None:
    """Remove a data dir, deleting btrfs subvolumes (read-only ones cannot be emptied)."""
    subprocess.run(
        ["find", str(directory), "-xdev", "-depth", "-type", "d", "-inum", "256",
         "-exec", "btrfs", "subvolume", "delete", "{}", ";"],
        check=False, capture_output=True,
    )
    shutil.rmtree(directory, ignore_errors=True)


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
