"""The local backend's namespace changes: CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RENAME, LINK.

A mixin of ``LocalExportBackend`` (``acmenfs.fs.local``).  Every change is made
relative to a directory descriptor, as the caller (``credentials.acting_as``), with
the export's usage counter kept current.  Creating and removing names in a cached
directory may run on the event loop (``_begin_inline_change``: paused for the export
for a while after one blocked).
"""

from __future__ import annotations

import errno
import os
import stat

from acmenfs.fs.backend import SetAttributes
from acmenfs.fs.credentials import Identity, acting_as
from acmenfs.fs.local_common import O_PATH_FLAGS, check_name, check_new_name
from acmenfs.fs.nodes import Node
from acmenfs.fs.nonblocking import WouldBlock, inline_active, open_cached
from acmenfs.fs.quota import allocated_bytes, charged_bytes
from acmenfs.fs.setid import SETID_BITS

INLINE_UNLINK_BYTES = 1024 * 1024  # removing a file holding more frees its blocks in the thread pool
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LocalNamespaceMixin:
    """Namespace changes of ``LocalExportBackend``."""

    def _begin_inline_change(self) -> tuple[float, int] | None:
        """Start of a change (CREATE, REMOVE, SETATTR of attributes) maybe run on the event loop.

        Creating or removing a name in a directory we hold open is, on a local file
        system, normally a page-cache and journal operation; it can still wait for the
        disk (directory or bitmap blocks evicted, a journal commit).  Returns None in
        the thread pool.  Inline, returns (start time, voluntary context switches), or raises
        WouldBlock when the change cannot be done without the disk as far as we can
        tell beforehand (handle table, first usage scan) or inline changes are paused.
        Must be called before the change has any effect (it is re-run in the pool).
        """
        if not inline_active():
            return None
        if self.path_table is not None:
            raise WouldBlock("the handle table is on disk")
        if self.usage.quota_bytes is not None and not self.usage.scanned:
            raise WouldBlock("first usage scan")
        return self.inline_changes.start()

    def _end_inline_change(self, started: tuple[float, int] | None) -> None:
        """A change that ran inline blocked (slept in the kernel) and took too long:
        run this export's changes in the thread pool for a while."""
        if started is not None:
            self.inline_changes.finish(started, self.directory)

    def _forget_listing(self, directory: Node) -> None:
        with self._listings_lock:
            self._listings.pop(directory.handle, None)

    def create(self, directory: Node, name: str, who: Identity, how: int, changes: SetAttributes, verifier: bytes):
        """how: 0 UNCHECKED, 1 GUARDED, 2 EXCLUSIVE (verifier kept in atime/mtime seconds).
        -> (node, its attributes after the call)."""
        check_new_name(name)
        started = self._begin_inline_change()
        try:
            return self._create(directory, name, who, how, changes, verifier, inline=started is not None)
        finally:
            self._end_inline_change(started)

    def _create(self, directory: Node, name: str, who: Identity, how: int, changes: SetAttributes, verifier: bytes,
                inline: bool, may_retry: bool = True) -> tuple[Node, os.stat_result]:
        """The create itself, always O_EXCL: a name that exists is never opened for data (it could
        be a device or a FIFO) but handled by ``_create_existing`` (UNCHECKED) or
        ``_retried_exclusive_create`` (EXCLUSIVE)."""
        self.usage.check_growth(1, may_scan=not inline)
        mode = 0o644 if changes.mode is None or how == 2 else changes.mode & 0o7777
        with acting_as(who):
            try:
                fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=directory.fd)
            except FileExistsError:
                if how == 1:
                    raise
                fd = -1
            else:
                try:
                    st = os.fstat(fd)
                    changed = True
                    if how == 2:
                        seconds = int.from_bytes(verifier[:4], "big"), int.from_bytes(verifier[4:], "big")
                        os.utime(fd, ns=(seconds[0] * 1_000_000_000, seconds[1] * 1_000_000_000))
                    elif st.st_mode & 0o7777 != mode and changes.mode is not None:
                        os.fchmod(fd, mode)  # no umask on NFS: the client applied its own
                    else:
                        changed = False
                except BaseException:
                    os.close(fd)
                    raise
        if fd < 0:  # the name exists (acting as the server again: the handle table may be written)
            if how == 2:
                return self._retried_exclusive_create(directory, name, who, verifier)
            try:
                return self._create_existing(directory, name, who, changes, inline)
            except FileNotFoundError:  # removed in between: create it after all (once)
                if not may_retry:
                    raise
                return self._create(directory, name, who, how, changes, verifier, inline, may_retry=False)
        self._forget_listing(directory)
        self.usage.add(charged_bytes(st))
        node = self._adopt_created(directory, name, fd, st)
        if changed:
            st = self.stat(node)
        rest = SetAttributes(None, changes.uid, changes.gid, changes.size, changes.atime, changes.mtime)
        if how != 2 and not rest.is_empty():
            self._apply(node, who, rest, st)
            st = self.stat(node)
        return node, st

    def _adopt_created(self, directory: Node, name: str, fd: int, st: os.stat_result) -> Node:
        """A regular file this server just created, open read-write as ``fd`` with attributes
        ``st``: that one descriptor is the node's descriptor and its data descriptor (no
        O_PATH open, no second fstat)."""
        try:
            handle = self._handle_for(fd, directory, name)
        except BaseException:
            os.close(fd)
            raise
        # If another thread cached this handle first, ``put`` returns its node and ours closes fd
        # when dropped.
        return self._cache.put(Node(handle, fd, st, fd))

    def _create_existing(self, directory: Node, name: str, who: Identity, changes: SetAttributes,
                         inline: bool) -> tuple[Node, os.stat_result]:
        """UNCHECKED CREATE of a name that exists: as knfsd does, a regular file is returned as it
        is but for a requested size (O_TRUNC); any other type is EEXIST.  The caller needs no
        write permission unless a size is set, and no data descriptor is opened as the caller."""
        with acting_as(who):
            fd = os.open(name, O_PATH_FLAGS, dir_fd=directory.fd)
        node, st = self._adopt_with_stat(directory, name, fd)
        if not node.is_reg:
            raise OSError(errno.EEXIST, "exists and is not a regular file")
        if changes.size is not None and (changes.size != st.st_size or st.st_mode & SETID_BITS):
            if inline:
                raise WouldBlock("a size change may free or zero many blocks")
            self._apply(node, who, SetAttributes(size=changes.size), st)
            st = self.stat(node)
        return node, st

    def _retried_exclusive_create(self, directory: Node, name: str, who: Identity,
                                  verifier: bytes) -> tuple[Node, os.stat_result]:
        with acting_as(who):
            fd = os.open(name, O_PATH_FLAGS, dir_fd=directory.fd)
        st = os.fstat(fd)
        stored = (int(st.st_atime) & 0xFFFFFFFF).to_bytes(4, "big") + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "big")
        if not stat.S_ISREG(st.st_mode) or stored != verifier:
            os.close(fd)
            raise OSError(errno.EEXIST, "file exists (exclusive create with another verifier)")
        return self._adopt_with_stat(directory, name, fd)

    def mkdir(self, directory: Node, name: str, who: Identity, changes: SetAttributes) -> Node:
        check_new_name(name)
        self.usage.check_growth(4096)
        mode = 0o755 if changes.mode is None else changes.mode & 0o7777
        with acting_as(who):
            os.mkdir(name, mode, dir_fd=directory.fd)
            self._forget_listing(directory)
            fd = os.open(name, O_PATH_FLAGS, dir_fd=directory.fd)
            if os.fstat(fd).st_mode & 0o7777 != mode:
                os.chmod(f"/proc/self/fd/{fd}", mode)
        node = self._adopt(directory, name, fd)
        self.usage.add(charged_bytes(os.fstat(node.fd)))
        self._apply(node, who, SetAttributes(None, changes.uid, changes.gid, None, changes.atime, changes.mtime), self.stat(node))
        return node

    def symlink(self, directory: Node, name: str, who: Identity, target: bytes, changes: SetAttributes) -> Node:
        check_new_name(name)
        if b"\0" in target or not target:
            raise OSError(errno.EINVAL, "symbolic link target empty or containing NUL")
        self.usage.check_growth(1)
        with acting_as(who):
            os.symlink(target, os.fsencode(name), dir_fd=directory.fd)
            self._forget_listing(directory)
            fd = os.open(name, O_PATH_FLAGS, dir_fd=directory.fd)
        return self._adopt(directory, name, fd)

    def mknod(self, directory: Node, name: str, who: Identity, kind: str, changes: SetAttributes, rdev: int) -> Node:
        check_new_name(name)
        type_bits = {"fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK, "chr": stat.S_IFCHR, "blk": stat.S_IFBLK}[kind]
        if kind in ("chr", "blk") and not who.is_root:
            raise OSError(errno.EPERM, "only root may create device nodes")
        mode = 0o644 if changes.mode is None else changes.mode & 0o7777
        with acting_as(who):
            os.mknod(name, type_bits | mode, rdev, dir_fd=directory.fd)
            self._forget_listing(directory)
            fd = os.open(name, O_PATH_FLAGS, dir_fd=directory.fd)
        return self._adopt(directory, name, fd)

    def _forget_name(self, directory: Node, name: str, st: os.stat_result | None = None) -> None:
        """Before ``name`` disappears: drop its cached node and account freed space."""
        if st is None:
            try:
                st = os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
            except OSError:
                return
        self._cache.drop_inode(st.st_dev, st.st_ino)
        if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
            self.usage.add(-charged_bytes(st))

    def remove(self, directory: Node, name: str, who: Identity, is_dir: bool) -> None:
        check_name(name)
        if name == ".":
            raise OSError(errno.EINVAL, "cannot remove '.'")
        if name == "..":
            raise OSError(errno.ENOTEMPTY if is_dir else errno.EINVAL, "cannot remove '..'")
        started = self._begin_inline_change()
        try:
            with acting_as(who):
                st = self._child_lstat(directory, name, cached_only=started is not None)
                if is_dir and not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, "not a directory")
                if started is not None and stat.S_ISREG(st.st_mode) and st.st_nlink <= 1 and allocated_bytes(st) > INLINE_UNLINK_BYTES:
                    raise WouldBlock("freeing a large file's blocks may take long")
                self._forget_name(directory, name, st)
                if is_dir:
                    os.rmdir(name, dir_fd=directory.fd)
                else:
                    os.unlink(name, dir_fd=directory.fd)
        finally:
            self._end_inline_change(started)
        self._forget_listing(directory)
        if self.path_table is not None:
            self.path_table.removed(self.export_id, self._child_path(directory, name))

    @staticmethod
    def _child_lstat(directory: Node, name: str, cached_only: bool) -> os.stat_result:
        """lstat of ``name`` in ``directory``; with ``cached_only``, WouldBlock unless the dentry is cached."""
        if not cached_only:
            return os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
        fd = open_cached(directory.fd, name, O_PATH_FLAGS)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _child_path(self, directory: Node, name: str) -> str:
        parent = self._path_of(directory)
        return f"{parent}/{name}" if parent else name

    def rename(self, from_dir: Node, from_name: str, to_dir: Node, to_name: str, who: Identity) -> None:
        check_name(from_name)
        check_name(to_name)
        if from_name in (".", "..") or to_name in (".", ".."):
            raise OSError(errno.EINVAL, "cannot rename '.' or '..'")
        with acting_as(who):
            source = os.stat(from_name, dir_fd=from_dir.fd, follow_symlinks=False)
            try:
                target = os.stat(to_name, dir_fd=to_dir.fd, follow_symlinks=False)
            except FileNotFoundError:
                target = None
            same_object = target is not None and (target.st_dev, target.st_ino) == (source.st_dev, source.st_ino)
            if target is not None and not same_object:
                self._forget_name(to_dir, to_name)
            os.rename(from_name, to_name, src_dir_fd=from_dir.fd, dst_dir_fd=to_dir.fd)
        self._forget_listing(from_dir)
        self._forget_listing(to_dir)
        if self.path_table is not None and not same_object:
            self.path_table.renamed(self.export_id, self._child_path(from_dir, from_name), self._child_path(to_dir, to_name))

    def link(self, node: Node, directory: Node, name: str, who: Identity) -> None:
        check_new_name(name)
        if node.is_dir:
            raise OSError(errno.EISDIR, "cannot hard-link a directory")
        with acting_as(who):
            os.link(node.proc_path, name, dst_dir_fd=directory.fd, follow_symlinks=True)
        self._forget_listing(directory)
