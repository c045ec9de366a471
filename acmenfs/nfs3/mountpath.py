"""Where a MOUNT dirpath leads: an export, and a directory inside it.

Owns the decision for MNT of a path below an export (``/shares/<id>/dir``, as Linux
clients mount subdirectories): ``find_export`` picks the export whose path is the longest
whole-component prefix of the dirpath; ``resolve_in_export`` walks the rest one name at a
time with the backend's ``lookup``, acting as the caller after the export's squash, so
each step is a LOOKUP the caller could make itself and the handle it ends on is an
ordinary handle of that export (".." from it climbs to the export root and stops there).

Decisions (knfsd's mountd resolves a dirpath on the server with realpath(); we resolve it
inside the export only):
- "." and empty components are skipped (also when matching export paths); ".." goes back to the directory the walk came
  from, and ".." at the export root leaves the export: MNT3ERR_ACCES.
- A symbolic link is followed if its target is relative and, resolved from the link's
  directory, stays inside the export; an absolute target names a path in another name
  space (the client's, or the server's outside any export): MNT3ERR_ACCES.  More than
  ``MAX_SYMLINKS`` links: MNT3ERR_NOENT (realpath's ELOOP).
- A missing name is MNT3ERR_NOENT, a non-directory MNT3ERR_NOTDIR, no search permission
  MNT3ERR_ACCES, a name over 255 bytes MNT3ERR_NAMETOOLONG.
Failures are raised as ``MountRefused`` carrying the mountstat3.  No XDR here.
"""

from __future__ import annotations

import errno
import os
import stat

from acmenfs.fs.backend import BadHandle, StaleHandle
from acmenfs.fs.credentials import Identity
from acmenfs.nfs3.const import MountStat
from acmenfs.nfs3.exports import Export, ExportTable

MAX_SYMLINKS = 40
_STATUS_FOR_ERRNO = {
    errno.ENOENT: MountStat.NOENT,
    errno.ENOTDIR: MountStat.NOTDIR,
    errno.EACCES: MountStat.ACCES,
    errno.EPERM: MountStat.ACCES,
    errno.ENAMETOOLONG: MountStat.NAMETOOLONG,
    errno.ELOOP: MountStat.NOENT,
}


class MountRefused(Exception):
    """MNT cannot be granted: ``status`` is the mountstat3 to answer."""

    def __init__(self, status: MountStat, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def find_export(exports: ExportTable, path: str) -> tuple[Export, list[str]]:
    """(export, the components of ``path`` below its path); the longest export path wins."""
    if not path.startswith("/"):
        raise MountRefused(MountStat.NOENT, "not an absolute path")
    parts = [part for part in path.split("/") if part and part != "."]  # "/a/./b" is "/a/b"
    for length in range(len(parts), -1, -1):
        export = exports.get("/" + "/".join(parts[:length]))
        if export is not None:
            return export, parts[length:]
    raise MountRefused(MountStat.NOENT, "no such export")


def resolve_in_export(backend, who: Identity, components: list[str]):
    """The directory node ``components`` lead to from ``backend``'s root, as ``who``."""
    stack = [backend.node(backend.root_handle)]  # the directories walked through, root first
    pending = components[::-1]  # names still to resolve, the next one last
    links = 0
    while pending:
        if not stack[-1].is_dir:
            raise MountRefused(MountStat.NOTDIR, "a component is not a directory")
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if len(stack) == 1:
                raise MountRefused(MountStat.ACCES, "'..' above the export root")
            stack.pop()
            continue
        node, st = _lookup(backend, stack[-1], name, who)
        if not stat.S_ISLNK(st.st_mode):
            stack.append(node)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise MountRefused(MountStat.NOENT, "too many symbolic links")
        target = os.fsdecode(backend.readlink(node, who))
        if target.startswith("/"):
            raise MountRefused(MountStat.ACCES, f"symbolic link {name!r} has an absolute target")
        pending.extend(reversed(target.split("/")))
    if not stack[-1].is_dir:
        raise MountRefused(MountStat.NOTDIR, "not a directory")
    return stack[-1]


def _lookup(backend, directory, name: str, who: Identity):
    try:
        node, st, _ = backend.lookup(directory, name, who)
    except OSError as exc:
        status = _STATUS_FOR_ERRNO.get(exc.errno, MountStat.IO)
        raise MountRefused(status, f"{name!r}: {exc.strerror or exc}") from exc
    except (StaleHandle, BadHandle) as exc:
        raise MountRefused(MountStat.NOENT, f"{name!r}: {exc}") from exc
    return node, st
