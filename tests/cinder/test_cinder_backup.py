"""Backup and restore under root squash through cinder-backup's real code path.

Real: ``BackupManager.continue_backup`` and ``restore_backup`` with Cinder's posix
backup driver, the VolumeManager answering ``get_backup_device``,
``secure_file_operations_enabled``, ``initialize_connection``,
``terminate_connection`` and ``remove_export`` over (fake-transport) RPC, the
driver, os-brick's RemoteFsConnector and RemoteFsClient (mount point, path),
and the appliance's NFS server deciding what a root-squashed client may do.

Emulated, because this machine has no kernel NFS client: the NFS mount itself.
``RemoteFsClient._do_mount`` copies the volume file into the mount point over
NFS with the identity cinder-backup runs as (the volume owner, see below), and
the disconnect writes changes back the same way; a ``chown`` that cinder-backup
runs as root (``utils.temporary_chown``) on that mount is sent to the appliance
as the kernel would send it, a SETATTR from AUTH_SYS uid 0 through the
connector's rule, and fails as the appliance answers.

The decision under test: with ``nas_secure_file_operations`` (root squash), the
driver reports secure file operations, so cinder-backup opens the volume file
as itself and never chowns it as root; cinder-backup must then run as the
volume owner (``acmenfs_volume_owner``) or in its group (files are 0660).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import uuid

import pytest
from oslo_concurrency import processutils
from oslo_config import cfg
from os_brick.initiator.connectors import remotefs as remotefs_connector
from os_brick.remotefs import remotefs as remotefs_brick

from cinder import context as cinder_context
from cinder import objects
from cinder import utils as cinder_utils
from cinder.backup import manager as backup_manager_module
from cinder.objects import fields
from cinder.volume import volume_utils

from acmenfs.nfs3.client import NFS3_FHSIZE, NfsClient, NfsError, decode_setattr_result
from acmenfs.nfs3.const import NfsProc
from acmenfs.oncrpc.xdr import Packer
from conftest import VolumeService, backend_section, db_volume, require_nfs, volume_file_io

importlib.import_module("cinder.backup.drivers.posix")   # registers the backup_posix_path option

MIB = 1024 ** 2
QEMU = (64055, 64055)
BACKEND = "backup_rs"


def encode_chown_args(fh: bytes, uid: int) -> bytes:
    """SETATTR3args setting only the owner, as ``chown UID path`` on a kernel mount sends."""
    packer = Packer()
    packer.pack_opaque(fh, NFS3_FHSIZE)
    packer.pack_bool(False)  # mode
    packer.pack_bool(True)
    packer.pack_uint(uid)
    packer.pack_bool(False)  # gid
    packer.pack_bool(False)  # size
    packer.pack_enum(0)  # atime: DONT_CHANGE
    packer.pack_enum(0)  # mtime: DONT_CHANGE
    packer.pack_bool(False)  # no guard
    return packer.get_buffer()


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


class EmulatedNfsMounts:
    """os-brick's NFS mounts for cinder-backup, emulated over the appliance's NFS server."""

    def __init__(self, appliance, rest, identity: tuple[int, int]) -> None:
        self.appliance = appliance
        self.rest = rest
        self.uid, self.gid = identity
        self.files: dict[str, tuple[str, str, str]] = {}  # local path -> (export path, file name, digest)
        self.chowns: list[tuple[str, ...]] = []

    def _client(self, uid: int, gid: int) -> NfsClient:
        return NfsClient("127.0.0.1", self.appliance.nfs_port, self.appliance.mount_port, uid=uid, gid=gid)

    def _file_handle(self, client: NfsClient, export_path: str, name: str) -> bytes:
        return client.lookup(client.mount(export_path), name)

    def do_mount(self, mount_type, share, mount_path, mount_options=None, flags=None):
        """RemoteFsClient._do_mount: bring the share's volume file into the mount point."""
        export_path = share.split(":", 1)[1]
        [found] = self.rest.list_shares(export_path=export_path)
        name = found["volume"]["name"]
        local = os.path.join(mount_path, name)
        with self._client(self.uid, self.gid) as client:
            fh = self._file_handle(client, export_path, name)
            attributes = client.getattr(fh)
            with open(local, "wb") as copy:
                client.download(fh, copy, attributes.size, sparse=True)
        os.chown(local, attributes.uid, attributes.gid)
        os.chmod(local, attributes.mode & 0o7777)
        self.files[local] = (export_path, name, file_digest(local))

    def disconnect(self, connection_properties, device_info, force=False, ignore_errors=False):
        """RemoteFsConnector.disconnect_volume: what was written reaches the server (all-zero
        chunks skipped: a restore here goes into a new volume, which reads as zeros)."""
        local = device_info["path"]
        export_path, name, digest = self.files.pop(local)
        if file_digest(local) != digest:
            with self._client(self.uid, self.gid) as client, open(local, "rb") as copy:
                fh = self._file_handle(client, export_path, name)
                client.upload(fh, copy, os.path.getsize(local), skip_zeros=True)
        os.unlink(local)

    def execute(self, original):
        """cinder.utils.execute: ``chown`` on an emulated mount goes to the server as root's."""
        def execute(*command, **kwargs):
            if command and command[0] == "chown" and command[-1] in self.files:
                self.chowns.append(command)
                export_path, name, _ = self.files[command[-1]]
                with self._client(0, 0) as client:
                    fh = self._file_handle(client, export_path, name)
                    try:
                        decode_setattr_result(client._call(NfsProc.SETATTR, encode_chown_args(fh, int(command[1]))))
                    except NfsError as error:
                        raise processutils.ProcessExecutionError(
                            exit_code=1, cmd=" ".join(command),
                            stderr=f"chown: changing ownership of '{command[-1]}': {error}") from error
                os.chown(command[-1], int(command[1]), -1)
                return "", ""
            return original(*command, **kwargs)
        return execute


@pytest.fixture(scope="module")
def volume_service(cinder_conf, appliance):
    require_nfs(appliance)
    backend_section(BACKEND, appliance, acmenfs_volume_owner="%d:%d" % QEMU)
    service = VolumeService(BACKEND, rpc_servers=True)
    yield service
    service.stop()


@pytest.fixture
def mounts(appliance, rest, monkeypatch):
    emulated = EmulatedNfsMounts(appliance, rest, QEMU)
    monkeypatch.setattr(remotefs_brick.RemoteFsClient, "_do_mount",
                        lambda client, *args, **kwargs: emulated.do_mount(*args, **kwargs))
    monkeypatch.setattr(remotefs_connector.RemoteFsConnector, "disconnect_volume",
                        lambda connector, *args, **kwargs: emulated.disconnect(*args, **kwargs))
    monkeypatch.setattr(cinder_utils, "execute", emulated.execute(cinder_utils.execute))
    # The connector cinder-backup sends: this host's address; no initiator probing.
    monkeypatch.setattr(volume_utils, "brick_get_connector_properties",
                        lambda *args, **kwargs: {"ip": "127.0.0.1", "host": "backup-host",
                                                 "platform": "x86_64", "os_type": "linux"})
    return emulated


@pytest.fixture
def backups(tmp_path, volume_service, mounts):
    cfg.CONF.set_override("backup_driver", "cinder.backup.drivers.posix.PosixBackupDriver")
    cfg.CONF.set_override("backup_posix_path", str(tmp_path / "backups"))
    cfg.CONF.set_override("backup_compression_algorithm", "none")  # 1 GiB through zlib: slow, proves nothing
    yield backup_manager_module.BackupManager(host="backup-host")
    for name in ("backup_driver", "backup_posix_path", "backup_compression_algorithm"):
        cfg.CONF.clear_override(name)


def created_volume(manager, ctxt, status: str):
    volume = db_volume(ctxt, size=1, backend=BACKEND)
    manager.create_volume(ctxt, volume)
    volume.refresh()
    volume.update({"status": status, "previous_status": "available"})
    volume.save()
    return volume


def test_backup_and_restore_under_root_squash_never_chown_as_root(volume_service, backups, mounts,
                                                                    appliance, rest):
    ctxt = cinder_context.RequestContext(user_id="user-1", project_id="project-1", is_admin=True)
    manager = volume_service.manager
    source = created_volume(manager, ctxt, "backing-up")
    data = os.urandom(MIB) + bytes(MIB) + os.urandom(4096)
    volume_file_io(appliance, rest, source.provider_id, source.name, data=data)
    backup = objects.Backup(context=ctxt, volume_id=source.id, status=fields.BackupStatus.CREATING,
                            host="backup-host", service=cfg.CONF.backup_driver, size=source.size,
                            user_id=ctxt.user_id, project_id=ctxt.project_id,
                            display_name=f"backup-{uuid.uuid4().hex[:6]}", availability_zone="nova")
    backup.create()

    device = manager.get_backup_device(ctxt, backup, want_objects=True)
    assert device.secure_enabled is True
    backups.continue_backup(ctxt, backup, device)

    backup.refresh()
    source.refresh()
    assert (backup.status, source.status) == (fields.BackupStatus.AVAILABLE, "available")
    assert mounts.chowns == []
    assert rest.get_share(source.provider_id)["access"] == []  # the connection's rule is gone

    target = created_volume(manager, ctxt, "restoring-backup")
    backup.update({"status": fields.BackupStatus.RESTORING})
    backup.save()
    backups.restore_backup(ctxt, backup, target.id, True)

    backup.refresh()
    target.refresh()
    assert (backup.status, target.status) == (fields.BackupStatus.AVAILABLE, "available")
    contents, owner = volume_file_io(appliance, rest, target.provider_id, target.name, length=len(data))
    assert contents == data
    assert owner == QEMU and mounts.chowns == []


def test_root_squashed_chown_is_what_fails(volume_service, mounts, appliance, rest):
    """The emulated mount's chown reaches the appliance and is refused there, as on a kernel mount."""
    ctxt = cinder_context.get_admin_context()
    volume = created_volume(volume_service.manager, ctxt, "available")
    connection = volume_service.manager.initialize_connection(ctxt, volume, {"ip": "127.0.0.1", "host": "h"})
    connector = remotefs_connector.RemoteFsConnector("nfs", None, conn=connection)
    device = connector.connect_volume(connection["data"])
    try:
        with pytest.raises(processutils.ProcessExecutionError, match="chown"):
            with cinder_utils.temporary_chown(device["path"]):
                pass
    finally:
        connector.disconnect_volume(connection["data"], device)
        volume_service.manager.terminate_connection(ctxt, volume.id, {"ip": "127.0.0.1", "host": "h"})
