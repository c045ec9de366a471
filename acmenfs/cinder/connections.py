"""Exports and connections of the acmenfs Cinder driver (a mixin of ``AcmeNfsDriver``).

Owns: ``initialize_connection`` (an access rule for the connector's IP, read-only
for 'ro' attachments, and Nova's NFS connection info: ``export`` =
``host:/shares/<id>``, which is both the v3 export path and the share's path in
the NFSv4 pseudo file system, and ``options`` = ``-o`` with the NFS version
clients get, see ``nfs_version``), ``terminate_connection`` (the rule goes when
the host's last attachment does; ``connector=None`` removes all but this
host's data-copy rule), and the export calls (nothing to export; a local
attach on a mounting host holds the mount until ``remove_export``).

Must not: mount for Nova (Nova mounts itself). Relies on the driver for
``_require_client``, ``_share_id``/``_find_share``, ``_location_of``, ``_squash``,
``_mounts``, ``_data_path_mode``, ``_export_mounts``, ``_version_choice`` and
``_held_host_access_client``.
"""

from __future__ import annotations

from typing import Any

from oslo_log import log as logging

from cinder import coordination
from cinder import exception
from cinder.volume import volume_utils

from acmenfs.cinder import options
from acmenfs.cinder.appliance_client import ApplianceError, ApplianceNotFound
from acmenfs.cinder.common import backend_error
from acmenfs.cinder.datapath import NfsLocation

LOG = logging.getLogger(__name__)


class ConnectionsMixin:
    """Export and connection calls of the Cinder volume-driver interface."""

    def _mount_options_for_clients(self, location: NfsLocation) -> str:
        """``options`` of the connection info: one ``-o`` (Nova splits it on spaces and mounts
        once; os-brick's connector appends it to each of its own attempts). The version is
        ``nfs_version.VersionChoice.client_version`` (a bare vers=4 in auto mode)."""
        return "-o " + location.mount_options(self._version_choice.client_version,
                                              self.configuration.safe_get("nfs_mount_options"))

    def _mount_point_base(self) -> str:
        return self._mounts.mount_point_base if self._mounts else \
            self.configuration.safe_get("nfs_mount_point_base")

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def initialize_connection(self, volume: Any, connector: dict, initiator_data: Any = None) -> dict:
        """Let the connector's IP mount the share (read-only for 'ro' attachments);
        return Nova's NFS connection info."""
        if not connector or not connector.get("ip"):
            raise exception.InvalidConnectorException(missing="ip")
        access = "ro" if connector.get("mode") == "ro" else "rw"
        try:
            share = self._require_client().add_access(self._share_id(volume), connector["ip"], access=access,
                                                      squash=self._squash)
        except ApplianceError as error:
            raise backend_error(f"granting {connector['ip']} access to volume {volume.id}", error) from error
        location = self._location_of(share)
        return {
            "driver_volume_type": self.driver_volume_type,
            "data": {"export": location.share, "name": volume.name,
                     "options": self._mount_options_for_clients(location),
                     "format": "raw", "access_mode": access},
            "mount_point_base": self._mount_point_base(),
        }

    @staticmethod
    def _attachments_from(volume: Any, client_ip: str) -> int:
        count = 0
        for attachment in volume.volume_attachment or []:
            connector = attachment.connector or {}
            if connector.get("ip") == client_ip and attachment.attach_status != "detached":
                count += 1
        return count

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def terminate_connection(self, volume: Any, connector: dict | None, **kwargs: Any) -> None:
        """Remove the connector's access rule; ``connector=None`` (force detach) removes
        every rule but the one this Cinder host holds for a data copy."""
        share = self._find_share(volume)
        if share is None:
            return
        client = self._require_client()
        if connector is None:
            keep = self._held_host_access_client(share["id"])
            clients = [rule["client"] for rule in share.get("access") or [] if rule["client"] != keep]
        else:
            if not connector.get("ip"):
                raise exception.InvalidConnectorException(missing="ip")
            if self._attachments_from(volume, connector["ip"]) > 1:
                LOG.info("acmenfs: %(ip)s still has another attachment of volume %(id)s; keeping access",
                         {"ip": connector["ip"], "id": volume.id})
                return
            clients = [connector["ip"]]
        try:
            for client_address in clients:
                client.remove_access(share["id"], client_address)
        except ApplianceNotFound:
            return
        except ApplianceError as error:
            raise backend_error(f"removing access to volume {volume.id}", error) from error

    def create_export(self, context: Any, volume: Any, connector: dict | None) -> None:
        """Nothing to export (the share exists); when Cinder attaches locally on a
        mounting host, hold the mount so ``remove_export`` unmounts what os-brick mounted."""
        if (self._data_path_mode == options.DATA_PATH_MOUNT and self._mounts and connector
                and connector.get("host") == volume_utils.extract_host(self.host or "", "host")
                and volume.provider_location and volume.id not in self._export_mounts):
            self._mounts.acquire(volume.provider_location)
            self._export_mounts[volume.id] = volume.provider_location
        return None

    def ensure_export(self, context: Any, volume: Any) -> None:
        return None

    def remove_export(self, context: Any, volume: Any) -> None:
        self._release_export_mount(volume)

    def _release_export_mount(self, volume: Any) -> None:
        share = self._export_mounts.pop(volume.id, None)
        if share and self._mounts:
            self._mounts.release(share)
