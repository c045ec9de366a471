"""Storage helpers on real file systems: tree copies keep holes, modes, links; backend choice."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from acmenfs.appliance.storage import (
    BtrfsBackend,
    ReflinkBackend,
    choose_backend,
    copy_tree,
    data_segments,
    filesystem_type,
    rename_exchange,
)

MIB = 1 << 20


def make_sample_tree(root: Path) -> None:
    """A 1 GiB sparse file with 3 MiB of data, a subdirectory, a symlink, a FIFO, odd modes."""
    root.mkdir()
    with open(root / "volume", "wb") as handle:
        handle.truncate(1 << 30)
        for offset in (0, 300 * MIB, (1 << 30) - MIB):
            handle.seek(offset)
            handle.write(bytes([offset % 251 + 1]) * MIB)
    os.chmod(root / "volume", 0o640)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "note.txt").write_text("hello")
    os.chmod(root / "sub", 0o750)
    os.chown(root / "sub" / "deeper" / "note.txt", 1234, 4321)
    os.symlink("sub/deeper/note.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.mkfifo(root / "pipe", 0o600)
    (root / "empty").touch()


@pytest.mark.parametrize("kind", ["ext4", "tmpfs", "xfs", "btrfs"])
def test_copy_tree_keeps_holes_modes_links_and_content(kind, make_data_dir):
    base = make_data_dir(kind)
    source, target = base / "source", base / "target"
    make_sample_tree(source)
    reports = []
    methods = copy_tree(source, target, lambda done, total: reports.append((done, total)))
    copied = os.stat(target / "volume")
    assert copied.st_size == 1 << 30
    assert copied.st_blocks * 512 < 64 * MIB, "holes must stay holes"
    with open(source / "volume", "rb") as original, open(target / "volume", "rb") as copy:
        for offset in (0, 300 * MIB, (1 << 30) - MIB, 500 * MIB):
            original.seek(offset)
            copy.seek(offset)
            assert original.read(MIB) == copy.read(MIB)
    assert stat.S_IMODE(copied.st_mode) == 0o640
    assert stat.S_IMODE(os.stat(target / "sub").st_mode) == 0o750
    note = os.stat(target / "sub" / "deeper" / "note.txt")
    assert (note.st_uid, note.st_gid) == (1234, 4321)
    assert (target / "link").read_text() == "hello" and os.readlink(target / "link") == "sub/deeper/note.txt"
    assert os.readlink(target / "dangling") == "/nonexistent/target"
    assert stat.S_ISFIFO(os.lstat(target / "pipe").st_mode)
    assert (target / "empty").stat().st_size == 0
    assert reports[-1] == (reports[-1][1], reports[-1][1]) and reports[-1][1] == (1 << 30) + 5
    expected_method = "reflink" if kind in ("xfs", "btrfs") else "copy"
    assert methods[expected_method] == 3


def test_data_segments_finds_the_written_ranges(make_data_dir):
    path = make_data_dir("ext4") / "f"
    with open(path, "wb") as handle:
        handle.truncate(100 * MIB)
        handle.seek(10 * MIB)
        handle.write(b"a" * MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_segments(fd, 100 * MIB) == [(10 * MIB, MIB)]
    finally:
        os.close(fd)


def test_filesystem_type_and_backend_choice(make_data_dir):
    btrfs_dir, xfs_dir = make_data_dir("btrfs"), make_data_dir("xfs")
    assert filesystem_type(btrfs_dir) == "btrfs" and filesystem_type(xfs_dir) == "xfs"
    assert isinstance(choose_backend(btrfs_dir), BtrfsBackend)
    assert isinstance(choose_backend(btrfs_dir, "reflink"), ReflinkBackend)
    assert isinstance(choose_backend(xfs_dir), ReflinkBackend)
    with pytest.raises(ValueError, match="needs a btrfs data dir"):
        choose_backend(xfs_dir, "btrfs")
    with pytest.raises(ValueError, match="unknown storage backend"):
        choose_backend(xfs_dir, "zfs")


def test_rename_exchange_swaps_atomically(make_data_dir):
    base = make_data_dir("ext4")
    (base / "a").mkdir()
    (base / "a" / "from-a").touch()
    (base / "b").mkdir()
    rename_exchange(base / "a", base / "b")
    assert os.listdir(base / "b") == ["from-a"] and os.listdir(base / "a") == []
    with pytest.raises(OSError):
        rename_exchange(base / "a", base / "missing")
