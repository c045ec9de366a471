"""OpenStack Cinder volume driver for the acmenfs appliance: one NFS share per volume.

Owns: the translation of Cinder's volume-driver calls into appliance REST calls
(``appliance_client``), the volume's and snapshots' model updates
(``provider_location`` = ``host:/export`` without the file name,
``provider_id`` = share or snapshot uuid), connection info for Nova, access
rules, capacity stats, and the choice of data path for image copies
(``datapath``).

Must not: mount anything for control operations (create, delete, snapshot,
clone, extend, revert are appliance work), keep state the appliance does not
have (it is the source of truth, so several cinder-volume services may run
active-active), or import anything cinder-volume lacks (no fastapi, uvicorn,
prometheus).

Decisions worth knowing:
- A clone is independent of its snapshot on the appliance (reflink/btrfs copy),
  so ``create_cloned_volume`` deletes its temporary snapshot after success too.
- ``revert_to_snapshot`` is one atomic appliance call, so the manager's backup
  snapshot would protect nothing: ``snapshot_revert_use_temp_snapshot`` is False.
- ``nas_secure_file_permissions``: true/auto -> volume files 0660, false -> 0666.
  ``nas_secure_file_operations``: true/auto -> access rules squash root,
  false -> no squash. ("auto" means true: every appliance is a new install.)
- ``acmenfs_volume_owner`` (UID:GID) is the owner of every volume file the
  appliance makes or adopts for Cinder (create, clones, manage_existing). With
  root-squashed Nova hosts a root-owned 0660 file is unreadable to qemu, so
  do_setup warns when secure file operations are on and no owner is set.
- Image copies run as the volume file's owner over NFS from user space when the
  host cannot mount (``acmenfs_data_path``), else through os-brick mounts.
- Backups: cinder-backup mounts the share itself (os-brick), so the driver's
  user-space path cannot serve it. With root squash the driver reports secure
  file operations, so cinder-backup never chowns as root (the appliance refuses
  a squashed root's chown); it must run as acmenfs_volume_owner's uid or group.
- Migration returns only ``_name_id`` and ``provider_location`` (``migration``);
  stats and thin/thick per volume type live in ``stats``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any, Iterator

from oslo_log import log as logging

from cinder import coordination
from cinder import exception
from cinder.i18n import _
from cinder.image import image_utils
from cinder import interface
from cinder import utils
from cinder.volume import driver
from cinder.volume import volume_utils

from acmenfs.cinder import manage
from acmenfs.cinder import migration
from acmenfs.cinder import options
from acmenfs.cinder import stats
from acmenfs.cinder.appliance_client import (
    SUPPORTED_API_VERSION,
    ApplianceAuthError,
    ApplianceClient,
    ApplianceConflict,
    ApplianceError,
    ApplianceNotFound,
    ApplianceUnreachable,
)
from acmenfs.cinder.common import backend_error, bytes_to_gib_rounded_up, gib_to_bytes
from acmenfs.cinder.datapath import MountDataPath, NfsLocation, UserspaceDataPath, choose_data_path

LOG = logging.getLogger(__name__)

VERSION = "1.0.0"
VENDOR_NAME = "ACME"
FILE_MODE_SECURE = "0660"
FILE_MODE_OPEN = "0666"
TEMPORARY_CLONE_SNAPSHOT_PREFIX = "clone-source-"
MAX_OWNER_ID = (1 << 32) - 2  # the appliance's limit (2^32-1 is chown's "unchanged")
VOLUME_OWNER_SYNTAX = f"UID:GID, numbers 0..{MAX_OWNER_ID}, e.g. 64055:64055"


def _setting_is_true(value: str | None) -> bool:
    """nas_secure_* values: 'true' and 'auto' (a new installation) mean secure."""
    return (value or "auto").strip().lower() in ("true", "auto")


def parse_volume_owner(text: str | None) -> tuple[int, int] | None:
    """``acmenfs_volume_owner``: '' -> None (appliance default), 'UID:GID' -> (uid, gid).

    Raises InvalidConfigurationValue naming the option, the value and the syntax.
    """
    if text is None or not text.strip():
        return None
    uid_text, separator, gid_text = text.strip().partition(":")
    if (separator and uid_text.isascii() and uid_text.isdigit() and gid_text.isascii() and gid_text.isdigit()
            and int(uid_text) <= MAX_OWNER_ID and int(gid_text) <= MAX_OWNER_ID):
        return int(uid_text), int(gid_text)
    raise exception.InvalidConfigurationValue(
        option="acmenfs_volume_owner", value=f"{text} (expected {VOLUME_OWNER_SYNTAX})")


def _export_path_of(provider_location: str | None) -> str | None:
    """``/shares/<id>`` of ``host:/shares/<id>`` (``[v6]:/...`` too); None without one."""
    if not provider_location or ":/" not in provider_location:
        return None
    return "/" + provider_location.split(":/", 1)[1]


def _local_address_towards(host: str) -> str:
    """The source IP this host uses to reach ``host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 2049))
        return probe.getsockname()[0]


@interface.volumedriver
class AcmeNfsDriver(driver.VolumeDriver):
    """acmenfs appliance: one NFSv3 share per volume, appliance-side snapshots and clones."""

    VERSION = VERSION
    CI_WIKI_NAME = "ACME_acmenfs_CI"
    SUPPORTS_ACTIVE_ACTIVE = True

    driver_volume_type = "nfs"
    driver_prefix = "acmenfs"
    volume_backend_name = "acmenfs"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(options.acmenfs_opts)
        self.configuration.append_config_values(options.reused_cinder_opts)
        self._client: ApplianceClient | None = None
        self._pool_nfs: dict = {}
        self._data_path_mode = options.DATA_PATH_USERSPACE
        self._mounts: MountDataPath | None = None
        self._userspace = UserspaceDataPath(
            io_depth=self.configuration.safe_get("acmenfs_userspace_io_depth") or 4,
            timeout=self.configuration.safe_get("acmenfs_api_timeout") or 60.0)
        self._host_access_lock = threading.Lock()
        self._host_access_users: dict[str, tuple[int, bool, str]] = {}
        self._export_mounts: dict[str, str] = {}
        self._volume_owner: tuple[int, int] | None = None

    @staticmethod
    def get_driver_options() -> list:
        return options.driver_options()

    # ------------------------------------------------------------------
    # configuration and setup
    # ------------------------------------------------------------------
    @property
    def _sparse(self) -> bool:
        return bool(self.configuration.safe_get("nfs_sparsed_volumes"))

    @property
    def _file_mode(self) -> str:
        secure = _setting_is_true(self.configuration.safe_get("nas_secure_file_permissions"))
        return FILE_MODE_SECURE if secure else FILE_MODE_OPEN

    @property
    def _squash(self) -> str:
        secure = _setting_is_true(self.configuration.safe_get("nas_secure_file_operations"))
        return "root" if secure else "none"

    def secure_file_operations_enabled(self) -> bool:
        """True with root-squashed exports (``nas_secure_file_operations`` true/auto),
        as in Cinder's RemoteFS drivers: cinder-backup then opens volume files as
        itself instead of running ``chown`` as root through an export that squashes
        root (``utils.temporary_chown``, which the appliance refuses). cinder-backup
        must then run as ``acmenfs_volume_owner``'s uid, or with its gid (0660)."""
        return self._squash == "root"

    @property
    def _execute_as_root(self) -> bool:
        """As in Cinder's NFS driver: secure file operations mean no root for file work."""
        return self._squash == "none"

    @property
    def _pool_name(self) -> str:
        return self.configuration.safe_get("volume_backend_name") or self.volume_backend_name

    def _build_client(self) -> ApplianceClient:
        url = self.configuration.safe_get("acmenfs_api_url")
        token = self.configuration.safe_get("acmenfs_api_token")
        if not url:
            raise exception.InvalidConfigurationValue(option="acmenfs_api_url", value=url)
        if not token:
            raise exception.InvalidConfigurationValue(option="acmenfs_api_token", value="<empty>")
        verify: bool | str = bool(self.configuration.safe_get("acmenfs_api_verify_tls"))
        ca_file = self.configuration.safe_get("acmenfs_api_ca_file")
        if verify and ca_file:
            verify = ca_file
        try:
            return ApplianceClient(str(url), token, verify=verify,
                                   timeout=self.configuration.safe_get("acmenfs_api_timeout") or 60.0)
        except ApplianceError as error:
            raise exception.InvalidConfigurationValue(option="acmenfs_api_url", value=url) from error

    def _check_appliance(self) -> dict:
        """API version and token; returns the pool. Raises clear Cinder errors."""
        client = self._require_client()
        url = client.base_url
        try:
            version = client.version()
        except ApplianceUnreachable as error:
            raise exception.VolumeBackendAPIException(
                data=_("acmenfs: cannot reach the appliance at %(url)s (acmenfs_api_url): %(error)s")
                % {"url": url, "error": error}) from error
        except ApplianceError as error:
            raise exception.VolumeBackendAPIException(
                data=_("acmenfs: %(url)s does not answer like an acmenfs appliance "
                       "(check acmenfs_api_url): %(error)s") % {"url": url, "error": error}) from error
        api_version = version.get("api_version") if isinstance(version, dict) else None
        if api_version != SUPPORTED_API_VERSION:
            raise exception.VolumeBackendAPIException(
                data=_("acmenfs: appliance at %(url)s speaks API version %(found)s, "
                       "this driver needs %(needed)s") % {"url": url, "found": api_version,
                                                          "needed": SUPPORTED_API_VERSION})
        try:
            return client.pool()
        except ApplianceAuthError as error:
            raise exception.VolumeBackendAPIException(
                data=_("acmenfs: the appliance at %(url)s refused the API token "
                       "(check acmenfs_api_token): %(error)s") % {"url": url, "error": error}) from error
        except ApplianceError as error:
            raise backend_error("reading the pool", error) from error

    def _check_volume_owner(self) -> None:
        """Parse acmenfs_volume_owner; warn when root-squashed Nova hosts could not open root's files."""
        self._volume_owner = parse_volume_owner(self.configuration.safe_get("acmenfs_volume_owner"))
        if self._volume_owner is not None or self._squash != "root":
            return
        if self._file_mode == FILE_MODE_SECURE:
            consequence = ("qemu on root-squashed Nova hosts will not be able to open them and "
                           "attaching volumes will fail")
        else:
            consequence = ("they open only because nas_secure_file_permissions makes them "
                           "world-writable (0666)")
        LOG.warning("acmenfs: nas_secure_file_operations is on (Nova hosts get root-squashed "
                    "access) but acmenfs_volume_owner is not set, so volume files are owned by "
                    "root (0:0) with mode %(mode)s: %(consequence)s. Set acmenfs_volume_owner "
                    "to the uid:gid qemu runs as (e.g. 64055:64055 for libvirt-qemu on "
                    "Debian/Ubuntu); cinder-backup, which opens volume files as itself under "
                    "secure file operations, must run as that uid or with that gid.",
                    {"mode": self._file_mode, "consequence": consequence})

    def _owner_fields(self, prefix: str = "") -> dict[str, int]:
        """The configured owner as request fields (``uid``/``gid`` or ``volume_uid``/...); {} if none."""
        if self._volume_owner is None:
            return {}
        uid, gid = self._volume_owner
        return {f"{prefix}uid": uid, f"{prefix}gid": gid}

    def do_setup(self, context: Any) -> None:
        """Check acmenfs_volume_owner, connect to the appliance, check API version and token, pick the data path."""
        self._check_volume_owner()
        self._client = self._build_client()
        pool = self._check_appliance()
        self._pool_nfs = dict(pool.get("nfs") or {})
        self._data_path_mode = choose_data_path(self.configuration.safe_get("acmenfs_data_path")
                                                or options.DATA_PATH_AUTO)
        location = self._location_of({"export_path": "/", "nfs": self._pool_nfs})
        self._mounts = MountDataPath(
            mount_point_base=self.configuration.safe_get("nfs_mount_point_base"),
            mount_options=location.mount_options(self.configuration.safe_get("nfs_mount_options")),
            mount_attempts=self.configuration.safe_get("nfs_mount_attempts") or 1,
            execute=self._execute, root_helper=utils.get_root_helper())
        LOG.info("acmenfs: appliance %(url)s, NFS at %(host)s:%(port)s, data path %(mode)s",
                 {"url": self._client.base_url, "host": location.host, "port": location.nfs_port,
                  "mode": self._data_path_mode})

    def check_for_setup_error(self) -> None:
        self._check_appliance()

    def _require_client(self) -> ApplianceClient:
        if self._client is None:
            raise exception.VolumeDriverException(message=_("acmenfs: driver used before do_setup()"))
        return self._client

    # ------------------------------------------------------------------
    # shares and locations
    # ------------------------------------------------------------------
    def _location_of(self, share: dict) -> NfsLocation:
        nfs = share.get("nfs") or self._pool_nfs
        host = self.configuration.safe_get("acmenfs_nfs_address") or nfs.get("host")
        if not host:
            raise exception.VolumeBackendAPIException(
                data=_("acmenfs: appliance reports no NFS address; set acmenfs_nfs_address"))
        return NfsLocation(host=host, export_path=share["export_path"],
                           nfs_port=int(nfs.get("port") or 2049),
                           mount_port=int(nfs.get("mount_port") or 20048))

    def _model_update(self, share: dict) -> dict:
        return {"provider_location": self._location_of(share).share, "provider_id": share["id"]}

    def _find_share(self, volume: Any) -> dict | None:
        """The volume's share by provider_id, else by the export path in
        provider_location, else by name; None when gone."""
        client = self._require_client()
        try:
            if volume.provider_id:
                return client.get_share(volume.provider_id)
            export_path = _export_path_of(volume.provider_location)
            matches = (client.list_shares(export_path=export_path) if export_path
                       else client.list_shares(name=volume.name))
        except ApplianceNotFound:
            return None
        except ApplianceError as error:
            raise backend_error(f"looking up the share of volume {volume.id}", error) from error
        return matches[0] if matches else None

    def _share(self, volume: Any) -> dict:
        share = self._find_share(volume)
        if share is None:
            raise exception.VolumeBackendAPIException(
                data=_("acmenfs: volume %(id)s has no share on the appliance (provider_id %(pid)s)")
                % {"id": volume.id, "pid": volume.provider_id})
        return share

    def _share_id(self, volume: Any) -> str:
        """The volume's share uuid without a round trip when provider_id is known."""
        return volume.provider_id or self._share(volume)["id"]

    def _volume_file_spec(self, volume: Any) -> dict:
        return {"name": volume.name, "sparse": stats.volume_is_sparse(volume, self._sparse),
                "mode": self._file_mode, **self._owner_fields()}

    # ------------------------------------------------------------------
    # volumes
    # ------------------------------------------------------------------
    def create_volume(self, volume: Any) -> dict:
        client = self._require_client()
        try:
            share = client.create_share(volume.name, gib_to_bytes(volume.size),
                                        volume=self._volume_file_spec(volume))
        except ApplianceError as error:
            raise backend_error(f"creating the share of volume {volume.id}", error) from error
        LOG.info("acmenfs: volume %(id)s is share %(share)s", {"id": volume.id, "share": share["id"]})
        return self._model_update(share)

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def delete_volume(self, volume: Any) -> None:
        """Remove the share; its (stray) snapshots first. Already gone is success."""
        client = self._require_client()
        share = self._find_share(volume)
        if share is None:
            LOG.info("acmenfs: volume %s has no share; nothing to delete", volume.id)
            return
        self._release_export_mount(volume)
        try:
            for snapshot in client.list_snapshots(share["id"]):
                self._delete_appliance_snapshot(snapshot["id"])
            client.delete_share(share["id"])
        except ApplianceNotFound:
            return
        except ApplianceConflict as error:
            if error.code in ("share_busy", "share_has_snapshots"):
                raise exception.VolumeIsBusy(
                    message=_("acmenfs: volume %(id)s is busy on the appliance: %(error)s")
                    % {"id": volume.id, "error": error}, volume_name=volume.name) from error
            raise backend_error(f"deleting volume {volume.id}", error) from error
        except ApplianceError as error:
            raise backend_error(f"deleting volume {volume.id}", error) from error

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def extend_volume(self, volume: Any, new_size: int) -> None:
        """Grow share and volume file; fine while attached (the file only grows)."""
        client = self._require_client()
        try:
            client.extend_share(self._share_id(volume), gib_to_bytes(new_size))
        except ApplianceError as error:
            raise backend_error(f"extending volume {volume.id} to {new_size} GiB", error) from error

    # ------------------------------------------------------------------
    # snapshots and clones
    # ------------------------------------------------------------------
    def _create_appliance_snapshot(self, share_id: str, name: str) -> dict:
        """Create, or adopt a same-named snapshot left by an interrupted attempt."""
        client = self._require_client()
        try:
            return client.create_snapshot(share_id, name)
        except ApplianceConflict as error:
            if error.code != "name_conflict":
                raise
            for existing in client.list_snapshots(share_id):
                if existing["name"] == name:
                    return existing
            raise

    def _delete_appliance_snapshot(self, snapshot_id: str) -> None:
        try:
            self._require_client().delete_snapshot(snapshot_id)
        except ApplianceNotFound:
            LOG.info("acmenfs: snapshot %s already gone", snapshot_id)

    @coordination.synchronized("acmenfs-volume-{snapshot.volume_id}")
    def create_snapshot(self, snapshot: Any) -> dict:
        try:
            created = self._create_appliance_snapshot(self._share_id(snapshot.volume), snapshot.name)
        except ApplianceError as error:
            raise backend_error(f"creating snapshot {snapshot.id}", error) from error
        return {"provider_id": created["id"]}

    def _appliance_snapshot_id(self, snapshot: Any) -> str | None:
        if snapshot.provider_id:
            return snapshot.provider_id
        share = self._find_share(snapshot.volume)
        if share is None:
            return None
        for existing in self._require_client().list_snapshots(share["id"]):
            if existing["name"] == snapshot.name:
                return existing["id"]
        return None

    @coordination.synchronized("acmenfs-volume-{snapshot.volume_id}")
    def delete_snapshot(self, snapshot: Any) -> None:
        try:
            snapshot_id = self._appliance_snapshot_id(snapshot)
            if snapshot_id is None:
                LOG.info("acmenfs: snapshot %s not on the appliance; nothing to delete", snapshot.id)
                return
            self._delete_appliance_snapshot(snapshot_id)
        except ApplianceConflict as error:
            raise exception.SnapshotIsBusy(snapshot_name=snapshot.name) from error
        except ApplianceError as error:
            raise backend_error(f"deleting snapshot {snapshot.id}", error) from error

    def _clone(self, snapshot_id: str, volume: Any) -> dict:
        """Appliance clone of a snapshot into the new volume's share (renamed, grown, chowned when configured)."""
        try:
            share = self._require_client().clone_snapshot(
                snapshot_id, volume.name, size=gib_to_bytes(volume.size), volume_name=volume.name,
                **self._owner_fields("volume_"))
        except ApplianceError as error:
            raise backend_error(f"cloning snapshot {snapshot_id} into volume {volume.id}", error) from error
        return self._model_update(share)

    @coordination.synchronized("acmenfs-volume-{snapshot.volume_id}")
    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> dict:
        snapshot_id = self._appliance_snapshot_id(snapshot)
        if snapshot_id is None:
            raise exception.SnapshotNotFound(snapshot_id=snapshot.id)
        return self._clone(snapshot_id, volume)

    @coordination.synchronized("acmenfs-volume-{src_vref.id}")
    def create_cloned_volume(self, volume: Any, src_vref: Any) -> dict:
        """Temporary snapshot of the source, clone it, then drop the snapshot.

        The clone does not depend on its snapshot on this appliance, so the
        snapshot goes away after success as well as after failure.
        """
        try:
            temporary = self._create_appliance_snapshot(
                self._share_id(src_vref), f"{TEMPORARY_CLONE_SNAPSHOT_PREFIX}{volume.id}")
        except ApplianceError as error:
            raise backend_error(f"snapshotting volume {src_vref.id} for a clone", error) from error
        try:
            return self._clone(temporary["id"], volume)
        finally:
            try:
                self._delete_appliance_snapshot(temporary["id"])
            except ApplianceError as error:
                LOG.warning("acmenfs: could not delete temporary snapshot %(snap)s of volume "
                            "%(vol)s: %(error)s", {"snap": temporary["id"], "vol": src_vref.id,
                                                   "error": error})

    def snapshot_revert_use_temp_snapshot(self) -> bool:
        return False

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def revert_to_snapshot(self, context: Any, volume: Any, snapshot: Any) -> None:
        """Appliance revert, then the volume's own file name, owner and size back."""
        client = self._require_client()
        snapshot_id = self._appliance_snapshot_id(snapshot)
        if snapshot_id is None:
            raise exception.SnapshotNotFound(snapshot_id=snapshot.id)
        try:
            share = client.revert_share(self._share_id(volume), snapshot_id)
            share = self._restore_volume_file_name(share, volume)
            wanted = gib_to_bytes(volume.size)
            if (share.get("volume") or {}).get("size", wanted) < wanted or share.get("size", wanted) < wanted:
                client.extend_share(share["id"], wanted)
        except ApplianceError as error:
            raise backend_error(f"reverting volume {volume.id} to snapshot {snapshot.id}", error) from error

    def _restore_volume_file_name(self, share: dict, volume: Any) -> dict:
        """A revert brings back the snapshot's file name (``disk.img`` for a snapshot
        taken before manage_existing renamed it) and owner: rename to the name Nova
        opens, and chown to acmenfs_volume_owner when set."""
        reverted = share.get("volume")
        owner = self._owner_fields()
        if not reverted:
            LOG.warning("acmenfs: snapshot reverted into volume %s holds no volume file", volume.id)
            return share
        if reverted.get("name") == volume.name and all(reverted.get(key) == value for key, value in owner.items()):
            return share
        LOG.info("acmenfs: revert of volume %(id)s brought back file %(old)s; renaming it to %(new)s",
                 {"id": volume.id, "old": reverted.get("name"), "new": volume.name})
        return self._require_client().put_volume(share["id"], volume.name, **owner)

    # ------------------------------------------------------------------
    # exports and connections
    # ------------------------------------------------------------------
    def _mount_options_for_clients(self, location: NfsLocation) -> str:
        return "-o " + location.mount_options(self.configuration.safe_get("nfs_mount_options"))

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

    # ------------------------------------------------------------------
    # stats
    # ------------------------------------------------------------------
    def _update_volume_stats(self) -> None:
        try:
            pool = self._require_client().pool()
        except ApplianceError as error:
            raise backend_error("reading pool capacity", error) from error
        ratio = volume_utils.get_max_over_subscription_ratio(
            self.configuration.safe_get("max_over_subscription_ratio"), supports_auto=True)
        pool_stats = stats.pool_stats(pool, pool_name=self._pool_name, sparse_default=self._sparse,
                                      reserved_percentage=self.configuration.safe_get("reserved_percentage") or 0,
                                      max_over_subscription_ratio=ratio)
        self._stats = stats.backend_stats(pool_stats, backend_name=self._pool_name, vendor_name=VENDOR_NAME,
                                          driver_version=self.VERSION)

    def get_pool(self, volume: Any) -> str:
        return self._pool_name

    # ------------------------------------------------------------------
    # data copies (the only code that mounts or speaks NFS)
    # ------------------------------------------------------------------
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

    # ------------------------------------------------------------------
    # manage / unmanage
    # ------------------------------------------------------------------
    def manage_existing_get_size(self, volume: Any, existing_ref: dict) -> int:
        _, volume_file = manage.managed_volume_file(self._require_client(), existing_ref)
        return bytes_to_gib_rounded_up(volume_file["size"])

    @coordination.synchronized("acmenfs-volume-{volume.id}")
    def manage_existing(self, volume: Any, existing_ref: dict) -> dict:
        """Adopt a share (see ``manage.adopt``)."""
        return self._model_update(manage.adopt(self._require_client(), volume, existing_ref,
                                               self._owner_fields()))

    def unmanage(self, volume: Any) -> None:
        """Cinder forgets the volume; the share and its file stay as they are."""
        LOG.info("acmenfs: volume %(id)s unmanaged; share %(share)s left on the appliance",
                 {"id": volume.id, "share": volume.provider_id})

    def get_manageable_volumes(self, cinder_volumes: list, marker: Any, limit: Any, offset: Any,
                               sort_keys: Any, sort_dirs: Any) -> list:
        entries = manage.manageable_volumes(self._require_client(), cinder_volumes)
        return volume_utils.paginate_entries_list(entries, marker, limit, offset, sort_keys, sort_dirs)

    def _snapshot_by_reference(self, snapshot: Any, existing_ref: dict) -> dict:
        return manage.snapshot_by_reference(self._require_client(), self._share(snapshot.volume)["id"],
                                            existing_ref)

    def manage_existing_snapshot(self, snapshot: Any, existing_ref: dict) -> dict:
        return {"provider_id": self._snapshot_by_reference(snapshot, existing_ref)["id"]}

    def manage_existing_snapshot_get_size(self, snapshot: Any, existing_ref: dict) -> int:
        found = self._snapshot_by_reference(snapshot, existing_ref)
        return bytes_to_gib_rounded_up(found.get("size") or gib_to_bytes(snapshot.volume.size))

    def unmanage_snapshot(self, snapshot: Any) -> None:
        LOG.info("acmenfs: snapshot %s unmanaged; left on the appliance", snapshot.id)

    def get_manageable_snapshots(self, cinder_snapshots: list, marker: Any, limit: Any, offset: Any,
                                 sort_keys: Any, sort_dirs: Any) -> list:
        entries = manage.manageable_snapshots(self._require_client(), cinder_snapshots)
        return volume_utils.paginate_entries_list(entries, marker, limit, offset, sort_keys, sort_dirs)

    # ------------------------------------------------------------------
    # migration
    # ------------------------------------------------------------------
    def update_migrated_volume(self, context: Any, volume: Any, new_volume: Any,
                               original_volume_status: str) -> dict:
        """``_name_id`` and ``provider_location`` only (see ``migration``)."""
        return migration.migrated_volume_update(self._require_client(), self._share, volume, new_volume,
                                                original_volume_status, self._owner_fields())
