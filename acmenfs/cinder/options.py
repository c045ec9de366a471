"""Configuration options of the acmenfs Cinder driver (oslo.config).

Owns: the driver's own options (``acmenfs_*``), the list of Cinder options the
driver reuses as Cinder registered them (``nfs_*``, ``nas_*``), and
``list_opts()`` for oslo-config-generator. Must not read option values: the
driver reads them through its backend ``configuration`` object.

Cinder options reused, not redefined (same ``Opt`` objects, so registering them
again under a backend group never conflicts): ``nfs_sparsed_volumes``,
``nfs_mount_point_base``, ``nfs_mount_options``, ``nfs_mount_attempts`` (from
``cinder.volume.drivers.nfs``), ``nas_secure_file_operations``,
``nas_secure_file_permissions`` (from ``cinder.volume.drivers.remotefs``);
``reserved_percentage`` and ``max_over_subscription_ratio`` come with every
driver (``cinder.volume.driver.volume_opts``).

Authentication is by API token only: the appliance API has no user/password
login, so ``nas_login``/``nas_password`` are not used.
"""

from __future__ import annotations

from oslo_config import cfg

from cinder.volume import configuration
from cinder.volume.drivers import nfs as cinder_nfs
from cinder.volume.drivers import remotefs as cinder_remotefs

DATA_PATH_AUTO = "auto"
DATA_PATH_MOUNT = "mount"
DATA_PATH_USERSPACE = "userspace"

acmenfs_opts = [
    cfg.URIOpt("acmenfs_api_url",
               schemes=["http", "https"],
               help="Base URL of the acmenfs appliance REST API, for example "
                    "https://nas.example.com:8443 (without /v1)."),
    cfg.StrOpt("acmenfs_api_token",
               secret=True,
               help="Bearer token for the appliance REST API (the appliance "
                    "prints one on first start and stores it in "
                    "<data-dir>/admin.token; create more with POST /v1/tokens). "
                    "The API has no user/password login."),
    cfg.BoolOpt("acmenfs_api_verify_tls",
                default=True,
                help="Verify the appliance's TLS certificate for https URLs."),
    cfg.StrOpt("acmenfs_api_ca_file",
               help="CA bundle used to verify the appliance's certificate; "
                    "empty means the system CAs (only when "
                    "acmenfs_api_verify_tls is true)."),
    cfg.FloatOpt("acmenfs_api_timeout",
                 default=60.0,
                 min=1.0,
                 help="Seconds to wait for one REST call to the appliance."),
    cfg.HostAddressOpt("acmenfs_nfs_address",
                       help="NFS address handed to clients (Nova hosts and the "
                            "Cinder host) in provider_location and connection "
                            "info. Empty means the address the appliance "
                            "reports for its NFS service."),
    cfg.StrOpt("acmenfs_data_path",
               default=DATA_PATH_AUTO,
               choices=[
                   (DATA_PATH_AUTO, "mount when this host has a kernel NFS "
                                    "client, user space otherwise"),
                   (DATA_PATH_MOUNT, "mount shares with os-brick's "
                                     "RemoteFsClient (same mount points as "
                                     "Cinder's own)"),
                   (DATA_PATH_USERSPACE, "copy over NFSv3 from user space with "
                                         "acmenfs's own client: no mount"),
               ],
               help="How the Cinder host reads and writes volume data for "
                    "image copies. Control operations (create, delete, "
                    "snapshot, clone, extend, revert) never mount."),
    cfg.StrOpt("acmenfs_volume_owner",
               default="",
               help="Numeric owner UID:GID of the volume files the appliance "
                    "creates (new volumes, clones, managed volumes). Set it "
                    "to the uid:gid qemu runs as on the compute hosts, e.g. "
                    "64055:64055 for libvirt-qemu on Debian/Ubuntu (or a "
                    "group qemu shares), when nas_secure_file_operations is "
                    "true (or auto): Nova hosts then get root-squashed "
                    "access, and a root-owned 0660 file cannot be opened by "
                    "them. cinder-backup then opens volume files as itself "
                    "(secure file operations: no chown as root), so it must "
                    "run as this uid or with this gid. Empty means the "
                    "appliance default, 0:0 (root)."),
    cfg.StrOpt("acmenfs_nfs_version",
               default="auto",
               help="NFS version for mounts of volume shares, on this host "
                    "and in the connection info handed to Nova: auto, 3, "
                    "4.0, 4.1 or 4.2. auto asks the appliance (GET "
                    "/v1/version) at startup: when it serves 4.2 or 4.1, "
                    "this host mounts vers=4.2 (vers=4.1 if 4.2 is refused) "
                    "and Nova gets vers=4, which mount.nfs negotiates to "
                    "the best minor version its kernel has, never v3; "
                    "otherwise (or with an appliance too old to say) v3 "
                    "with nolock. NFSv4 is mounted without nolock, so byte-"
                    "range locks (qemu's image locks) hold across hosts and "
                    "expire with a dead host's lease; NFSv3 locks stay "
                    "local to each host. A version given in "
                    "nfs_mount_options (vers=, nfsvers=, v4.1, "
                    "minorversion=) overrides this option."),
    cfg.IntOpt("acmenfs_userspace_io_depth",
               default=4,
               min=1,
               max=32,
               help="NFS calls in flight (one TCP connection each) for the "
                    "user-space data path."),
]

_REUSED_NFS_OPTION_NAMES = ("nfs_sparsed_volumes", "nfs_mount_point_base",
                            "nfs_mount_options", "nfs_mount_attempts")
_REUSED_NAS_OPTION_NAMES = ("nas_secure_file_operations", "nas_secure_file_permissions")


def _pick(options: list[cfg.Opt], names: tuple[str, ...]) -> list[cfg.Opt]:
    by_name = {option.name: option for option in options}
    return [by_name[name] for name in names]


reused_cinder_opts = (_pick(cinder_nfs.nfs_opts, _REUSED_NFS_OPTION_NAMES)
                      + _pick(cinder_remotefs.nas_opts, _REUSED_NAS_OPTION_NAMES))

cfg.CONF.register_opts(acmenfs_opts, group=configuration.SHARED_CONF_GROUP)


def driver_options() -> list[cfg.Opt]:
    """Every option the driver reads besides the ones all drivers have."""
    return list(acmenfs_opts) + list(reused_cinder_opts)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """oslo-config-generator entry point: the driver's own options.

    The reused Cinder options are listed by Cinder's own generator entry point.
    """
    return [(configuration.SHARED_CONF_GROUP, list(acmenfs_opts))]
