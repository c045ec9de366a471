"""The NFSv4 pseudo file system: the directories above the exports, per client address.

Owns ``PseudoFs``: from the live ``ExportTable`` it derives the tree whose leaves
are the export paths (``/shares/<id>``, ``/snapshots/<id>``, nfsd's ``/NAME``)
and whose inner nodes are read-only pseudo directories.  A client sees only the
exports one of whose rules admits its address, and only the pseudo directories
leading to them (RFC 7530 §7, RFC 8881 §7.3).  It also synthesises the
attributes of pseudo directories (a ``PseudoStat``).  An export nested under
another export's path is reached through the outer export's files, not here.
No file I/O.
"""

from __future__ import annotations

import hashlib
import threading
import time

from acmenfs.nfs3.exports import Export, ExportTable
from acmenfs.nfs4.const import Nfs4Stat
from acmenfs.nfs4.errors import Nfs4Error

PSEUDO_FSID = (0, 0)


class PseudoStat:
    """Attributes of a pseudo directory, shaped like ``os.stat_result`` where attrs.py reads them."""

    __slots__ = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                 "st_rdev", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")

    def __init__(self, fileid: int, children: int, changed_ns: int) -> None:
        self.st_mode = 0o040555
        self.st_ino = fileid
        self.st_dev = 0
        self.st_nlink = 2 + children
        self.st_uid = self.st_gid = 0
        self.st_size = 4096
        self.st_blocks = 8
        self.st_rdev = 0
        self.st_atime_ns = self.st_mtime_ns = self.st_ctime_ns = changed_ns


def parent_of(path: str) -> str:
    parent = path.rpartition("/")[0]
    return parent or "/"


def join(path: str, name: str) -> str:
    return f"/{name}" if path == "/" else f"{path}/{name}"


def pseudo_fileid(path: str) -> int:
    """A stable fileid for a pseudo directory: its path hashed, high bit set (inode numbers of
    the exported file systems stay below 2**63)."""
    digest = hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") | (1 << 63)


class PseudoFs:
    def __init__(self, exports: ExportTable) -> None:
        self.exports = exports
        self._lock = threading.Lock()
        self._changed_ns = time.time_ns()
        self._views: dict[str, dict] = {}   # address -> {pseudo dir path: {name: Export | None}}
        exports.subscribe(self._export_changed)

    def _export_changed(self, event: str, export: Export) -> None:
        with self._lock:
            self._changed_ns = max(time.time_ns(), self._changed_ns + 1)
            self._views.clear()

    def _view(self, address: str) -> dict[str, dict[str, Export | None]]:
        """{pseudo directory path: {child name: Export for an export, None for a pseudo dir}}."""
        view = self._views.get(address)
        if view is not None:
            return view
        view = {"/": {}}
        for export in sorted(self.exports.list(), key=lambda e: e.path):
            if export.rule_for(address) is None:
                continue
            parts = [part for part in export.path.split("/") if part]
            if not parts:
                continue   # an export at "/" would hide the pseudo fs: not supported
            path = "/"
            for index, part in enumerate(parts):
                children = view.setdefault(path, {})
                last = index == len(parts) - 1
                if last:
                    children.setdefault(part, export)
                    break
                if children.get(part) is not None:   # inside another export: served by that export
                    break
                children[part] = None
                path = join(path, part)
                view.setdefault(path, {})
        with self._lock:
            if len(self._views) > 1024:
                self._views.clear()
            self._views[address] = view
        return view

    def exists(self, path: str, address: str) -> bool:
        return path in self._view(address)

    def require(self, path: str, address: str) -> None:
        """NFS4ERR_STALE for a pseudo directory this client cannot see (any more)."""
        if path not in self._view(address):
            raise Nfs4Error(Nfs4Stat.STALE, f"pseudo directory {path} not visible to {address}")

    def lookup(self, path: str, name: str, address: str) -> tuple[str | None, Export | None]:
        """(child pseudo path, None) or (None, export); NOENT when the client sees no such name."""
        children = self._view(address).get(path)
        if children is None:
            raise Nfs4Error(Nfs4Stat.STALE, f"pseudo directory {path} not visible to {address}")
        if name not in children:
            raise Nfs4Error(Nfs4Stat.NOENT, f"{name!r} not in pseudo directory {path}")
        export = children[name]
        return (None, export) if export is not None else (join(path, name), None)

    def children(self, path: str, address: str) -> list[tuple[str, Export | None]]:
        children = self._view(address).get(path)
        if children is None:
            raise Nfs4Error(Nfs4Stat.STALE, f"pseudo directory {path} not visible to {address}")
        return sorted(children.items())

    def stat(self, path: str, address: str) -> PseudoStat:
        children = self._view(address).get(path)
        if children is None:
            raise Nfs4Error(Nfs4Stat.STALE, f"pseudo directory {path} not visible to {address}")
        subdirs = sum(1 for value in children.values() if value is None)
        return PseudoStat(pseudo_fileid(path), subdirs, self._changed_ns)

    @staticmethod
    def mount_point_of(export: Export) -> str:
        """The pseudo directory an export's root sits in."""
        return parent_of("/" + "/".join(part for part in export.path.split("/") if part))
