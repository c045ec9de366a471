"""Benchmark: create share / snapshot / clone latency on btrfs, XFS-reflink and the ext4 copy fallback.

Each repeat creates a share holding a 100 GiB sparse volume file, writes 1 GiB of
non-zero data into it directly through the file system (64 x 16 MiB pieces spread
over the file, then fsync, untimed), takes a snapshot, and clones the snapshot
into a new share (volume file renamed, as the Cinder driver does). Times are
medians; the ext4 copy fallback really copies the 1 GiB of data twice per repeat,
so it runs fewer repeats and serves as the baseline the other figures are
compared with. The loop file systems are mounted without ``discard``: with it,
every delete punches holes in the image file and XFS log forces then wait for
those discards (a snapshot after a delete took ~160-200 ms instead of ~7 ms).
Loop file systems live on sparse image files under /tmp and are
unmounted and detached at the end, even on failure. Needs root.

Run: python bench/bench_appliance.py [--repeats 10] [--copy-repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acmenfs.appliance.service import ApplianceService

GIB = 1 << 30
VOLUME_SIZE = 100 * GIB
PIECE = 16 << 20
PIECES = 64  # 64 x 16 MiB = 1 GiB written
IMAGE_SIZE = 150 * GIB
FILESYSTEMS = {
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "xfs-reflink": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "ext4-copy": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"],
}
GOAL_SECONDS = 0.050


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


class LoopMount:
    """A file system on a sparse image file, mounted under ``base``; ``close()`` undoes it."""

    def __init__(self, base: Path, label: str) -> None:
        self.image = base / f"{label}.img"
        self.mount_point = base / label
        self.device: str | None = None
        self.mounted = False
        with open(self.image, "wb") as handle:
            handle.truncate(IMAGE_SIZE)
        self.device = run("losetup", "--find", "--show", str(self.image))
        run(*FILESYSTEMS[label], self.device)
        self.mount_point.mkdir()
        run("mount", self.device, str(self.mount_point))
        self.mounted = True

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mount_point)], check=False)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False)
        self.image.unlink(missing_ok=True)


def write_gibibyte(path: Path) -> None:
    """1 GiB of non-zero data in 16 MiB pieces spread over the volume, fsynced."""
    block = os.urandom(1 << 20) * (PIECE >> 20)
    stride = VOLUME_SIZE // PIECES
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in range(PIECES):
            os.pwrite(fd, block, index * stride)
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def measure(label: str, data_dir: Path, repeats: int) -> dict:
    service = ApplianceService(data_dir)
    service.open()
    samples: dict[str, list[float]] = {"create share": [], "snapshot": [], "clone": []}
    clone_allocated = []
    try:
        for repeat in range(repeats):
            share, seconds = timed(lambda: service.create_share(
                f"bench-{repeat}", VOLUME_SIZE, volume={"name": f"volume-{repeat}"}))
            samples["create share"].append(seconds)
            write_gibibyte(service.layout.share_dir(share.id) / share.volume.name)
            snapshot, seconds = timed(lambda: service.create_snapshot(share.id, "snap"))
            samples["snapshot"].append(seconds)
            clone, seconds = timed(lambda: service.clone_snapshot(
                snapshot.id, f"clone-{repeat}", volume_name=f"clone-volume-{repeat}"))
            samples["clone"].append(seconds)
            clone_allocated.append(clone.volume.allocated_bytes)
            service.delete_share(clone.id)
            service.delete_share(share.id, cascade=True)
        backend = service.backend_name
    finally:
        service.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    maxima = {name: max(values) for name, values in samples.items()}
    print(f"  {label}: backend {backend}, {repeats} repeats, clone volume allocated "
          f"{statistics.median(clone_allocated) / GIB:.2f} GiB of {VOLUME_SIZE // GIB} GiB", flush=True)
    return {"backend": backend, "repeats": repeats, "medians": medians, "maxima": maxima}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--copy-repeats", type=int, default=3, help="repeats on the ext4 copy fallback")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_appliance needs root (loop devices)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="bench-appliance-", dir="/tmp"))
    mounts: list[LoopMount] = []
    results = {}
    try:
        for label in FILESYSTEMS:
            mount = LoopMount(base, label)
            mounts.append(mount)
            repeats = arguments.copy_repeats if label == "ext4-copy" else arguments.repeats
            results[label] = measure(label, mount.mount_point / "data", repeats)
    finally:
        for mount in reversed(mounts):
            mount.close()
        shutil.rmtree(base, ignore_errors=True)
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    baseline = results["ext4-copy"]["medians"]
    print(f"\nmedian latency, share with a {VOLUME_SIZE // GIB} GiB sparse volume holding 1 GiB of data")
    print("ratio = time / ext4 copy-fallback time for the same operation (same run)")
    print(f"{'file system':<14}{'backend':<9}{'n':>3}  {'operation':<13}{'median ms':>10}{'max ms':>9}{'ratio':>9}"
          "  goal <50 ms (median)")
    for label, result in results.items():
        for operation, seconds in result["medians"].items():
            ratio = seconds / baseline[operation]
            goal = "-" if label == "ext4-copy" else ("met" if seconds < GOAL_SECONDS else "MISSED")
            print(f"{label:<14}{result['backend']:<9}{result['repeats']:>3}  {operation:<13}"
                  f"{seconds * 1000:>10.1f}{result['maxima'][operation] * 1000:>9.1f}{ratio:>9.3f}  {goal}")


if __name__ == "__main__":
    sys.exit(main())
