"""Appliance value objects and request validation.

Owns the frozen dataclasses the service hands out (``Share``, ``Snapshot``,
``VolumeFile``, ``AccessRule``, ``PoolStats``, ``NfsEndpoint``, ``Token``), their
``to_dict()`` JSON shapes (exactly those of docs/rest-api.md), and the validators
for names, sizes, volume modes, volume owners (uid/gid) and access rules. It must
not do I/O or hold state.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from acmenfs.appliance.errors import InvalidRequest

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_SIZE = 1 << 50  # 1 PiB: far above any pool here, low enough to catch unit mistakes
VOLUME_MODES = {"0660": 0o660, "660": 0o660, "0666": 0o666, "666": 0o666}
MAX_OWNER_ID = (1 << 32) - 2  # uid/gid 2^32-1 is (uid_t)-1, "leave unchanged" to chown(2)
ACCESS_LEVELS = ("rw", "ro")
SQUASH_KINDS = ("root", "all", "none")

STATE_CREATING = "creating"
STATE_AVAILABLE = "available"
STATE_DELETING = "deleting"
STATE_ERROR = "error"


def utc_now_text() -> str:
    """The current time as an RFC 3339 UTC string with microseconds."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_name(name: object, field: str = "name") -> str:
    """A share, snapshot, volume or token name: 1-128 of [A-Za-z0-9._-], no leading '.'."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise InvalidRequest(
            f"{field} must be 1-128 characters of A-Z a-z 0-9 . _ - and must not start with '.': {name!r}",
            "invalid_name",
        )
    return name


def validate_size(size: object, field: str = "size") -> int:
    """A size in bytes: an integer in 1 .. 1 PiB."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidRequest(f"{field} must be an integer number of bytes: {size!r}", "invalid_size")
    if size <= 0 or size > MAX_SIZE:
        raise InvalidRequest(f"{field} must be between 1 and {MAX_SIZE} bytes: {size}", "invalid_size")
    return size


def parse_volume_mode(mode: object) -> int:
    """'0660' or '0666' (leading zero optional) -> the permission bits."""
    if isinstance(mode, str) and mode in VOLUME_MODES:
        return VOLUME_MODES[mode]
    raise InvalidRequest(f"volume mode must be '0660' or '0666': {mode!r}", "invalid_request")


def validate_owner_id(value: object, field: str) -> int | None:
    """A volume file's uid or gid: None (not given) or an integer in 0 .. 2^32-2."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OWNER_ID:
        raise InvalidRequest(f"{field} must be an integer between 0 and {MAX_OWNER_ID}: {value!r}", "invalid_request")
    return value


def format_volume_mode(mode: int) -> str:
    return f"{mode:04o}"


def _validate_client(client: object) -> str:
    if client == "*":
        return "*"
    if not isinstance(client, str) or not client:
        raise InvalidRequest(f"access client must be an IP address, a CIDR or '*': {client!r}", "invalid_access")
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError as exc:
        raise InvalidRequest(
            f"access client must be an IP address, a CIDR or '*': {client!r}", "invalid_access"
        ) from exc
    return str(network) if "/" in client else str(network.network_address)


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Who may mount a share: a host IP, a CIDR or '*', read-write or read-only, with a squash."""

    client: str
    access: str = "rw"
    squash: str = "root"

    def __post_init__(self) -> None:
        object.__setattr__(self, "client", _validate_client(self.client))
        if self.access not in ACCESS_LEVELS:
            raise InvalidRequest(f"access must be 'rw' or 'ro': {self.access!r}", "invalid_access")
        if self.squash not in SQUASH_KINDS:
            raise InvalidRequest(f"squash must be 'root', 'all' or 'none': {self.squash!r}", "invalid_access")

    def to_dict(self) -> dict[str, str]:
        return {"client": self.client, "access": self.access, "squash": self.squash}


@dataclass(frozen=True, slots=True)
class NfsEndpoint:
    """Where NFS clients reach the appliance's NFS and MOUNT programs."""

    host: str
    port: int
    mount_port: int

    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "mount_port": self.mount_port}


@dataclass(frozen=True, slots=True)
class VolumeFile:
    """The one volume file a share may hold (made by the appliance).

    ``mode``, ``allocated_bytes``, ``uid`` and ``gid`` come from a stat of the
    file itself, so they always tell the truth about what NFS clients see.
    """

    name: str
    size: int
    sparse: bool
    mode: int
    allocated_bytes: int
    uid: int = 0
    gid: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sparse": self.sparse,
            "mode": format_volume_mode(self.mode),
            "allocated_bytes": self.allocated_bytes,
            "uid": self.uid,
            "gid": self.gid,
        }


@dataclass(frozen=True, slots=True)
class Share:
    """A directory exported over NFS at ``export_path`` with a quota of ``size`` bytes."""

    id: str
    name: str
    size: int
    state: str
    export_path: str
    created_at: str
    origin_snapshot_id: str | None
    used_bytes: int
    access: tuple[AccessRule, ...]
    volume: VolumeFile | None

    def to_dict(self, nfs: NfsEndpoint) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "state": self.state,
            "export_path": self.export_path,
            "created_at": self.created_at,
            "origin_snapshot_id": self.origin_snapshot_id,
            "used_bytes": self.used_bytes,
            "access": [rule.to_dict() for rule in self.access],
            "volume": self.volume.to_dict() if self.volume else None,
            "nfs": {
                "host": nfs.host,
                "port": nfs.port,
                "mount_port": nfs.mount_port,
                "location": f"{nfs.host}:{self.export_path}",
                "url": (
                    f"nfs://{nfs.url_host()}{self.export_path}"
                    f"?version=3&nfsport={nfs.port}&mountport={nfs.mount_port}"
                ),
            },
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A read-only point-in-time copy of a share, exported read-only at ``path``.

    ``size`` is the share's size (quota) when the snapshot was taken, which is
    the size a clone of it gets by default; ``path`` is the NFS export path
    ``/snapshots/<snapshot-id>`` (the share's clients, forced to read-only).
    """

    id: str
    share_id: str
    name: str
    created_at: str
    size: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "share_id": self.share_id,
            "name": self.name,
            "created_at": self.created_at,
            "size": self.size,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Capacity of the data dir's file system plus what the store has provisioned."""

    backend: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    provisioned_bytes: int
    share_count: int
    snapshot_count: int

    def to_dict(self, nfs: NfsEndpoint | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "backend": self.backend,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "used_bytes": self.used_bytes,
            "provisioned_bytes": self.provisioned_bytes,
            "share_count": self.share_count,
            "snapshot_count": self.snapshot_count,
        }
        if nfs is not None:
            answer["nfs"] = nfs.to_dict()
        return answer


@dataclass(frozen=True, slots=True)
class Token:
    """An API token (the secret itself is never kept, only its sha256)."""

    id: str
    name: str
    created_at: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "created_at": self.created_at}
