"""The local backend's data operations: READ, WRITE, COMMIT tickets, ACCESS and SETATTR.

A mixin of ``LocalExportBackend`` (``acmenfs.fs.local``), which owns the node cache,
the usage counter and the group committer these methods use.  On the event loop
(``nonblocking.inline``) a small READ is copied with one preadv2(RWF_NOWAIT), a larger
one is handed back as the node for sendfile, and only UNSTABLE page-cache WRITEs run
(see ``_begin_inline_write``); anything that may wait for the disk raises WouldBlock.
"""

from __future__ import annotations

import errno
import os
import stat

from acmenfs.fs.backend import SetAttributes, StaleHandle
from acmenfs.fs.credentials import Identity, acting_as
from acmenfs.fs.local_common import is_noop_change, permitted, require, set_times
from acmenfs.fs.nodes import Node
from acmenfs.fs.nonblocking import WouldBlock, data_cached, inline_active
from acmenfs.fs.quota import charged_bytes
from acmenfs.fs.setid import SETID_BITS, drop_setid

INLINE_COPY_READ_BYTES = 64 * 1024  # inline READs up to this size are copied, larger ones sent with sendfile
_PAGE_MASK = os.sysconf("SC_PAGESIZE") - 1  # a WRITE covering part of a page: the kernel must read it first


class LocalDataMixin:
    """READ / WRITE / COMMIT / ACCESS / SETATTR of ``LocalExportBackend``."""

    def read(self, node: Node, who: Identity, offset: int, count: int):
        if node.is_dir:
            raise OSError(errno.EISDIR, "is a directory")
        if not node.is_reg:
            raise OSError(errno.EINVAL, "not a regular file")
        st = self.stat(node)
        require(st, who, 4, owner_override=True)
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
        require(pre, who, 2, owner_override=True)
        length = len(data)
        started = self._begin_inline_write(fd, offset, length, stable, pre.st_size) if inline_active() else None
        if pre.st_mode & SETID_BITS and length:  # as the kernel does for a caller without CAP_FSETID
            drop_setid(fd, pre, who)
        usage = self.usage
        if usage.quota_bytes is not None:
            usage.check_write(fd, offset, length, pre, may_scan=started is None)
        written = os.pwrite(fd, data, offset)
        while written < length:
            more = os.pwrite(fd, data[written:], offset + written)
            if more == 0:
                raise OSError(errno.ENOSPC, "short write")
            written += more
        if not stable:
            self.committer.mark_dirty(node, offset, length)
        elif stable == 2:
            os.fsync(fd)
        else:
            os.fdatasync(fd)
        post = os.fstat(fd)
        if post.st_blocks != pre.st_blocks or post.st_size != pre.st_size:  # an overwrite charges nothing
            usage.add(charged_bytes(post) - charged_bytes(pre))
        if started is not None:
            self.inline_writes.finish(started, self.directory)
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
        the thread pool for a while (``_end_inline_write``, ``local_common.next_pause``).
        Returns (start time, voluntary context switches) for ``_end_inline_write``."""
        if stable:
            raise WouldBlock("a stable write waits for the disk")
        started = self.inline_writes.start()
        end = offset + length
        if (offset & _PAGE_MASK and offset < size and not data_cached(fd, offset, 1)) or \
                (end & _PAGE_MASK and end - 1 < size and not data_cached(fd, end - 1, 1)):
            raise WouldBlock("a partial page to write is not in the page cache")
        return started

    def _end_inline_write(self, started: tuple[float, int]) -> None:
        """After a WRITE on the event loop (``write`` calls ``inline_writes.finish`` itself)."""
        self.inline_writes.finish(started, self.directory)

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
        if is_noop_change(changes, pre):
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
            require(st, who, 2, owner_override=True)
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
