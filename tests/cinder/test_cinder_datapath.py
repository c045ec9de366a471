"""Image copies: the user-space NFS path for real, the mount path with a recorded executor.

This machine has no kernel NFS client, so the mount path is exercised with a
fake ``execute`` that records mount/umount commands and makes the mount point a
plain local directory; everything else (os-brick's RemoteFsClient, Cinder's
image_utils with qemu-img, the appliance) is real. The user-space path copies
over the appliance's real NFS server and is checked by reading back with our
NFS client.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import pytest
from oslo_concurrency import processutils
from os_brick.remotefs import remotefs as remotefs_brick

from cinder.tests.unit import fake_volume

from acmenfs.cinder.datapath import MountDataPath
from conftest import CINDER_HOST, fresh_group, make_driver, require_nfs, volume_file_io
from test_cinder_driver import created_snapshot, created_volume, new_volume

GIB = 1024 ** 3
MIB = 1024 ** 2


class FileImageService:
    """The few Glance-service methods Cinder's image_utils calls, on bytes in memory."""

    def __init__(self) -> None:
        self.images: dict[str, dict] = {}
        self.uploads: dict[str, tuple[int, str]] = {}
        self.temp_images = None  # image_utils.TemporaryImages attaches itself here

    def add(self, data: bytes, disk_format: str = "raw") -> str:
        image_id = str(uuid.uuid4())
        self.images[image_id] = {"meta": {"id": image_id, "disk_format": disk_format,
                                          "container_format": "bare", "size": len(data),
                                          "status": "active", "properties": {}},
                                 "data": data}
        return image_id

    def show(self, context, image_id):
        return dict(self.images[image_id]["meta"])

    def download(self, context, image_id, data=None):
        data.write(self.images[image_id]["data"])

    def update(self, context, image_id, image_meta, data=None, purge_props=True, store_id=None,
               base_image_ref=None):
        digest, size = hashlib.sha256(), 0
        while chunk := data.read(8 * MIB):
            digest.update(chunk)
            size += len(chunk)
        self.uploads[image_id] = (size, digest.hexdigest())
        return {"id": image_id}


def image_bytes() -> bytes:
    """3 MiB random, 2 MiB zeros (a hole to skip), then 100 KiB + 3 bytes random."""
    return os.urandom(3 * MIB) + bytes(2 * MIB) + os.urandom(100 * 1024 + 3)


def read_volume(appliance, rest, share_id: str, name: str, length: int) -> bytes:
    """Read a volume file back over NFS with our client (own access rule, removed after)."""
    return volume_file_io(appliance, rest, share_id, name, length=length)[0]


def write_volume(appliance, rest, share_id: str, name: str, data: bytes) -> None:
    volume_file_io(appliance, rest, share_id, name, data=data)


def volume_sha256(prefix: bytes, total: int) -> str:
    digest = hashlib.sha256(prefix)
    remaining = total - len(prefix)
    zeros = bytes(8 * MIB)
    while remaining:
        step = min(remaining, len(zeros))
        digest.update(zeros[:step])
        remaining -= step
    return digest.hexdigest()


def with_type(context, volume):
    volume.volume_type = fake_volume.fake_volume_type_obj(context, extra_specs={})
    volume.glance_metadata = {}
    return volume


# -- user-space path (real NFS) ------------------------------------------------------

def test_image_to_volume_over_userspace_nfs(driver, context, rest, appliance):
    require_nfs(appliance)
    images = FileImageService()
    data = image_bytes()
    image_id = images.add(data)
    volume = created_volume(driver, context, size=1)

    driver.copy_image_to_volume(context, volume, images, image_id, disable_sparse=False)

    share = rest.get_share(volume.provider_id)
    assert share["volume"]["size"] == GIB
    assert share["access"] == []  # the Cinder host's temporary rule is gone
    readback = read_volume(appliance, rest, volume.provider_id, volume.name, len(data) + MIB)
    assert readback[:len(data)] == data
    assert readback[len(data):] == bytes(MIB)


def test_image_to_volume_overwrites_old_contents(driver, context, rest, appliance):
    require_nfs(appliance)
    volume = created_volume(driver, context, size=1)
    write_volume(appliance, rest, volume.provider_id, volume.name, b"\xff" * (6 * MIB))
    images = FileImageService()
    data = os.urandom(MIB) + bytes(4 * MIB)  # the zeros must replace the old 0xff bytes
    image_id = images.add(data)

    driver.copy_image_to_volume(context, volume, images, image_id, disable_sparse=False)

    assert read_volume(appliance, rest, volume.provider_id, volume.name, 6 * MIB) == data + bytes(MIB)


def test_volume_to_image_over_userspace_nfs(driver, context, rest, appliance):
    require_nfs(appliance)
    volume = with_type(context, created_volume(driver, context, size=1))
    data = image_bytes()
    write_volume(appliance, rest, volume.provider_id, volume.name, data)
    images = FileImageService()
    image_meta = {"id": str(uuid.uuid4()), "disk_format": "raw", "container_format": "bare"}

    driver.copy_volume_to_image(context, volume, images, image_meta)

    assert images.uploads[image_meta["id"]] == (GIB, volume_sha256(data, GIB))
    assert rest.get_share(volume.provider_id)["access"] == []


def test_snapshot_clone_and_revert_keep_the_right_bytes(driver, context, rest, appliance):
    require_nfs(appliance)
    volume = created_volume(driver, context, size=1)
    before = os.urandom(MIB)
    write_volume(appliance, rest, volume.provider_id, volume.name, before)
    snapshot = created_snapshot(driver, context, volume)
    write_volume(appliance, rest, volume.provider_id, volume.name, os.urandom(MIB))

    clone = new_volume(context, size=1)
    clone.update(driver.create_cloned_volume(clone, volume))
    driver.revert_to_snapshot(context, volume, snapshot)

    assert read_volume(appliance, rest, volume.provider_id, volume.name, MIB) == before
    assert read_volume(appliance, rest, clone.provider_id, clone.name, MIB) != before


# -- mount path (recorded executor) ------------------------------------------------------

class RecordingExecutor:
    """Stands in for Cinder's ``execute``: records commands; a "mounted" share is a
    plain directory (created by ``mkdir -p``); ``umount`` empties it again."""

    def __init__(self, fail_mounts: int = 0, on_mount=None, refuse: dict[str, str] | None = None) -> None:
        """``refuse`` maps a mount option (``vers=4.2``) to the stderr mount.nfs fails with."""
        self.commands: list[tuple[str, ...]] = []
        self.fail_mounts = fail_mounts
        self.on_mount = on_mount
        self.refuse = refuse or {}
        self._lock = threading.Lock()

    def _refusal(self, command: tuple[str, ...]) -> str | None:
        options = {option for index, part in enumerate(command) if part == "-o"
                   for option in command[index + 1].split(",")}
        return next((stderr for option, stderr in self.refuse.items() if option in options), None)

    def __call__(self, *command, **kwargs):
        command = tuple(str(part) for part in command)
        with self._lock:
            self.commands.append(command)
            if command[:2] == ("mkdir", "-p"):
                os.makedirs(command[2], exist_ok=True)
            elif command[0] == "mount":
                refusal = self._refusal(command)
                if refusal:
                    raise processutils.ProcessExecutionError(exit_code=32, stderr=refusal, cmd=" ".join(command))
                if self.fail_mounts:
                    self.fail_mounts -= 1
                    raise processutils.ProcessExecutionError(stderr="mount.nfs: Connection refused",
                                                             cmd=" ".join(command))
                if self.on_mount:
                    self.on_mount(command[-1])
            elif command[0] == "umount":
                for name in os.listdir(command[1]):
                    os.remove(os.path.join(command[1], name))
        return "", ""

    def named(self, verb: str) -> list[tuple[str, ...]]:
        return [command for command in self.commands if command[0] == verb]


def mount_driver(cinder_conf, appliance, mount_base, executor, **overrides):
    settings = dict(acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                    acmenfs_data_path="mount", nfs_mount_point_base=mount_base,
                    nas_secure_file_operations="true", nfs_mount_attempts=3)
    settings.update(overrides)
    return make_driver(fresh_group(), execute=executor, **settings)


def brick_mount_point(mount_base: str, share: str) -> str:
    return remotefs_brick.RemoteFsClient("nfs", "unused", nfs_mount_point_base=mount_base).get_mount_point(share)


def test_image_to_volume_through_a_mount(cinder_conf, appliance, mount_base, context, rest):
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance, mount_base, executor,
                          nfs_mount_options="timeo=600")
    volume = created_volume(driver, context, size=1)
    images = FileImageService()
    data = image_bytes()
    image_id = images.add(data)
    copied = {}
    mount_point = brick_mount_point(mount_base, volume.provider_location)
    original_umount = executor.__call__

    def capture_before_umount(*command, **kwargs):
        if command[0] == "umount":
            with open(os.path.join(mount_point, volume.name), "rb") as written:
                copied["data"] = written.read()
        return original_umount(*command, **kwargs)

    driver._execute = capture_before_umount
    driver._mounts._execute = capture_before_umount
    driver._mounts._client._execute = capture_before_umount

    driver.copy_image_to_volume(context, volume, images, image_id, disable_sparse=False)

    [mount] = executor.named("mount")
    assert mount[:3] == ("mount", "-t", "nfs")
    options = mount[mount.index("-o") + 1].split(",")
    # The appliance serves v4.2: no nolock, no MOUNT port; the admin's nfs_mount_options come last.
    assert options == ["vers=4.2", "proto=tcp", f"port={appliance.nfs_port}", "timeo=600"]
    assert mount[-2:] == (volume.provider_location, mount_point)
    assert executor.named("umount") == [("umount", mount_point)]
    assert driver.local_path(volume) == os.path.join(mount_point, volume.name)
    assert copied["data"][:len(data)] == data
    share = rest.get_share(volume.provider_id)
    assert share["volume"]["size"] == GIB
    assert share["access"] == []


def test_volume_to_image_through_a_mount(cinder_conf, appliance, mount_base, context, rest):
    data = image_bytes()
    holder = {}
    executor = RecordingExecutor(on_mount=lambda path: open(os.path.join(path, holder["name"]), "wb").write(data))
    driver = mount_driver(cinder_conf, appliance, mount_base, executor)
    volume = with_type(context, created_volume(driver, context, size=1))
    holder["name"] = volume.name
    images = FileImageService()
    image_meta = {"id": str(uuid.uuid4()), "disk_format": "raw", "container_format": "bare"}

    driver.copy_volume_to_image(context, volume, images, image_meta)

    assert images.uploads[image_meta["id"]] == (len(data), hashlib.sha256(data).hexdigest())
    assert len(executor.named("mount")) == 1
    assert len(executor.named("umount")) == 1


def test_mount_is_retried_then_given_up(cinder_conf, appliance, mount_base):
    executor = RecordingExecutor(fail_mounts=2)
    mounts = MountDataPath(mount_base, "vers=3", 3, executor, "unused", retry_delay=0)
    mounts.acquire("127.0.0.1:/shares/a")
    assert len(executor.named("mount")) == 3
    mounts.release("127.0.0.1:/shares/a")

    hopeless = RecordingExecutor(fail_mounts=10)
    mounts = MountDataPath(mount_base, "vers=3", 2, hopeless, "unused", retry_delay=0)
    with pytest.raises(Exception, match="NFS mount failed"):
        mounts.acquire("127.0.0.1:/shares/b")
    assert len(hopeless.named("mount")) == 2
    assert mounts.users("127.0.0.1:/shares/b") == 0


def test_mounts_are_refcounted_per_share(mount_base):
    executor = RecordingExecutor()
    mounts = MountDataPath(mount_base, "vers=3", 1, executor, "unused")
    share = "127.0.0.1:/shares/c"
    with mounts.mounted(share) as first:
        with mounts.mounted(share) as second:
            assert first == second
        assert executor.named("umount") == []
    assert len(executor.named("mount")) == 1
    assert executor.named("umount") == [("umount", first)]


def test_local_attach_export_holds_the_mount_until_remove_export(cinder_conf, appliance, mount_base, context):
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance, mount_base, executor)
    volume = created_volume(driver, context)
    local = {"ip": "127.0.0.1", "host": CINDER_HOST}

    driver.create_export(context, volume, {"ip": "10.0.0.1", "host": "compute-1"})
    assert executor.commands == []  # a Nova attachment mounts nothing here

    driver.create_export(context, volume, local)
    assert len(executor.named("mount")) == 1
    driver.remove_export(context, volume)
    assert len(executor.named("umount")) == 1


def test_control_operations_never_execute_anything(cinder_conf, appliance, mount_base, context):
    executor = RecordingExecutor()
    driver = mount_driver(cinder_conf, appliance, mount_base, executor)
    volume = created_volume(driver, context)
    snapshot = created_snapshot(driver, context, volume)
    from_snapshot = new_volume(context, size=2)
    from_snapshot.update(driver.create_volume_from_snapshot(from_snapshot, snapshot))
    clone = new_volume(context)
    clone.update(driver.create_cloned_volume(clone, volume))
    driver.extend_volume(volume, 2)
    volume.size = 2
    driver.revert_to_snapshot(context, volume, snapshot)
    driver.initialize_connection(volume, {"ip": "10.0.0.9", "host": "compute-3"})
    driver.terminate_connection(volume, {"ip": "10.0.0.9", "host": "compute-3"})
    driver.delete_snapshot(snapshot)
    for doomed in (volume, from_snapshot, clone):
        driver.delete_volume(doomed)

    assert executor.commands == []


def test_auto_data_path_picks_userspace_without_a_kernel_nfs_client(cinder_conf, appliance):
    from acmenfs.cinder.datapath import host_can_mount_nfs

    driver = make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token)
    expected = "mount" if host_can_mount_nfs() else "userspace"
    assert driver._data_path_mode == expected
