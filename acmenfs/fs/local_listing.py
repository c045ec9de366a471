"""The local backend's directory listings: READDIR entries with name-hash cookies, READDIRPLUS handles.

A mixin of ``LocalExportBackend`` (``acmenfs.fs.local``).  A listing is read once
(scandir, sorted by cookie) and kept, per directory, while the directory's
mtime/ctime/size/nlink stay the same; a caller reusing one must still be allowed to
read the directory.
"""

from __future__ import annotations

import bisect
import errno
import os

from acmenfs.fs import kernel_handles
from acmenfs.fs.backend import DirEntry
from acmenfs.fs.credentials import Identity, acting_as
from acmenfs.fs.local_common import KERNEL_KIND, PATH_KIND, name_cookie
from acmenfs.fs.nodes import Node
from acmenfs.fs.nonblocking import WouldBlock, inline_active

LISTING_CACHE_SIZE = 64


class LocalListingMixin:
    """READDIR / READDIRPLUS support of ``LocalExportBackend``."""

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
