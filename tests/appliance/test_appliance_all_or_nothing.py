"""Every multi-step change is all or nothing: a failed put_volume, extend or revert leaves no trace.

Before the fix, ``PUT /volume`` renamed and chowned the file before growing it,
so a size the file system refused (EFBIG on ext4) or ENOSPC on a thick volume
left the file under a name the row did not know (``volume: null``); a failed
thick extend left the file partly allocated (the pool full); and a store
write failing after the files changed (a full database) left files and rows
disagreeing. Each test fails one step and checks that files, owner, size,
allocation, rows and pool space are exactly as before.
"""

from __future__ import annotations

import os

import pytest

from acmenfs.appliance.errors import InvalidRequest, NoSpace
from acmenfs.appliance.service import ApplianceService

MiB = 1 << 20
PIB = 1 << 50  # ext4 refuses files this large (EFBIG)


def volume_state(service: ApplianceService, share_id: str) -> tuple:
    """Size, volume (allocation to 64 KiB: ext4 may keep an extent-index block) and the files."""
    share = service.get_share(share_id)
    directory = service.layout.share_dir(share_id)
    volume = share.volume
    if volume is not None:
        volume = (volume.name, volume.size, volume.sparse, volume.mode, volume.uid, volume.gid,
                  volume.allocated_bytes >> 16)
    return share.size, volume, sorted(os.listdir(directory))


def pool_free(service: ApplianceService) -> int:
    os.sync()
    fs = os.statvfs(service.layout.root)
    return fs.f_bavail * fs.f_frsize


def test_put_volume_with_a_refused_size_changes_nothing(service_factory):
    service = service_factory("ext4")
    share = service.create_share("s", 4 * MiB, volume={"name": "v"})
    volume = service.layout.share_dir(share.id) / "v"
    volume.write_bytes(b"data")
    before = volume_state(service, share.id)
    with pytest.raises(InvalidRequest) as refused:
        service.put_volume(share.id, "w", size=PIB, uid=107, gid=107)
    assert refused.value.code == "invalid_size"
    assert volume_state(service, share.id) == before
    retried = service.put_volume(share.id, "w")  # the retry renames the same file, data kept
    assert retried.volume.name == "w" and (volume.with_name("w")).read_bytes()[:4] == b"data"


@pytest.mark.parametrize("kind", ["btrfs", "xfs", "ext4"])
def test_failed_thick_grow_gives_back_size_allocation_and_space(kind, small_filesystem):
    service = ApplianceService(small_filesystem(kind) / "data")
    service.open()
    try:
        share = service.create_share("s", 8 * MiB, volume={"name": "v", "sparse": False})
        before, free = volume_state(service, share.id), pool_free(service)
        with pytest.raises(NoSpace):
            service.extend_share(share.id, 1 << 30)  # more than the whole file system
        assert volume_state(service, share.id) == before
        assert pool_free(service) >= free - MiB
        with pytest.raises(NoSpace):
            service.put_volume(share.id, "renamed", size=1 << 30)
        assert volume_state(service, share.id) == before
        assert pool_free(service) >= free - MiB
        assert service.extend_share(share.id, 16 * MiB).volume.allocated_bytes >= 16 * MiB  # still usable
    finally:
        service.close()


def fail_row_writes(monkeypatch, service: ApplianceService) -> None:
    def full(*args, **kwargs):
        raise NoSpace("no space left in the pool for the appliance's database (test)")

    monkeypatch.setattr(service._store, "update_share", full)


def test_row_write_failure_undoes_put_volume_rename_owner_and_size(service_factory, monkeypatch):
    service = service_factory("xfs")
    share = service.create_share("s", 4 * MiB, volume={"name": "v"})
    before = volume_state(service, share.id)
    fail_row_writes(monkeypatch, service)
    with pytest.raises(NoSpace):
        service.put_volume(share.id, "w", size=8 * MiB, uid=107, gid=108)
    monkeypatch.undo()
    assert volume_state(service, share.id) == before


def test_row_write_failure_undoes_a_new_volume_file(service_factory, monkeypatch):
    service = service_factory("xfs")
    share = service.create_share("s", 4 * MiB)
    fail_row_writes(monkeypatch, service)
    with pytest.raises(NoSpace):
        service.put_volume(share.id, "new")
    monkeypatch.undo()
    assert volume_state(service, share.id) == (4 * MiB, None, [])


def test_row_write_failure_undoes_extend(service_factory, monkeypatch):
    service = service_factory("xfs")
    share = service.create_share("s", 4 * MiB, volume={"name": "v", "sparse": False})
    before = volume_state(service, share.id)
    fail_row_writes(monkeypatch, service)
    with pytest.raises(NoSpace):
        service.extend_share(share.id, 8 * MiB)
    monkeypatch.undo()
    assert volume_state(service, share.id) == before


def test_row_write_failure_undoes_revert(service_factory, monkeypatch):
    service = service_factory("btrfs")
    share = service.create_share("s", 4 * MiB, volume={"name": "v"})
    snapshot = service.create_snapshot(share.id, "p")
    service.put_volume(share.id, "renamed")
    marker = service.layout.share_dir(share.id) / "after-snapshot"
    marker.write_bytes(b"new")
    before = volume_state(service, share.id)
    fail_row_writes(monkeypatch, service)
    with pytest.raises(NoSpace):
        service.revert_share(share.id, snapshot.id)
    monkeypatch.undo()
    assert volume_state(service, share.id) == before and marker.read_bytes() == b"new"
    assert os.listdir(service.layout.staging) == [] and os.listdir(service.layout.trash) == []
