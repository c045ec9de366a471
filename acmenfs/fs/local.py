"""The local-directory backend: serves one exported directory tree from the local file system.

Owns every file operation the NFS procedures need, done relative to directory
descriptors (``*at`` system calls, O_NOFOLLOW, never a path built from a client
string), under the caller's identity (``credentials.acting_as``) for namespace
changes, and with mode-bit checks (owner may always read/write what it owns, as
knfsd's owner override) for data access on cached descriptors.  Handles are
kernel handles (root) or ids from a ``PathTable`` (not root); both survive
restarts.  Keeps the export's ``UsageCounter`` current and hands unstable
writes to the ``GroupCommitter``.  On the event loop (``nonblocking.inline``)
it raises WouldBlock for anything that may wait for the disk; creating and
removing names in a directory it holds open, and attribute changes, do run
there (see ``_begin_inline_change``: paused for a while after one blocked).
It must not know about XDR or RPC, and it never lets ".." climb above the
export root.

Split by concern: this module keeps handles, the node cache, LOOKUP and the file
system's figures; data operations are in ``local_data``, namespace changes in
``local_namespace``, listings in ``local_listing`` (mixins of the class here), shared
helpers in ``local_common``.  Names other code imports from here stay importable here.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
import weakref
from collections import OrderedDict

from acmenfs.fs import kernel_handles
from acmenfs.fs.backend import BadHandle, DirEntry, ExportBackend, StaleHandle
from acmenfs.fs.commit import GroupCommitter
from acmenfs.fs.credentials import Identity, acting_as
from acmenfs.fs.local_common import (  # noqa: F401 - re-exported: callers import these from here
    COOKIE_FLAG, INLINE_CHANGE_MAX_BLOCKED_SECONDS, INLINE_CHANGE_PAUSE_SECONDS, INLINE_PAUSE_FIRST_SECONDS,
    KERNEL_KIND, NAME_MAX, InlinePause,
    O_PATH_FLAGS, PATH_KIND, check_name, check_new_name, name_cookie, permitted, set_times)
from acmenfs.fs.local_data import INLINE_COPY_READ_BYTES, LocalDataMixin  # noqa: F401 - re-exported
from acmenfs.fs.local_listing import LISTING_CACHE_SIZE, LocalListingMixin
from acmenfs.fs.local_namespace import INLINE_UNLINK_BYTES, LocalNamespaceMixin  # noqa: F401 - re-exported
from acmenfs.fs.nodes import Node, NodeCache
from acmenfs.fs.nonblocking import WouldBlock, inline_active, open_cached
from acmenfs.fs.pathtable import PathTable
from acmenfs.fs.quota import UsageCounter

# LOOKUP's name cache: a directory's entries are trusted while its ctime is the one seen when they
# were resolved, provided it was older than this (a change within one tick of the file system's
# clock may keep the same ctime).  It keeps as many (directory, name) entries as the node cache
# holds nodes: an entry whose node was evicted is of no use.
DENTRY_SETTLE_NS = 100_000_000
log = logging.getLogger("acmenfs.fs.local")
__all__ = [
    "COOKIE_FLAG", "INLINE_CHANGE_MAX_BLOCKED_SECONDS", "INLINE_CHANGE_PAUSE_SECONDS", "INLINE_COPY_READ_BYTES",
    "INLINE_PAUSE_FIRST_SECONDS",
    "INLINE_UNLINK_BYTES", "KERNEL_KIND", "LISTING_CACHE_SIZE", "NAME_MAX", "PATH_KIND", "LocalExportBackend",
    "check_name", "check_new_name", "name_cookie", "permitted", "set_times",
]


class LocalExportBackend(LocalDataMixin, LocalNamespaceMixin, LocalListingMixin, ExportBackend):
    def __init__(
        self,
        export_id: bytes,
        directory: str,
        committer: GroupCommitter,
        usage: UsageCounter,
        path_table: PathTable | None = None,
        cache_capacity: int = 4096,
    ) -> None:
        self.export_id = export_id
        self.directory = directory
        self.committer = committer
        self.usage = usage
        self.path_table = path_table
        self.mount_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.mount_fd)
        root_st = os.fstat(self.mount_fd)
        self.root_dev, self.root_ino = root_st.st_dev, root_st.st_ino
        self._cache = NodeCache(cache_capacity)
        self.inline_changes = InlinePause("changes")  # CREATE/REMOVE/SETATTR on the event loop
        self.inline_writes = InlinePause("writes")  # UNSTABLE WRITEs on the event loop
        self._listings: OrderedDict[bytes, tuple[tuple, list[int], list[DirEntry]]] = OrderedDict()
        self._listings_lock = threading.Lock()
        # (directory handle, name) -> (directory ctime ns, identity, child handle): see lookup()
        self._dentries: dict[tuple[bytes, str], tuple[int, Identity, bytes]] = {}
        self.dentry_hits = 0  # LOOKUPs answered from _dentries (not exact under threads: a statistic)
        root_fd = os.open(".", O_PATH_FLAGS, dir_fd=self.mount_fd)
        self.root_handle = self._handle_for(root_fd, None, "")
        self.root = self._cache.put(Node(self.root_handle, root_fd, root_st))

    # ----- handles and nodes -------------------------------------------------
    def _handle_for(self, fd: int, directory: Node | None, name: str) -> bytes:
        if self.path_table is None:
            return KERNEL_KIND + kernel_handles.handle_of(fd)
        if directory is None:
            path = ""
        elif name == "..":
            path = self._path_of(directory).rpartition("/")[0]
        else:
            parent = self._path_of(directory)
            path = f"{parent}/{name}" if parent else name
        return PATH_KIND + self.path_table.handle_for(self.export_id, path, os.fstat(fd).st_ino)

    def _path_of(self, node: Node) -> str:
        assert self.path_table is not None
        found = self.path_table.resolve(self.export_id, node.handle[1:])
        if found is None:
            raise StaleHandle("object no longer in the handle table")
        return found[0]

    def _open_handle(self, handle: bytes) -> int:
        kind, body = handle[:1], handle[1:]
        if kind == KERNEL_KIND and self.path_table is None:
            try:
                return kernel_handles.open_handle(self.mount_fd, body, O_PATH_FLAGS)
            except (OSError, ValueError) as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ESTALE, errno.ENOENT):
                    raise StaleHandle(str(exc)) from exc
                raise BadHandle(f"kernel refused the handle: {exc}") from exc
        if kind == PATH_KIND and self.path_table is not None:
            found = self.path_table.resolve(self.export_id, body)
            if found is None:
                raise StaleHandle("unknown object id")
            return self._open_relative_path(*found)
        raise BadHandle("handle of another kind than this server issues")

    def _open_relative_path(self, path: str, ino: int) -> int:
        fd = os.open(".", O_PATH_FLAGS, dir_fd=self.mount_fd)
        try:
            for part in filter(None, path.split("/")):
                next_fd = os.open(part, O_PATH_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except OSError as exc:
            os.close(fd)
            raise StaleHandle(f"path of handle gone: {exc}") from exc
        if os.fstat(fd).st_ino != ino:
            os.close(fd)
            raise StaleHandle("object replaced")
        return fd

    def node(self, handle: bytes) -> Node:
        node = self._cache.get(handle)
        if node is not None:
            return node
        if inline_active():
            raise WouldBlock("handle not cached")
        fd = self._open_handle(handle)
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if st.st_nlink == 0:
            os.close(fd)
            raise StaleHandle("object deleted")
        return self._cache.put(Node(handle, fd, st))

    def _adopt(self, directory: Node, name: str, fd: int) -> Node:
        """Turn a freshly opened (O_PATH) descriptor of ``name`` into a (cached) node."""
        return self._adopt_with_stat(directory, name, fd)[0]

    def _adopt_with_stat(self, directory: Node, name: str, fd: int) -> tuple[Node, os.stat_result]:
        """``_adopt``, also returning the object's attributes (one fstat serves both)."""
        try:
            st = os.fstat(fd)
            if self.path_table is None:  # kernel handles name the inode: reuse an open node
                # A cached node holds its inode open, so its number cannot have been reused.
                known = self._cache.by_inode(st.st_dev, st.st_ino)
                if known is not None:
                    os.close(fd)
                    return known, st
            handle = self._handle_for(fd, directory, name)
        except BaseException:
            os.close(fd)
            raise
        cached = self._cache.get(handle)
        if cached is not None:
            os.close(fd)
            return cached, st
        return self._cache.put(Node(handle, fd, st)), st

    def stat(self, node: Node) -> os.stat_result:
        st = os.fstat(node.fd)
        if st.st_nlink == 0 and node is not self.root:
            self._cache.drop(node)
            raise StaleHandle("object deleted")
        return st

    def is_root(self, node: Node) -> bool:
        return node.dev == self.root_dev and node.ino == self.root_ino

    # ----- lookups and reads ---------------------------------------------------
    def lookup(self, directory: Node, name: str, who: Identity) -> tuple[Node, os.stat_result, os.stat_result]:
        """The child ``name`` of ``directory``: (child node, its attributes, the directory's).

        A name this caller resolved before in a directory that has not changed since (same
        ctime) is answered from ``_dentries`` with two fstat calls instead of opening it again."""
        if not directory.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        check_name(name)
        settled_before = time.time_ns() - DENTRY_SETTLE_NS  # read before the directory's ctime
        dir_st = self.stat(directory)
        if name == "." or name == "..":
            with acting_as(who):
                os.stat(".", dir_fd=directory.fd)  # the caller still needs search permission
            node = directory if name == "." or self.is_root(directory) else None
            if node is not None:
                return node, dir_st if node is directory else self.stat(node), dir_st
        else:
            known = self._dentries.get((directory.handle, name))
            if known is not None and known[0] == dir_st.st_ctime_ns and known[1] == who:
                child = self._cache.get(known[2])
                if child is not None:
                    st = os.fstat(child.fd)
                    if st.st_nlink:
                        self.dentry_hits += 1
                        return child, st, dir_st
        inline = inline_active()
        if inline and self.path_table is not None:
            raise WouldBlock("the handle table is on disk")
        try:
            with acting_as(who):
                if inline:
                    fd = open_cached(directory.fd, name, O_PATH_FLAGS)
                else:
                    fd = os.open(name, O_PATH_FLAGS, dir_fd=directory.fd)
        except OSError as exc:
            exc.directory_attributes = dir_st  # LOOKUP's failure reply carries them: no second fstat
            raise
        child, st = self._adopt_with_stat(directory, name, fd)
        if self.path_table is None and name != ".." and dir_st.st_ctime_ns < settled_before:
            self._remember_dentry(directory, name, dir_st, who, child)
        return child, st, dir_st

    def _remember_dentry(self, directory: Node, name: str, dir_st: os.stat_result, who: Identity,
                         child: Node) -> None:
        """Record that ``who`` resolved ``name`` to ``child`` while ``directory`` had ctime
        ``dir_st.st_ctime_ns``.  Only for a directory unchanged for DENTRY_SETTLE_NS before that
        ctime was read: any later change to it (create, remove, rename of an entry, chmod, an ACL)
        then sets a ctime different from the recorded one, however coarse the file system's
        clock, and the entry no longer matches.  (A clock stepped back, or a mount placed on the
        child, would go unseen: the same trust NFS clients put in a directory's ctime.)"""
        if len(self._dentries) >= self._cache.capacity:
            self._dentries.clear()
        self._dentries[(directory.handle, name)] = (dir_st.st_ctime_ns, who, child.handle)

    def readlink(self, node: Node, who: Identity) -> bytes:
        if not stat.S_ISLNK(node.mode):
            raise OSError(errno.EINVAL, "not a symbolic link")
        if inline_active():
            raise WouldBlock("symlink body may need the disk")
        return os.readlink(b"", dir_fd=node.fd)

    # ----- file system ------------------------------------------------------------------
    def statvfs(self) -> tuple[int, int, int, int, int, int]:
        vfs = os.fstatvfs(self.mount_fd)
        total = vfs.f_blocks * vfs.f_frsize
        free = vfs.f_bfree * vfs.f_frsize
        avail = vfs.f_bavail * vfs.f_frsize
        quota = self.usage.quota_bytes
        if quota is not None:
            left = max(0, quota - self.usage.current(may_scan=not inline_active()))
            total, free, avail = quota, min(free, left), min(avail, left)
        return total, free, avail, vfs.f_files, vfs.f_ffree, vfs.f_favail

    def serves_root(self, directory: str) -> bool:
        """Whether ``directory`` still names the object this backend opened as its root.

        False after the directory was swapped for another (a revert exchanges the
        share's directory with a copy of a snapshot) or removed.
        """
        try:
            st = os.stat(directory)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.root_dev, self.root_ino)

    def close(self) -> None:
        """Drop every cached descriptor and listing.

        The export-root descriptor closes when the last in-flight call lets go of
        this backend (a finalizer), so such a call never uses a number reused meanwhile.
        """
        self._cache.clear()
        with self._listings_lock:
            self._listings.clear()
