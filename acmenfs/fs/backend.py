"""The file-system backend interface between the NFS procedures and real files.

Owns the vocabulary the protocol layer uses to ask for file operations:
``SetAttributes`` (what SETATTR/CREATE want changed), ``DirEntry`` (one listed
name), the exceptions ``StaleHandle`` / ``BadHandle`` / ``QuotaExceeded`` /
``ReadOnlyExport``, and ``ExportBackend``, the abstract per-export interface.
Everything else a backend raises is an ``OSError`` whose errno the NFS layer
maps to an nfsstat3.  It must not know about XDR, RPC or sockets.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, NamedTuple

from acmenfs.fs.credentials import Identity

TimeSetting = None | Literal["server"] | int  # None = leave, "server" = now, int = ns since epoch


class StaleHandle(Exception):
    """The handle named an object that no longer exists (NFS3ERR_STALE)."""


class BadHandle(Exception):
    """The handle is malformed or not ours (NFS3ERR_BADHANDLE)."""


class QuotaExceeded(OSError):
    """The export's quota would be exceeded (NFS3ERR_DQUOT)."""

    def __init__(self, message: str = "export quota exceeded") -> None:
        super().__init__(errno.EDQUOT, message)


class SetAttributes(NamedTuple):
    """Immutable; a named tuple rather than a frozen dataclass because one is built per
    CREATE/SETATTR call and a frozen dataclass costs about 1 µs to construct."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: TimeSetting = None
    mtime: TimeSetting = None

    def is_empty(self) -> bool:
        return self == _NO_CHANGES


_NO_CHANGES = SetAttributes()


@dataclass(frozen=True, slots=True)
class DirEntry:
    cookie: int
    name: str
    fileid: int


class ExportBackend(ABC):
    """One exported directory tree.  Nodes are backend-specific objects returned by ``node``."""

    root_handle: bytes

    @abstractmethod
    def node(self, handle: bytes): """Resolve a backend handle (raises StaleHandle/BadHandle)."""

    @abstractmethod
    def stat(self, node) -> os.stat_result: ...

    @abstractmethod
    def lookup(self, directory, name: str, who: Identity): """-> (child node, its stat, the directory's)"""

    @abstractmethod
    def readlink(self, node, who: Identity) -> bytes: ...

    @abstractmethod
    def read(self, node, who: Identity, offset: int, count: int): """-> (fileobj, count, eof, stat)"""

    @abstractmethod
    def write(self, node, who: Identity, offset: int, data, stable: int): """-> (pre, post)"""

    @abstractmethod
    def commit_ticket(self, node=None) -> int | None: ...  # node: the file a COMMIT names

    @abstractmethod
    def setattr(self, node, who: Identity, changes: SetAttributes, guard_ctime_ns: int | None,
                pre: os.stat_result | None = None): """-> (pre, post) attributes"""

    @abstractmethod
    def create(self, directory, name: str, who: Identity, how: int, changes: SetAttributes, verifier: bytes):
        """-> (new or existing node, its attributes)"""

    @abstractmethod
    def mkdir(self, directory, name: str, who: Identity, changes: SetAttributes): ...

    @abstractmethod
    def symlink(self, directory, name: str, who: Identity, target: bytes, changes: SetAttributes): ...

    @abstractmethod
    def mknod(self, directory, name: str, who: Identity, kind: str, changes: SetAttributes, rdev: int): ...

    @abstractmethod
    def remove(self, directory, name: str, who: Identity, is_dir: bool) -> None: ...

    @abstractmethod
    def rename(self, from_dir, from_name: str, to_dir, to_name: str, who: Identity) -> None: ...

    @abstractmethod
    def link(self, node, directory, name: str, who: Identity) -> None: ...

    @abstractmethod
    def list_directory(self, directory, who: Identity, cookie: int) -> list[DirEntry]: ...

    @abstractmethod
    def entry_node(self, directory, name: str, who: Identity): """READDIRPLUS: handle+attrs of a name"""

    @abstractmethod
    def statvfs(self) -> tuple[int, int, int, int, int, int]: """total, free, avail bytes; files, ffree, favail"""

    @abstractmethod
    def close(self) -> None: ...
