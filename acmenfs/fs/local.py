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
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import resource
import stat
import threading
import time
import weakref
from collections import OrderedDict

from acmenfs.fs import kernel_handles
from acmenfs.fs.backend import BadHandle, DirEntry, ExportBackend, SetAttributes, StaleHandle
from acmenfs.fs.commit import GroupCommitter
from acmenfs.fs.credentials import Identity, acting_as
from acmenfs.fs.nodes import Node, NodeCache
from acmenfs.fs.nonblocking import WouldBlock, data_cached, inline_active, open_cached
from acmenfs.fs.pathtable import PathTable
from acmenfs.fs.quota import UsageCounter, allocated_bytes, charged_bytes, unallocated_bytes
from acmenfs.fs.setid import SETID_BITS, drop_setid

NAME_MAX = 255
KERNEL_KIND = b"K"
PATH_KIND = b"P"
LISTING_CACHE_SIZE = 64
COOKIE_FLAG = 1 << 63
# Namespace changes run on the event loop when their directory is cached (see _begin_inline_change);
# one that blocked (slept in the kernel: disk, journal) and took longer than this pauses that for
# the export, for INLINE_CHANGE_PAUSE_SECONDS.  Being preempted (a busy machine) does not count.
INLINE_CHANGE_MAX_BLOCKED_SECONDS = 0.001
INLINE_CHANGE_PAUSE_SECONDS = 2.0
INLINE_UNLINK_BYTES = 1024 * 1024
INLINE_COPY_READ_BYTES = 64 * 1024  # inline READs up to this size are copied, larger ones sent with sendfile
_PAGE_MASK = os.sysconf("SC_PAGESIZE") - 1  # a WRITE covering part of a page the kernel must read it first  # removing a file holding more frees its blocks in the thread pool
# LOOKUP's name cache: a directory's entries are trusted while its ctime is the one seen when they
# were resolved, provided it was older than this (a change within one tick of the file system's
# clock may keep the same ctime).  It keeps as many (directory, name) entries as the node cache
# holds nodes: an entry whose node was evicted is of no use.
DENTRY_SETTLE_NS = 100_000_000
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
log = logging.getLogger("acmenfs.fs.local")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD = -100
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _timespec(setting) -> _Timespec:
    if setting is None:
        return _Timespec(0, _UTIME_OMIT)
    if setting == "server":
        return _Timespec(0, _UTIME_NOW)
    return _Timespec(setting // 1_000_000_000, setting % 1_000_000_000)


def set_times(path: str, atime, mtime) -> None:
    """utimensat with per-field OMIT/NOW/explicit (os.utime cannot leave one time alone)."""
    times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
    if _libc.utimensat(_AT_FDCWD, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"utimensat: {os.strerror(err)}")


def check_name(name: str) -> None:
    """Refuse names a client must not use as one path component."""
    if not name:
        raise OSError(errno.EACCES, "empty file name")
    if "/" in name or "\0" in name:
        raise OSError(errno.EACCES, f"file name contains '/' or NUL: {name!r}")
    if len(name) > NAME_MAX // 4 and len(os.fsencode(name)) > NAME_MAX:  # at most 4 bytes a character
        raise OSError(errno.ENAMETOOLONG, f"file name longer than {NAME_MAX} bytes")


def check_new_name(name: str) -> None:
    check_name(name)
    if name in (".", ".."):
        raise OSError(errno.EEXIST, f"cannot create {name!r}")


def name_cookie(name: str) -> int:
    """A READDIR cookie from the name alone: stable across directory changes and restarts."""
    digest = hashlib.blake2b(os.fsencode(name), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) | COOKIE_FLAG


def permitted(st: os.stat_result, who: Identity, want: int, owner_override: bool = False) -> bool:
    """Mode-bit check of ``want`` (r=4, w=2, x=1) for ``who``."""
    if who.is_root:
        return not (want & 1) or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if owner_override and st.st_uid == who.uid and not (want & 1):
        return True
    if st.st_uid == who.uid:
        bits = st.st_mode >> 6
    elif who.in_group(st.st_gid):
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return (bits & want & 7) == want


def _require(st: os.stat_result, who: Identity, want: int, owner_override: bool = False) -> None:
    if not permitted(st, who, want, owner_override):
        raise OSError(errno.EACCES, "permission denied")


def _is_noop(changes: SetAttributes, st: os.stat_result) -> bool:
    """True when SETATTR would change nothing (e.g. truncating an empty new file to 0)."""
    return (
        (changes.size is None or (changes.size == st.st_size and stat.S_ISREG(st.st_mode)
                                  and not st.st_mode & SETID_BITS))  # truncate(2) to the same size clears them
        and changes.mode is None
        and changes.uid is None
        and changes.gid is None
        and changes.atime is None
        and changes.mtime is None
    )


class LocalExportBackend(ExportBackend):
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
        self._inline_changes_paused_until = 0.0
        self.slow_inline_changes = 0
        self._inline_writes_paused_until = 0.0
        self.slow_inline_writes = 0
        self._listings: OrderedDict[bytes, tuple[tuple, list[int], list[DirEntry]]] = OrderedDict()
        self._listings_lock = threading.Lock()
        # (directory handle, name) -> (directory ctime ns, identity, child handle): see lookup()
        self._dentries: dict[tuple[bytes, str], tuple[int, Identity, bytes]] = {}
        self.dentry_hits = 0  # LOOKUPs answered from _dentries (not exact under threads: a statistic)
        root_fd = os.open(".", _O_PATH, dir_fd=self.mount_fd)
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
                return kernel_handles.open_handle(self.mount_fd, body, _O_PATH)
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
        fd = os.open(".", _O_PATH, dir_fd=self.mount_fd)
        try:
            for part in filter(None, path.split("/")):
                next_fd = os.open(part, _O_PATH, dir_fd=fd)
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
                    fd = open_cached(directory.fd, name, _O_PATH)
                else:
                    fd = os.open(name, _O_PATH, dir_fd=directory.fd)
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

    def read(self, node: Node, who: Identity, offset: int, count: int):
        if node.is_dir:
            raise OSError(errno.EISDIR, "is a directory")
        if not node.is_reg:
            raise OSError(errno.EINVAL, "not a regular file")
        st = self.stat(node)
        _require(st, who, 4, owner_override=True)
        fd = node.data_fd()
        available = max(0, min(count, st.st_size - offset))
        eof = offset + available >= st.st_size
        if inline_active():
            if 0 < available <= INLINE_COPY_READ_BYTES:
                return self._read_cached(fd, offset, available), available, eof, st
            if not data_cached(fd, offset, available):
                raise WouldBlock("file data not in the page cache")
        return node, available, eof, st

    @staticmethod
    def _read_cached(fd: int, offset: int, count: int) -> bytearray:
        """A small read on the event loop: one preadv2(RWF_NOWAIT) both asks whether the range is in
        the page cache and copies it (cheaper than two probes, a header write and a sendfile)."""
        buffer = bytearray(count)
        try:
            got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            raise WouldBlock("file data not in the page cache") from None
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                raise WouldBlock("RWF_NOWAIT not supported") from None
            raise
        if got < count:  # part of the range is not cached (or the file shrank): the pool reads it
            raise WouldBlock("file data partly not in the page cache")
        return buffer

    def read_bytes(self, node: Node, offset: int, count: int) -> bytearray:
        """Read a range into memory (cold data, in the thread pool): one copy, then sent as is."""
        buffer = bytearray(count)
        got = os.preadv(node.data_fd(), [buffer], offset)
        if got < count:
            del buffer[got:]
        return buffer

    def access(self, node: Node, who: Identity) -> tuple[int, os.stat_result]:
        """(allowed rwx bits for ``who``, attributes)."""
        st = self.stat(node)
        return sum(bit for bit in (4, 2, 1) if permitted(st, who, bit)), st

    # ----- writes ----------------------------------------------------------------
    def write(self, node: Node, who: Identity, offset: int, data, stable: int):
        """pwrite ``data`` at ``offset``; UNSTABLE data is left to COMMIT (the group committer),
        DATA_SYNC / FILE_SYNC are synced here.  On the event loop (``inline_active``) only an
        UNSTABLE write that needs no disk read raises nothing (see ``_begin_inline_write``)."""
        if node.is_dir:
            raise OSError(errno.EISDIR, "is a directory")
        if not node.is_reg:
            raise OSError(errno.EINVAL, "not a regular file")
        fd = node.data_fd(writable=True)
        pre = os.fstat(fd)
        if pre.st_nlink == 0:
            self._cache.drop(node)
            raise StaleHandle("object deleted")
        _require(pre, who, 2, owner_override=True)
        started = self._begin_inline_write(fd, offset, len(data), stable, pre.st_size) if inline_active() else None
        if pre.st_mode & SETID_BITS and len(data):  # as the kernel does for a caller without CAP_FSETID
            drop_setid(fd, pre, who)
        if self.usage.quota_bytes is not None:
            self.usage.check_growth(unallocated_bytes(fd, offset, len(data), pre.st_size), may_scan=started is None)
        written = os.pwrite(fd, data, offset)
        while written < len(data):
            more = os.pwrite(fd, data[written:], offset + written)
            if more == 0:
                raise OSError(errno.ENOSPC, "short write")
            written += more
        if stable == 2:
            os.fsync(fd)
        elif stable == 1:
            os.fdatasync(fd)
        else:
            self.committer.mark_dirty(node, offset, len(data))
        post = os.fstat(fd)
        self.usage.add(charged_bytes(post) - charged_bytes(pre))
        if started is not None:
            self._end_inline_write(started)
        return pre, post

    def _begin_inline_write(self, fd: int, offset: int, length: int, stable: int, size: int) -> tuple[float, int]:
        """Before a WRITE on the event loop: WouldBlock unless it is an UNSTABLE page-cache write.

        Buffered ``pwritev2(RWF_NOWAIT)`` is refused by ext4 (EOPNOTSUPP), so the kernel cannot be
        asked; what is checked beforehand: DATA_SYNC / FILE_SYNC (they wait for the disk), a first
        usage scan (``check_growth(may_scan=False)``, only when the write allocates: an overwrite
        of allocated blocks never needs the usage), and a partial page at either end of the range that is inside the file
        but not in the page cache (the kernel would read it from disk first).  What cannot be
        foreseen (dirty-page throttling, a journal wait) is seen afterwards: a write that slept in
        the kernel and took over INLINE_CHANGE_MAX_BLOCKED_SECONDS sends this export's writes to
        the thread pool for INLINE_CHANGE_PAUSE_SECONDS (``_end_inline_write``).
        Returns (start time, voluntary context switches) for ``_end_inline_write``."""
        if stable:
            raise WouldBlock("a stable write waits for the disk")
        now = time.monotonic()
        if now < self._inline_writes_paused_until:
            raise WouldBlock("inline writes paused after one waited")
        end = offset + length
        if (offset & _PAGE_MASK and offset < size and not data_cached(fd, offset, 1)) or \
                (end & _PAGE_MASK and end - 1 < size and not data_cached(fd, end - 1, 1)):
            raise WouldBlock("a partial page to write is not in the page cache")
        return now, resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw

    def _end_inline_write(self, started: tuple[float, int]) -> None:
        elapsed = time.monotonic() - started[0]
        if elapsed > INLINE_CHANGE_MAX_BLOCKED_SECONDS and resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw != started[1]:
            self.slow_inline_writes += 1
            self._inline_writes_paused_until = time.monotonic() + INLINE_CHANGE_PAUSE_SECONDS
            log.info("export %s: an inline write blocked and took %.1f ms; writes go to the thread pool "
                     "for %.0f s", self.directory, elapsed * 1000, INLINE_CHANGE_PAUSE_SECONDS)

    def commit_ticket(self, node: Node | None = None) -> int | None:
        if node is not None and self.committer.other_writers:
            self.committer.include(node)  # another worker process may hold its unstable data
        return self.committer.ticket()

    def setattr(self, node: Node, who: Identity, changes: SetAttributes, guard_ctime_ns: int | None,
                pre: os.stat_result | None = None):
        """-> (attributes before, after); ``pre``: attributes the caller just read."""
        if pre is None:
            pre = self.stat(node)
        if guard_ctime_ns is not None and pre.st_ctime_ns != guard_ctime_ns:
            raise OSError(errno.EPERM, "guard ctime mismatch")  # mapped to NOT_SYNC by the caller
        if _is_noop(changes, pre):
            self._apply(node, who, changes, pre)  # permission checks only
            return pre, pre
        started = None
        if inline_active():
            if changes.size is not None and changes.size != pre.st_size:
                raise WouldBlock("a size change may free or zero many blocks")
            started = self._begin_inline_change()
        try:
            self._apply(node, who, changes, pre)
        finally:
            self._end_inline_change(started)
        return pre, self.stat(node)

    def _apply(self, node: Node, who: Identity, changes: SetAttributes, st: os.stat_result) -> None:
        if changes.size is not None:
            if node.is_dir:
                raise OSError(errno.EISDIR, "is a directory")
            if not node.is_reg:
                raise OSError(errno.EINVAL, "not a regular file")
            _require(st, who, 2, owner_override=True)
            if st.st_mode & SETID_BITS:  # as truncate(2), even to the current size
                drop_setid(node.data_fd(writable=True), st, who)
            if changes.size != st.st_size:  # a size extension is sparse: no quota check
                fd = node.data_fd(writable=True)
                os.ftruncate(fd, changes.size)
                self.usage.add(charged_bytes(os.fstat(fd)) - charged_bytes(st))
        with acting_as(who):
            if changes.mode is not None and not stat.S_ISLNK(node.mode):
                os.chmod(node.proc_path, changes.mode & 0o7777)
            if changes.uid is not None or changes.gid is not None:
                uid = -1 if changes.uid is None else changes.uid
                gid = -1 if changes.gid is None else changes.gid
                os.chown(node.proc_path, uid, gid, follow_symlinks=not stat.S_ISLNK(node.mode))
            if (changes.atime is not None or changes.mtime is not None) and not stat.S_ISLNK(node.mode):
                set_times(node.proc_path, changes.atime, changes.mtime)

    # ----- namespace changes ---------------------------------------------------------
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
        now = time.monotonic()
        if now < self._inline_changes_paused_until:
            raise WouldBlock("inline changes paused after one waited")
        return now, resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw

    def _end_inline_change(self, started: tuple[float, int] | None) -> None:
        """A change that ran inline blocked (slept in the kernel) and took too long:
        run this export's changes in the thread pool for a while."""
        if started is None:
            return
        elapsed = time.monotonic() - started[0]
        if elapsed > INLINE_CHANGE_MAX_BLOCKED_SECONDS and resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw != started[1]:
            self.slow_inline_changes += 1
            self._inline_changes_paused_until = time.monotonic() + INLINE_CHANGE_PAUSE_SECONDS
            log.info("export %s: an inline change blocked and took %.1f ms; changes go to the thread pool "
                     "for %.0f s", self.directory, elapsed * 1000, INLINE_CHANGE_PAUSE_SECONDS)

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
            fd = os.open(name, _O_PATH, dir_fd=directory.fd)
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
            fd = os.open(name, _O_PATH, dir_fd=directory.fd)
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
            fd = os.open(name, _O_PATH, dir_fd=directory.fd)
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
            fd = os.open(name, _O_PATH, dir_fd=directory.fd)
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
            fd = os.open(name, _O_PATH, dir_fd=directory.fd)
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
        fd = open_cached(directory.fd, name, _O_PATH)
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

    # ----- directory listing -------------------------------------------------------
    def list_directory(self, directory: Node, who: Identity, cookie: int) -> list[DirEntry]:
        """Entries after ``cookie`` (0 = from the start), ordered by cookie."""
        if not directory.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        if inline_active():
            raise WouldBlock("directory listing")
        st = self.stat(directory)
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_nlink)
        with self._listings_lock:
            cached = self._listings.get(directory.handle)
        if cookie == 0 or cached is None or cached[0] != key:
            with acting_as(who):
                cookies, entries = self._read_listing(directory)
            with self._listings_lock:
                self._listings[directory.handle] = (key, cookies, entries)
                while len(self._listings) > LISTING_CACHE_SIZE:
                    self._listings.popitem(last=False)
        else:  # read for whichever caller came first: this one must be allowed to read it too
            with acting_as(who):
                os.close(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory.fd))
            _, cookies, entries = cached
        return entries[bisect.bisect_right(cookies, cookie) :] if cookie else entries

    def _read_listing(self, directory: Node) -> tuple[list[int], list[DirEntry]]:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory.fd)
        try:
            with os.scandir(fd) as scan:
                raw = sorted((name_cookie(entry.name), entry.name, entry.inode()) for entry in scan)
        finally:
            os.close(fd)
        entries: list[DirEntry] = []
        previous = 0
        for cookie, name, ino in raw:
            cookie = max(cookie, previous + 1)  # astronomically rare hash collision
            entries.append(DirEntry(cookie, name, ino))
            previous = cookie
        return [entry.cookie for entry in entries], entries

    def entry_node(self, directory: Node, name: str, who: Identity) -> tuple[bytes, os.stat_result]:
        """Handle and attributes of a listed name (READDIRPLUS), without caching a node."""
        with acting_as(who):
            st = os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
            if self.path_table is None:
                return KERNEL_KIND + kernel_handles.handle_of(directory.fd, name), st
        return PATH_KIND + self.path_table.handle_for(self.export_id, self._child_path(directory, name), st.st_ino), st

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
