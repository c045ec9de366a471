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
- The NFS version (``acmenfs_nfs_version``, ``nfs_version``) is chosen once per
  do_setup from the appliance's ``GET /v1/version``: v4.2/4.1 without nolock
  when it serves them, else v3 with nolock; it applies to this host's mounts
  and to the connection info Nova gets.

The class is assembled from mixins by concern: ``snapshots`` (snapshots,
clones, revert), ``connections`` (exports, connection info for Nova) and
``copies`` (image copies, the only code that mounts); this module keeps setup,
share lookup, volumes, stats, manage and migration.
"""

from __future__ import annotations

import threading
from typing import Any

from oslo_log import log as logging

from cinder import coordination
from cinder import exception
from cinder.i18n import _
from cinder import interface
from cinder import utils
from cinder.volume import driver
from cinder.volume import volume_utils

from acmenfs.cinder import manage
from acmenfs.cinder import migration
from acmenfs.cinder import nfs_version
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
from acmenfs.cinder.connections import ConnectionsMixin
from acmenfs.cinder.copies import DataCopyMixin
from acmenfs.cinder.datapath import MountDataPath, NfsLocation, UserspaceDataPath, choose_data_path
from acmenfs.cinder.snapshots import SnapshotsMixin

LOG = logging.getLogger(__name__)

VERSION = "1.0.0"
VENDOR_NAME = "ACME"
FILE_MODE_SECURE = "0660"
FILE_MODE_OPEN = "0666"
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


@interface.volumedriver
class AcmeNfsDriver(SnapshotsMixin, ConnectionsMixin, DataCopyMixin, driver.VolumeDriver):
    """acmenfs appliance: one NFS share per volume, appliance-side snapshots and clones."""

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
        self._appliance_version: dict = {}  # GET /v1/version, asked again by every do_setup
        self._version_choice = nfs_version.choose(nfs_version.AUTO, None, None)  # until do_setup asks

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

    def _check_appliance(self) -> tuple[dict, dict]:
        """API version and token; returns the pool and the ``GET /v1/version`` answer.
        Raises clear Cinder errors."""
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
            return client.pool(), version
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

    def _nfs_version_setting(self) -> str:
        """``acmenfs_nfs_version`` checked (before anything is contacted)."""
        text = self.configuration.safe_get("acmenfs_nfs_version")
        try:
            return nfs_version.parse_setting(text)
        except nfs_version.InvalidNfsVersion as error:
            raise exception.InvalidConfigurationValue(option="acmenfs_nfs_version", value=str(error)) from error

    def _served_nfs_versions(self) -> list[str] | None:
        """What the appliance said it serves at do_setup; None from an appliance too old to say."""
        served = self._appliance_version.get("nfs_versions")
        if not isinstance(served, list):
            return None
        return [str(version) for version in served]

    def _choose_nfs_version(self, setting: str) -> nfs_version.VersionChoice:
        extra = self.configuration.safe_get("nfs_mount_options")
        choice = nfs_version.choose(setting, self._served_nfs_versions(), extra)
        if nfs_version.keeps_locks_local(choice.host_versions[0], extra):
            LOG.warning("acmenfs: nfs_mount_options has nolock on an NFSv4 mount: Linux then keeps "
                        "byte-range locks local to each host, so two hosts can open one volume; "
                        "remove nolock")
        return choice

    def do_setup(self, context: Any) -> None:
        """Check acmenfs_volume_owner and acmenfs_nfs_version, connect to the appliance, check API
        version and token, choose the NFS version from what it serves, pick the data path."""
        self._check_volume_owner()
        setting = self._nfs_version_setting()
        self._client = self._build_client()
        pool, self._appliance_version = self._check_appliance()
        self._pool_nfs = dict(pool.get("nfs") or {})
        self._version_choice = self._choose_nfs_version(setting)
        self._data_path_mode = choose_data_path(self.configuration.safe_get("acmenfs_data_path")
                                                or options.DATA_PATH_AUTO)
        location = self._location_of({"export_path": "/", "nfs": self._pool_nfs})
        extra = self.configuration.safe_get("nfs_mount_options")
        self._mounts = MountDataPath(
            mount_point_base=self.configuration.safe_get("nfs_mount_point_base"),
            mount_options=[location.mount_options(version, extra)
                           for version in self._version_choice.host_versions],
            mount_attempts=self.configuration.safe_get("nfs_mount_attempts") or 1,
            execute=self._execute, root_helper=utils.get_root_helper())
        LOG.info("acmenfs: appliance %(url)s, NFS at %(host)s:%(port)s, data path %(mode)s; "
                 "NFS version: %(why)s; this host mounts with %(host_options)s, clients get %(client_options)s",
                 {"url": self._client.base_url, "host": location.host, "port": location.nfs_port,
                  "mode": self._data_path_mode, "why": self._version_choice.reason,
                  "host_options": " or ".join(self._mounts.option_sets),
                  "client_options": self._mount_options_for_clients(location)})

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
                                      max_over_subscription_ratio=ratio,
                                      total_volumes=stats.backend_volume_count(self.host, self.cluster_name))
        self._stats = stats.backend_stats(pool_stats, backend_name=self._pool_name, vendor_name=VENDOR_NAME,
                                          driver_version=self.VERSION)

    def get_pool(self, volume: Any) -> str:
        return self._pool_name

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
