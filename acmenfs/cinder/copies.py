"""Image copies of the acmenfs Cinder driver (a mixin of ``AcmeNfsDriver``): the only
code that mounts or speaks NFS.

Owns: this host's temporary access rule for a data copy (refcounted; a rule
that was there before, an attachment here, is left alone), ``local_path``,
``copy_image_to_volume`` and ``copy_volume_to_image`` through os-brick mounts
(``acmenfs_data_path = mount``, with the NFS version of ``nfs_version``) or
over NFS from user space as the volume file's owner (``userspace``).

Must not: mount for control operations. Relies on the driver for
``_require_client``, ``_share``/``_share_id``, ``_location_of``, ``_mounts``,
``_userspace``, ``_data_path_mode``, ``_sparse``, ``_execute_as_root`` and the
host-access lock and table.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, Iterator

from oslo_log import log as logging

from cinder import exception
from cinder.i18n import _
from cinder.image import image_utils
from cinder.volume import volume_utils

from acmenfs.cinder import options
from acmenfs.cinder.appliance_client import ApplianceError
from acmenfs.cinder.common import backend_error, gib_to_bytes
from acmenfs.cinder.datapath import NfsLocation

LOG = logging.getLogger(__name__)


def _local_address_towards(host: str) -> str:
    """The source IP this host uses to reach ``host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 2049))
        return probe.getsockname()[0]


class DataCopyMixin:
    """Image copy calls of the Cinder volume-driver interface, and this host's access for them."""

    def _held_host_access_client(self, share_id: str) -> str | None:
        """The address this host holds an access rule under for a running data copy."""
        with self._host_access_lock:
            entry = self._host_access_users.get(share_id)
        return entry[2] if entry else None

    @contextlib.contextmanager
    def _cinder_host_access(self, share: dict) -> Iterator[NfsLocation]:
        """Grant this host access to the share for a data copy; refcounted, and a
        rule that existed before (an attachment here) is left alone."""
        location = self._location_of(share)
        address = _local_address_towards(location.host)
        client = self._require_client()
        with self._host_access_lock:
            users, added, _ = self._host_access_users.get(share["id"], (0, False, address))
            if users == 0:
                existing = {rule["client"] for rule in share.get("access") or []}
                added = address not in existing
                if added:
                    try:
                        # Temporary and for this trusted host only: no squash, so a
                        # root-owned volume file is writable; I/O still runs as the
                        # file's owner (see UserspaceDataPath).
                        client.add_access(share["id"], address, access="rw", squash="none")
                    except ApplianceError as error:
                        raise backend_error(f"granting this host ({address}) access to share "
                                             f"{share['id']}", error) from error
            self._host_access_users[share["id"]] = (users + 1, added, address)
        try:
            yield location
        finally:
            with self._host_access_lock:
                users, added, _ = self._host_access_users.pop(share["id"])
                if users > 1:
                    self._host_access_users[share["id"]] = (users - 1, added, address)
                elif added:
                    try:
                        client.remove_access(share["id"], address)
                    except ApplianceError as error:
                        LOG.warning("acmenfs: could not remove this host's access to share %(id)s: "
                                    "%(error)s", {"id": share["id"], "error": error})

    @contextlib.contextmanager
    def _mounted_volume(self, volume: Any) -> Iterator[str]:
        share = self._share(volume)
        with self._cinder_host_access(share) as location:
            with self._mounts.mounted(location.share) as mount_point:
                yield os.path.join(mount_point, volume.name)

    def local_path(self, volume: Any) -> str:
        """Where the volume file is when its share is mounted here (os-brick's mount point)."""
        if self._mounts is None or not volume.provider_location:
            raise exception.VolumeDriverException(
                message=_("acmenfs: no local path for volume %s before do_setup/create") % volume.id)
        return os.path.join(self._mounts.mount_point(volume.provider_location), volume.name)

    def copy_image_to_volume(self, context: Any, volume: Any, image_service: Any, image_id: str,
                             disable_sparse: bool = False) -> None:
        blocksize = self.configuration.safe_get("volume_dd_blocksize") or "1M"
        if self._data_path_mode == options.DATA_PATH_MOUNT:
            with self._mounted_volume(volume) as path:
                image_utils.fetch_to_raw(context, image_service, image_id, path, blocksize,
                                         size=volume.size, run_as_root=self._execute_as_root,
                                         disable_sparse=disable_sparse)
            self._grow_volume_file(volume)
            return
        share = self._share(volume)
        with image_utils.temporary_file(prefix=f"acmenfs_image_{image_id}_") as staging:
            image_utils.fetch_to_raw(context, image_service, image_id, staging, blocksize,
                                     size=volume.size, run_as_root=False, disable_sparse=disable_sparse)
            with self._cinder_host_access(share) as location, open(staging, "rb") as source:
                if self._userspace.allocated_bytes(location, volume.name):
                    # Old contents (re-image): zero the file so skipped holes read as zeros.
                    # The appliance grows it back (NFS SETATTR growth counts against quota).
                    self._userspace.truncate(location, volume.name)
                    self._grow_volume_file(volume)
                self._userspace.upload(location, volume.name, source, os.path.getsize(staging),
                                       sparse=self._sparse and not disable_sparse)

    def _grow_volume_file(self, volume: Any) -> None:
        """After a mounted copy (qemu-img writes the image's size), back to the volume size."""
        try:
            self._require_client().put_volume(self._share_id(volume), volume.name,
                                              size=gib_to_bytes(volume.size))
        except ApplianceError as error:
            raise backend_error(f"resizing volume file of {volume.id}", error) from error

    def copy_volume_to_image(self, context: Any, volume: Any, image_service: Any, image_meta: dict) -> None:
        if self._data_path_mode == options.DATA_PATH_MOUNT:
            with self._mounted_volume(volume) as path:
                volume_utils.upload_volume(context, image_service, image_meta, path, volume,
                                           run_as_root=self._execute_as_root)
            return
        share = self._share(volume)
        with image_utils.temporary_file(prefix=f"acmenfs_volume_{volume.id}_") as staging:
            with self._cinder_host_access(share) as location, open(staging, "r+b") as destination:
                self._userspace.download(location, volume.name, destination, sparse=True)
            volume_utils.upload_volume(context, image_service, image_meta, staging, volume,
                                       run_as_root=False)
