"""Real file systems on loop devices for tests: one image per kind, made on first use.

Owns making, mounting and undoing loop-mounted btrfs, XFS (reflink=1), ext4 and tmpfs
(``LoopFilesystems``) and removing a test's directory on them, btrfs subvolumes included
(``remove_data_dir``).  The session-wide ``loop_filesystems`` fixture (tests/conftest.py)
and the appliance tests' fixtures use it.  Skips with a reason when not root or when loop
devices cannot be used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE_SIZE = 4 << 30  # 4 GiB sparse image files (btrfs frees deleted subvolumes lazily)
MKFS = {
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}


def run(*command: str) -> str:
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
            run("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mount_point))
            self.mounted.append(mount_point)
            return mount_point
        image = self.base / f"{kind}.img"
        with open(image, "wb") as handle:
            handle.truncate(IMAGE_SIZE)
        try:
            device = run("losetup", "--find", "--show", str(image))
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"loop devices unavailable: {getattr(exc, 'stderr', exc)}")
        self.devices.append(device)
        run(*MKFS[kind], device)
        run("mount", device, str(mount_point))
        self.mounted.append(mount_point)
        return mount_point

    def close(self) -> None:
        for mount_point in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
        for device in reversed(self.devices):
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)



def remove_data_dir(directory: Path) -> None:
    """Remove a data dir, deleting btrfs subvolumes (read-only ones cannot be emptied)."""
    subprocess.run(
        ["find", str(directory), "-xdev", "-depth", "-type", "d", "-inum", "256",
         "-exec", "btrfs", "subvolume", "delete", "{}", ";"],
        check=False, capture_output=True,
    )
    shutil.rmtree(directory, ignore_errors=True)
