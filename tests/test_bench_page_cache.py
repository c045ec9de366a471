"""bench/page_cache.py, the probe bench_vmio runs before every run: it must tell a cached file
from a dropped one and report folio sizes a real page cache has (root: frame numbers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from page_cache import folio_profile  # noqa: E402  (bench/ is not a package)

SIZE = 8 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/proc/kpageflags"),
                                reason="frame numbers need root and /proc/kpageflags")


def _cached_file(path: Path) -> None:
    """Written, flushed (clean pages can be dropped) and read back: all of it in the cache."""
    with open(path, "wb") as out:
        out.write(os.urandom(SIZE))
        out.flush()
        os.fsync(out.fileno())
    assert len(path.read_bytes()) == SIZE


def test_a_file_just_written_and_read_is_resident_in_folios_of_at_least_a_page(tmp_path):
    path = tmp_path / "disk.img"
    _cached_file(path)
    profile = folio_profile(path, samples=64)
    assert profile is not None
    assert profile["resident"] == 1.0
    assert 4.0 <= profile["folio_kib"] <= 2048.0
    assert 0.0 <= profile["large"] <= 1.0


def test_a_file_dropped_from_the_cache_is_not_resident_and_the_probe_reads_nothing_back(tmp_path):
    path = tmp_path / "disk.img"
    _cached_file(path)
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()
    if kind == "tmpfs":
        pytest.skip("tmpfs pages cannot be dropped")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    first = folio_profile(path, samples=64)
    assert first is not None and first["resident"] == 0.0
    again = folio_profile(path, samples=64)   # the probe touches resident pages only: nothing came back
    assert again["resident"] == 0.0


def test_an_empty_file_has_no_profile(tmp_path):
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    assert folio_profile(path) is None
