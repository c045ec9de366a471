"""Durable, atomic small-file writes: the one way our own state files reach the disk.

Owns ``write_atomically``: the data goes to a fresh temporary file in the
target's directory, is fsynced, then renamed over the target (or, with
``replace=False``, linked to it only if the target does not exist yet) and the
directory is fsynced, so after a crash the path holds either the old content
or the whole new content, never a torn mix.  On any failure the temporary file
is removed and the old content is left as it was.  Used for the NFS handle
secret, the NFSv4 client records and the appliance's admin.token; not for client data
(that is the backend's).
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"   # a crash can leave one behind; readers of the directory skip (or remove) them


def write_atomically(path: str | Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Put ``data`` at ``path`` durably and atomically.

    ``replace=False`` never overwrites: if ``path`` exists (e.g. another process
    created it first) ``FileExistsError`` is raised and ``path`` keeps its content.
    """
    path = Path(path)
    fd, temporary = _temporary_beside(path, mode)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)   # EEXIST if someone was first; the temporary goes below
            os.unlink(temporary)
    except BaseException:
        _remove_quietly(temporary)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: str | Path) -> None:
    """Make the directory's entries (a rename, a new name) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_beside(path: Path, mode: int) -> tuple[int, str]:
    """A new, exclusively created file in ``path``'s directory (same file system: the
    rename is atomic), with a name no concurrent writer shares."""
    for _ in range(100):
        temporary = str(path.parent / f".{path.name}.{os.urandom(6).hex()}{TEMP_SUFFIX}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, mode)   # exactly ``mode``, whatever the umask
        except BaseException:
            os.close(fd)
            _remove_quietly(temporary)
            raise
        return fd, temporary
    raise FileExistsError(f"no free temporary name beside {path}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
