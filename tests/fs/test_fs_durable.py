"""``acmenfs.fs.durable.write_atomically`` and its users (the NFS handle secret, the NFSv4
client records): after success the new content is there; a write that fails (a real full
file system, or an injected error from the os call) leaves the old content and no
temporary file behind."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from acmenfs.fs import durable
from acmenfs.fs.durable import TEMP_SUFFIX, write_atomically
from acmenfs.nfs3 import handles
from acmenfs.nfs3.handles import SECRET_FILE, load_or_create_secret
from acmenfs.nfs4.grace import BOOTS_FILE, ClientRecords


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(TEMP_SUFFIX))


def failing(name: str, after: int = 0):
    """An os call that works ``after`` times, then raises ENOSPC."""
    real = getattr(os, name)
    calls = {"n": 0}

    def call(*args):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)
    return call


def test_success_replaces_the_content_with_the_asked_mode_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state"
    target.write_bytes(b"old")
    write_atomically(target, b"new content", mode=0o640)
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
def test_an_os_call_failing_leaves_the_old_content_and_no_temporary(tmp_path, monkeypatch, call):
    target = tmp_path / "state"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, call, failing(call))
    with pytest.raises(OSError) as raised:
        write_atomically(target, b"new content")
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    write_atomically(tmp_path / "state", b"0123456789abcdef")
    monkeypatch.undo()
    assert (tmp_path / "state").read_bytes() == b"0123456789abcdef"


def test_without_replace_an_existing_file_is_kept(tmp_path):
    target = tmp_path / "state"
    write_atomically(target, b"first", replace=False)
    with pytest.raises(FileExistsError):
        write_atomically(target, b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    order = []
    real_replace, real_fsync_directory = os.replace, durable.fsync_directory
    monkeypatch.setattr(os, "replace", lambda *a: (order.append("rename"), real_replace(*a))[1])
    monkeypatch.setattr(durable, "fsync_directory", lambda d: (order.append(("fsync dir", Path(d))),
                                                                real_fsync_directory(d))[1])
    write_atomically(tmp_path / "state", b"x")
    assert order == ["rename", ("fsync dir", tmp_path)]


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 64 KiB tmpfs (real ENOSPC), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_file_system_leaves_the_old_content_then_the_write_succeeds_after_room_is_made(full_tmpfs):
    target = full_tmpfs / "state"
    write_atomically(target, b"old" * 100)
    filler = full_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, b"f" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        write_atomically(target, b"new" * 4000)
    assert raised.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" * 100
    assert leftovers(full_tmpfs) == []
    filler.unlink()
    write_atomically(target, b"new" * 4000)
    assert target.read_bytes() == b"new" * 4000
    assert leftovers(full_tmpfs) == []


def test_handle_secret_is_created_once_with_mode_0600_and_a_failed_creation_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", failing("fsync"))
    with pytest.raises(OSError):
        load_or_create_secret(tmp_path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    secret = load_or_create_secret(tmp_path)
    assert len(secret) == 32 and (tmp_path / SECRET_FILE).read_bytes() == secret
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == secret
    (tmp_path / SECRET_FILE).write_bytes(b"short")       # not a secret: replaced
    replaced = load_or_create_secret(tmp_path)
    assert len(replaced) == 32 and replaced != secret and leftovers(tmp_path) == []


def test_a_process_racing_to_create_the_handle_secret_uses_the_one_created_first(tmp_path, monkeypatch):
    theirs = b"T" * 32
    real = handles.write_atomically

    def another_process_first(path, data, **options):
        real(path, theirs, replace=False)                # the other process wins the race
        return real(path, data, **options)
    monkeypatch.setattr(handles, "write_atomically", another_process_first)
    assert load_or_create_secret(tmp_path) == theirs
    assert (tmp_path / SECRET_FILE).read_bytes() == theirs and leftovers(tmp_path) == []


def test_nfs4_boot_record_that_cannot_be_written_keeps_the_previous_one(tmp_path, monkeypatch):
    records = ClientRecords(tmp_path)
    records.note_boot(1)
    assert (tmp_path / BOOTS_FILE).read_text() == "1"
    monkeypatch.setattr(os, "fsync", failing("fsync"))
    ClientRecords(tmp_path).note_boot(2)                 # logged, not raised: a full pool must not stop NFSv4
    monkeypatch.undo()
    assert (tmp_path / BOOTS_FILE).read_text() == "1" and leftovers(tmp_path) == []
    ClientRecords(tmp_path).note_boot(2)
    assert (tmp_path / BOOTS_FILE).read_text() == "1 2"
    assert ClientRecords(tmp_path).previous_boots == {1, 2}
