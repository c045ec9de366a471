"""Open objects of an export and their LRU cache (the fd cache).

Owns ``Node`` (one file-system object the server has open: its backend handle,
an O_PATH descriptor used for fstat and as a directory fd, and lazily a data
descriptor for READ/WRITE; a file the server just created keeps the one
read-write descriptor it was created with for both) and ``NodeCache`` (bounded LRU keyed by handle, with
an index by (st_dev, st_ino) so REMOVE/RENAME can drop the entry of the name
they destroy: a cached descriptor of an unlinked file pins its page cache).

Descriptors close when the last reference to a Node goes (``__del__``), never
while a reply that sends from it (sendfile) or the group committer still holds
it.  It makes no decisions about permissions or NFS.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict


class Node:
    __slots__ = ("handle", "fd", "mode", "dev", "ino", "is_dir", "is_reg", "_data_fd", "_data_writable", "_retired",
                 "_lock", "__weakref__")

    def __init__(self, handle: bytes, fd: int, st: os.stat_result, data_fd: int = -1) -> None:
        self.handle = handle
        self.fd = fd
        self.mode = st.st_mode
        self.dev = st.st_dev
        self.ino = st.st_ino
        # An inode never changes its type: plain attributes, read on every call, not properties.
        self.is_dir = stat.S_ISDIR(st.st_mode)
        self.is_reg = stat.S_ISREG(st.st_mode)
        self._data_fd = data_fd
        self._data_writable = data_fd >= 0
        self._retired: list[int] = []
        self._lock = threading.Lock()

    @property
    def proc_path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def data_fd(self, writable: bool = False) -> int:
        """A descriptor for pread/pwrite/sendfile (opened as the server, read-write if possible)."""
        fd = self._data_fd
        if fd >= 0 and (self._data_writable or not writable):
            return fd
        with self._lock:
            if self._data_fd >= 0 and (self._data_writable or not writable):
                return self._data_fd
            try:
                new_fd, self._data_writable = os.open(self.proc_path, os.O_RDWR | os.O_CLOEXEC), True
            except OSError:
                if writable:
                    raise
                new_fd = os.open(self.proc_path, os.O_RDONLY | os.O_CLOEXEC)
            if self._data_fd >= 0:
                self._retired.append(self._data_fd)  # a reply may still be sending from it
            self._data_fd = new_fd
            return new_fd

    def fileno(self) -> int:
        return self.data_fd()

    def __del__(self) -> None:
        for fd in {self.fd, self._data_fd, *self._retired}:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


class NodeCache:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._by_handle: OrderedDict[bytes, Node] = OrderedDict()
        self._by_inode: dict[tuple[int, int], bytes] = {}

    def get(self, handle: bytes) -> Node | None:
        node = self._by_handle.get(handle)
        if node is not None:
            try:
                self._by_handle.move_to_end(handle)
            except KeyError:
                pass
        return node

    def put(self, node: Node) -> Node:
        """Insert ``node``; if another thread inserted the same handle first, return that one."""
        with self._lock:
            existing = self._by_handle.get(node.handle)
            if existing is not None:
                return existing
            self._by_handle[node.handle] = node
            self._by_inode[(node.dev, node.ino)] = node.handle
            while len(self._by_handle) > self.capacity:
                _, evicted = self._by_handle.popitem(last=False)
                if self._by_inode.get((evicted.dev, evicted.ino)) == evicted.handle:
                    del self._by_inode[(evicted.dev, evicted.ino)]
        return node

    def by_inode(self, dev: int, ino: int) -> Node | None:
        handle = self._by_inode.get((dev, ino))
        return None if handle is None else self.get(handle)

    def drop_inode(self, dev: int, ino: int) -> None:
        with self._lock:
            handle = self._by_inode.pop((dev, ino), None)
            if handle is not None:
                self._by_handle.pop(handle, None)

    def drop(self, node: Node) -> None:
        self.drop_inode(node.dev, node.ino)
        with self._lock:
            self._by_handle.pop(node.handle, None)

    def clear(self) -> None:
        with self._lock:
            self._by_handle.clear()
            self._by_inode.clear()

    def __len__(self) -> int:
        return len(self._by_handle)
