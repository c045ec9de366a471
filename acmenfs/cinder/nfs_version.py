"""Which NFS version the Cinder driver mounts with, and the mount options that say so.

Owns: checking ``acmenfs_nfs_version`` (auto | 3 | 4.0 | 4.1 | 4.2), turning it and
the appliance's ``nfs_versions`` (``GET /v1/version``) into a ``VersionChoice``,
writing the ``mount -o`` options for one version merged with the operator's
``nfs_mount_options``, and recognising a mount failure that means "this NFS
version is not supported" (the only failure that moves to the next version).
Must not call the appliance or mount anything: the driver asks, ``datapath``
mounts.

Rules:
- auto: an appliance serving 4.2 (or 4.1) is mounted ``vers=4.2`` then, if that
  version is refused, ``vers=4.1`` on the Cinder host; anything else (v3 only,
  or an appliance too old to list ``nfs_versions``) is v3 with ``nolock``.
  NFSv4 is never mounted with ``nolock``: Linux would keep the locks local
  (``nolock`` means ``local_lock=all``), and locks that hold across hosts are
  the point of v4. v3 keeps ``nolock`` because its locks (NLM) need rpc.statd on
  every host and do not expire when a host dies.
- Clients that Cinder hands the connection to (Nova's libvirt NFS volume
  driver, Cinder's own os-brick connector) get ``vers=4`` in auto mode: Nova
  mounts once with no fallback, and mount.nfs (nfs-utils >= 2.1.2) with a bare
  ``vers=4`` negotiates 4.2, then 4.1, then 4.0 against the client's kernel and
  the server, never v3 (older mount.nfs mounts 4.0). So a compute host whose
  kernel lacks 4.2 mounts 4.1 instead of failing the attachment. An explicit ``acmenfs_nfs_version`` is
  handed out exactly (``vers=4.2`` on a host without 4.2 then fails to attach).
- A version option in ``nfs_mount_options`` (``vers=``, ``nfsvers=``, ``v4.1``,
  ``minorversion=``) wins over both: the driver then adds no ``vers=`` of its
  own, mounts with the operator's version only (no fallback), and adds
  ``nolock`` only when that version is not 4. The operator's options always
  come last, so ``lock`` there also overrides the v3 ``nolock``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AUTO = "auto"
SETTINGS = (AUTO, "3", "4.0", "4.1", "4.2")
V4_PREFERENCE = ("4.2", "4.1")  # auto mounts the first the appliance serves, then the rest in order
CLIENT_V4_NEGOTIATED = "4"  # a bare vers=4: mount.nfs negotiates the minor version, never falls to v3

# mount.nfs's words for EPROTONOSUPPORT (server or kernel lacks the version) and for
# EINVAL (a kernel that does not know vers=4.2), which nfs-utils itself treats as a
# hint to try a lower minor version.
_VERSION_REFUSALS = re.compile(
    r"protocol not supported|requested nfs version or transport protocol is not supported"
    r"|incorrect mount option was specified|minor version .*not supported", re.IGNORECASE)


class InvalidNfsVersion(ValueError):
    """``acmenfs_nfs_version`` holds something other than ``SETTINGS``."""


def parse_setting(text: str | None) -> str:
    """``acmenfs_nfs_version`` checked: '' or None mean auto; anything unknown raises."""
    value = (text or AUTO).strip().lower()
    if value in SETTINGS:
        return value
    raise InvalidNfsVersion(f"{text!r} (expected one of: {', '.join(SETTINGS)})")


def _option_tokens(options: str | None) -> list[str]:
    return [token.strip() for token in (options or "").split(",") if token.strip()]


def operator_version(extra: str | None) -> str | None:
    """The NFS version the operator's ``nfs_mount_options`` asks for, if any.

    ``vers=4.1``/``nfsvers=4.1``/``v4.1`` -> "4.1"; ``vers=4,minorversion=1`` ->
    "4.1"; ``minorversion=1`` alone -> "4.1"; the rightmost one counts, as in mount.nfs.
    """
    version = minor = None
    for token in _option_tokens(extra):
        key, _, value = token.partition("=")
        key = key.lower()
        if key in ("vers", "nfsvers") and value:
            version = value
        elif re.fullmatch(r"v\d+(\.\d+)?", key) and not value:
            version = key[1:]
        elif key == "minorversion" and value:
            minor = value
    if minor is not None and version in (None, "4"):
        return f"4.{minor}"
    return version


def _is_v4(version: str) -> bool:
    return version.split(".")[0] == "4"


@dataclass(frozen=True)
class VersionChoice:
    """The outcome for one driver: what the Cinder host tries, what clients get, and why.

    ``host_versions`` are tried in order (the next only when the previous is
    refused); ``None`` in them means "the operator's vers= in nfs_mount_options".
    """

    host_versions: tuple[str | None, ...]
    client_version: str | None
    reason: str


def choose(setting: str, served: list[str] | None, extra: str | None) -> VersionChoice:
    """The versions to mount with (``setting`` already parsed; ``served`` from the
    appliance, None when it does not say)."""
    if operator_version(extra) is not None:
        return VersionChoice((None,), None, f"nfs_mount_options asks for vers={operator_version(extra)}")
    if setting != AUTO:
        return VersionChoice((setting,), setting, f"acmenfs_nfs_version = {setting}")
    if served is None:
        return VersionChoice(("3",), "3", "the appliance does not list its NFS versions (older than "
                                          "nfs_versions): NFSv3")
    offered = tuple(version for version in V4_PREFERENCE if version in served)
    if offered:
        return VersionChoice(offered, CLIENT_V4_NEGOTIATED,
                             f"the appliance serves NFS {', '.join(served)}: v{offered[0]}")
    return VersionChoice(("3",), "3", f"the appliance serves NFS {', '.join(served) or 'nothing'}, "
                                      "no v4.1 or v4.2: NFSv3")


def mount_options(version: str | None, nfs_port: int, mount_port: int, extra: str | None = None) -> str:
    """``mount -o`` options for ``version`` on this server's ports, the operator's
    ``extra`` last. ``None``: the version is in ``extra`` (see ``operator_version``)."""
    effective = version if version is not None else operator_version(extra)
    if effective is not None and _is_v4(effective):
        base = ["proto=tcp", f"port={nfs_port}"]  # v4 uses no MOUNT protocol and no NLM
    else:
        base = ["proto=tcp", "nolock", f"port={nfs_port}", f"mountport={mount_port}"]
    if version is not None:
        base.insert(0, f"vers={version}")
    return ",".join(base + _option_tokens(extra))


def refuses_version(error: BaseException) -> bool:
    """True when a failed mount says the NFS version (not the server, path or access) is the problem."""
    text = " ".join(str(part) for part in (error, getattr(error, "stderr", None)) if part)
    return bool(_VERSION_REFUSALS.search(text))


def keeps_locks_local(version: str | None, extra: str | None) -> bool:
    """An NFSv4 mount the operator forces ``nolock`` on: its locks would not reach other hosts."""
    effective = version if version is not None else operator_version(extra)
    return effective is not None and _is_v4(effective) and "nolock" in _option_tokens(extra)
