"""Volume-file steps of the service, each undoable, and ``Undo`` that makes a change all or nothing.

Owns the request shape of a new volume file (``VolumeSpec``, parsed from the
API's ``volume`` object), the steps that change a share's one volume file
(create under a hidden partial name, grow, chown, rename without replacing)
and how to undo each. The service runs the steps of one change inside an
``Undo``: space is claimed first (grow or allocate), the rename comes last,
the row is written after the files, and any failure undoes the steps already
done in reverse order. It must not touch the store or the exports.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, NamedTuple

from acmenfs.appliance.errors import Conflict, InvalidRequest
from acmenfs.appliance.models import parse_volume_mode, validate_name, validate_owner_id
from acmenfs.appliance.storage import (
    PARTIAL_VOLUME_PREFIX,
    create_volume_file,
    fsync_path,
    grow_volume_file,
    remove_tree,
    rename_no_replace,
    set_volume_owner,
    shrink_volume_file,
)

log = logging.getLogger("acmenfs.appliance.volumes")


class VolumeSpec(NamedTuple):
    """A validated request for a new volume file (uid/gid None: root, 0)."""

    name: str | None
    sparse: bool
    mode: int
    uid: int | None
    gid: int | None


def parse_volume_spec(volume: dict | None) -> VolumeSpec:
    """``{"name", "sparse"?, "mode"?, "uid"?, "gid"?}`` (None values count as absent)."""
    if volume is None:
        return VolumeSpec(None, True, 0o660, None, None)
    if not isinstance(volume, dict):
        raise InvalidRequest(f"volume must be an object, not {volume!r}", "invalid_request")
    unknown = set(volume) - {"name", "sparse", "mode", "uid", "gid"}
    if unknown:
        raise InvalidRequest(f"unknown volume fields: {', '.join(sorted(unknown))}", "invalid_request")
    name = validate_name(volume.get("name"), "volume name")
    sparse = volume.get("sparse", True)
    if not isinstance(sparse, bool):
        raise InvalidRequest(f"volume sparse must be true or false, not {sparse!r}", "invalid_request")
    return VolumeSpec(
        name, sparse, parse_volume_mode(volume.get("mode", "0660")),
        validate_owner_id(volume.get("uid"), "volume uid"), validate_owner_id(volume.get("gid"), "volume gid"),
    )


class Undo:
    """Collects how to undo each step done; on an exception undoes them in reverse, then re-raises.

    An undo step that fails is logged and the others still run: the original
    error is what the caller sees.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple]] = []

    def add(self, step: Callable[..., Any], *arguments: Any) -> None:
        self._steps.append((step, arguments))

    def __enter__(self) -> "Undo":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            for step, arguments in reversed(self._steps):
                try:
                    step(*arguments)
                except Exception:
                    log.exception("could not undo %s%r after %s", step.__name__, arguments, exc_type.__name__)
        return False


def require_free_name(directory: Path, name: str) -> None:
    if os.path.lexists(directory / name):
        raise Conflict(f"the share already holds a file named {name!r}", "name_conflict")


def create_volume_in_share(directory: Path, spec: VolumeSpec, size: int, undo: Undo) -> None:
    """Make a complete volume file under a hidden partial name, then rename it to its name (never replacing)."""
    partial = directory / f"{PARTIAL_VOLUME_PREFIX}{uuid.uuid4().hex}"
    try:
        create_volume_file(partial, size, spec.sparse, spec.mode, spec.uid or 0, spec.gid or 0)
        rename_no_replace(partial, directory / spec.name)
    except FileExistsError as exc:
        remove_tree(partial)
        raise Conflict(f"the share already holds a file named {spec.name!r}", "name_conflict") from exc
    except BaseException:
        remove_tree(partial)
        raise
    undo.add(remove_tree, directory / spec.name)


def grow_volume(path: Path, size: int, sparse: bool, undo: Undo) -> None:
    """Grow to ``size`` (a failed grow undoes itself); the undo cuts the file back."""
    previous = grow_volume_file(path, size, sparse)
    if size > previous:
        undo.add(shrink_volume_file, path, previous)


def change_owner(path: Path, uid: int | None, gid: int | None, undo: Undo) -> None:
    if uid is None and gid is None:
        return
    info = os.lstat(path)
    set_volume_owner(path, uid, gid)
    undo.add(set_volume_owner, path, info.st_uid, info.st_gid)


def rename_volume(directory: Path, old_name: str, new_name: str, undo: Undo) -> None:
    """Rename without ever replacing a file (409 name_conflict); the undo renames it back."""
    if new_name == old_name:
        return
    try:
        rename_no_replace(directory / old_name, directory / new_name)
    except FileExistsError as exc:
        raise Conflict(f"the share already holds a file named {new_name!r}", "name_conflict") from exc
    undo.add(rename_no_replace, directory / new_name, directory / old_name)


def adopt_volume(directory: Path, old_name: str | None, new_name: str | None, size: int, sparse: bool) -> None:
    """In a staging copy (discarded whole on failure): rename the volume file to ``new_name``, grow it."""
    if old_name is None or new_name is None or not (directory / old_name).exists():
        return
    if new_name != old_name:
        require_free_name(directory, new_name)
        os.rename(directory / old_name, directory / new_name)
        fsync_path(directory)
    grow_volume_file(directory / new_name, size, sparse)
