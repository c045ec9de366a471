"""How the Cinder host reaches volume data: kernel mounts or user-space NFS.

Owns: ``MountDataPath`` (mounts through os-brick's ``RemoteFsClient`` so mount
points are the ones Cinder's own code computes, refcounted per share, with
retries, unmounted when the last user lets go) and ``UserspaceDataPath``
(copies between a local file and a volume file over NFSv3 with
``acmenfs.nfs3.client``: no mount, no root, no kernel NFS client), plus
``choose_data_path`` for ``acmenfs_data_path = auto``.

Must not: call the appliance REST API (the driver grants access before using a
data path), import anything cinder-volume lacks, or mount for control
operations (create, delete, snapshot, clone, extend, revert never come here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Sequence

from oslo_concurrency import processutils
from oslo_log import log as logging
from os_brick.remotefs import remotefs as remotefs_brick

from acmenfs.cinder import nfs_version
from acmenfs.nfs3.client import Fattr, NfsClient, NfsError, is_regular_file

LOG = logging.getLogger(__name__)



@dataclass(frozen=True)
class NfsLocation:
    """Where a share is served: what ``mount`` and our NFS client need."""

    host: str
    export_path: str
    nfs_port: int
    mount_port: int

    @property
    def share(self) -> str:
        """``host:/export`` as in provider_location (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.export_path}"

    def mount_options(self, version: str | None, extra: str | None = None) -> str:
        """Options for NFS ``version`` on this server's ports (``nfs_version.mount_options``);
        ``extra`` (the operator's) come last and win."""
        return nfs_version.mount_options(version, self.nfs_port, self.mount_port, extra)


def host_can_mount_nfs(proc_filesystems: str = "/proc/filesystems") -> bool:
    """A kernel NFS client is loaded (or loadable) and mount.nfs is installed."""
    if not (shutil.which("mount.nfs") or os.path.exists("/sbin/mount.nfs")
            or os.path.exists("/usr/sbin/mount.nfs")):
        return False
    try:
        with open(proc_filesystems, encoding="ascii") as listing:
            if any(line.split()[-1:] == ["nfs"] for line in listing):
                return True
    except OSError:
        return False
    release = os.uname().release
    return os.path.isdir(f"/lib/modules/{release}/kernel/fs/nfs")


class MountDataPath:
    """Refcounted kernel NFS mounts at os-brick's mount points.

    ``mount_options`` is one ``-o`` string or several in preference order (NFS
    4.2, then 4.1): a mount refused for its version (``nfs_version.refuses_version``)
    moves to the next for good, without using up a retry; other failures are
    retried ``mount_attempts`` times. Each option string carries its ``vers=``,
    so os-brick's own version loop (``RemoteFsClient._mount_nfs``) makes exactly
    one attempt with it. ``execute`` is Cinder's executor (root helper applied);
    tests pass a recording fake.
    """

    def __init__(self, mount_point_base: str, mount_options: str | Sequence[str], mount_attempts: int,
                 execute: Callable, root_helper: str, *, retry_delay: float = 1.0) -> None:
        self._execute = execute
        self._retry_delay = retry_delay
        self._root_helper = root_helper
        self._attempts = max(1, mount_attempts)
        option_sets = [mount_options] if isinstance(mount_options, str) else list(mount_options)
        if not option_sets:
            raise ValueError("MountDataPath needs at least one set of mount options")
        self._clients = [remotefs_brick.RemoteFsClient(
            "nfs", root_helper, execute=execute,
            nfs_mount_point_base=mount_point_base, nfs_mount_options=options) for options in option_sets]
        self._option_sets = option_sets
        self._preferred = 0  # index of the option set mounts use now
        self._users: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def _client(self) -> remotefs_brick.RemoteFsClient:
        return self._clients[self._preferred]

    @property
    def option_sets(self) -> list[str]:
        """Every option string in preference order."""
        return list(self._option_sets)

    @property
    def mount_options(self) -> str:
        """The options the next mount uses (after any version fallback)."""
        return self._option_sets[self._preferred]

    @property
    def mount_point_base(self) -> str:
        return self._client.get_mount_base()

    def mount_point(self, share: str) -> str:
        return self._client.get_mount_point(share)

    def acquire(self, share: str) -> str:
        """Mount ``share`` unless this process already holds it; returns the mount point."""
        with self._lock:
            if self._users.get(share, 0) == 0:
                self._mount_with_retries(share)
            self._users[share] = self._users.get(share, 0) + 1
        return self.mount_point(share)

    def release(self, share: str) -> None:
        """Drop one user; the last one unmounts. Unknown shares are ignored."""
        with self._lock:
            users = self._users.get(share, 0)
            if users == 0:
                return
            if users > 1:
                self._users[share] = users - 1
                return
            del self._users[share]
            self._unmount(share)

    def users(self, share: str) -> int:
        with self._lock:
            return self._users.get(share, 0)

    @contextlib.contextmanager
    def mounted(self, share: str) -> Iterator[str]:
        mount_point = self.acquire(share)
        try:
            yield mount_point
        finally:
            self.release(share)

    def _mount_with_retries(self, share: str) -> None:
        attempt = 1
        while True:
            try:
                self._client.mount(share)
                return
            except Exception as error:  # os-brick raises BrickException or ProcessExecutionError
                if self._fall_back_from(share, error):
                    continue
                if attempt >= self._attempts:
                    raise
                LOG.warning("acmenfs: mount of %(share)s failed (attempt %(n)d of %(max)d): %(error)s",
                            {"share": share, "n": attempt, "max": self._attempts, "error": error})
                attempt += 1
                time.sleep(self._retry_delay)

    def _fall_back_from(self, share: str, error: Exception) -> bool:
        """Move to the next option set when ``error`` refuses this one's NFS version."""
        if self._preferred + 1 >= len(self._option_sets) or not nfs_version.refuses_version(error):
            return False
        LOG.warning("acmenfs: mount of %(share)s with %(refused)s refused its NFS version (%(error)s); "
                    "using %(next)s from now on", {"share": share, "refused": self.mount_options,
                                                   "error": error, "next": self._option_sets[self._preferred + 1]})
        self._preferred += 1
        return True

    def _unmount(self, share: str) -> None:
        mount_point = self.mount_point(share)
        try:
            self._execute("umount", mount_point, root_helper=self._root_helper,
                          run_as_root=True, check_exit_code=0)
        except processutils.ProcessExecutionError as error:
            if "not mounted" in (error.stderr or "") or "not found" in (error.stderr or ""):
                return
            LOG.warning("acmenfs: unmount of %(share)s at %(path)s failed: %(error)s",
                        {"share": share, "path": mount_point, "error": error})


class UserspaceDataPath:
    """Copies volume data over NFSv3 from user space: needs no mount and no root.

    I/O runs as the volume file's owner (AUTH_SYS uid/gid read with GETATTR),
    which is what the owner-only 0660 mode permits, whatever the root squash.
    """

    def __init__(self, *, io_depth: int = 4, timeout: float = 60.0,
                 client_factory: Callable[..., NfsClient] = NfsClient) -> None:
        self._io_depth = io_depth
        self._timeout = timeout
        self._client_factory = client_factory

    def _client(self, location: NfsLocation, uid: int = 0, gid: int = 0) -> NfsClient:
        return self._client_factory(location.host, location.nfs_port, location.mount_port,
                                    uid=uid, gid=gid, timeout=self._timeout, io_depth=self._io_depth)

    @contextlib.contextmanager
    def _open(self, location: NfsLocation, file_name: str) -> Iterator[tuple[NfsClient, bytes, Fattr]]:
        with self._client(location) as probe:
            root = probe.mount(location.export_path)
            fh = probe.lookup(root, file_name)
            attributes = probe.getattr(fh)
        if not is_regular_file(attributes):
            raise NfsError("LOOKUP", 22, f"{location.share}/{file_name} is not a regular file")
        with self._client(location, attributes.uid, attributes.gid) as client:
            yield client, fh, attributes

    def file_size(self, location: NfsLocation, file_name: str) -> int:
        with self._open(location, file_name) as (_, _, attributes):
            return attributes.size

    def allocated_bytes(self, location: NfsLocation, file_name: str) -> int:
        """Space the volume file really uses (0: it reads as zeros throughout)."""
        with self._open(location, file_name) as (_, _, attributes):
            return attributes.used

    def truncate(self, location: NfsLocation, file_name: str) -> None:
        """Cut the volume file to 0 bytes (the caller grows it back through the appliance)."""
        with self._open(location, file_name) as (client, fh, _):
            client.set_size(fh, 0)

    def upload(self, location: NfsLocation, file_name: str, source: BinaryIO, length: int, *,
               sparse: bool) -> int:
        """Write ``length`` bytes of ``source`` at offset 0 of the volume file.

        With ``sparse`` all-zero chunks are not sent: the caller guarantees the
        file reads as zeros beforehand (``allocated_bytes`` is 0, or it was
        truncated and grown again). Returns the bytes sent.
        """
        with self._open(location, file_name) as (client, fh, attributes):
            if length > attributes.size:
                raise ValueError(f"{length} bytes do not fit in volume file {file_name} "
                                 f"of {attributes.size} bytes")
            return client.upload(fh, source, length, skip_zeros=sparse)

    def download(self, location: NfsLocation, file_name: str, destination: BinaryIO, *,
                 sparse: bool = True) -> int:
        """Copy the whole volume file into ``destination``; returns its size."""
        with self._open(location, file_name) as (client, fh, attributes):
            client.download(fh, destination, attributes.size, sparse=sparse)
            return attributes.size


def choose_data_path(setting: str) -> str:
    """``auto`` resolves to ``mount`` when this host can mount NFS, else ``userspace``."""
    if setting != "auto":
        return setting
    return "mount" if host_can_mount_nfs() else "userspace"
