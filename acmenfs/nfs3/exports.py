"""The live export table: which local directories the NFS server offers, to whom.

Owns ``Export`` (one exported directory with its client rules and quota),
``ClientRule`` (who may mount it, read-only or read-write, with which squash)
and ``ExportTable`` (thread-safe, changeable while the server runs: the
appliance adds an export when it creates a share and removes it when it deletes
one). It does no file or network I/O; MOUNT and NFS consult it on every call.

Reopening is explicit: every export carries a ``generation``.  Putting an
export at a path that already holds one (``add``, even with an equal export)
or calling ``reopen`` gives it the next generation, and each subscriber reopens
what it holds of that export (a revert swaps the directory under the same path,
so descriptors and usage figures of the old tree must go).  A copy of the table
in another process (a worker) follows with ``sync``, which takes generations as
they come and re-adds exactly the exports whose generation (or any field)
changed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from dataclasses import dataclass, field, replace
from typing import Iterable, Literal

Access = Literal["rw", "ro"]
Squash = Literal["root", "all", "none"]

NOBODY = 65534


@dataclass(frozen=True, slots=True)
class ClientRule:
    """One client (host IP, CIDR, or ``*``) allowed to use an export."""

    client: str
    access: Access = "rw"
    squash: Squash = "root"
    anon_uid: int = NOBODY
    anon_gid: int = NOBODY

    def __post_init__(self) -> None:
        if self.access not in ("rw", "ro"):
            raise ValueError(f"access must be 'rw' or 'ro', not {self.access!r}")
        if self.squash not in ("root", "all", "none"):
            raise ValueError(f"squash must be 'root', 'all' or 'none', not {self.squash!r}")
        if self.client != "*":
            try:
                ipaddress.ip_network(self.client, strict=False)
            except ValueError as exc:
                raise ValueError(f"client must be an IP address, a CIDR or '*': {self.client!r}") from exc

    def matches(self, address: str) -> bool:
        if self.client == "*":
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        network = ipaddress.ip_network(self.client, strict=False)
        return ip.version == network.version and ip in network


def export_id_for(path: str) -> bytes:
    """A stable 8-byte id for an export path (goes into every file handle)."""
    return hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class Export:
    """A local directory offered at ``path`` (the MOUNT dirpath, e.g. ``/shares/<uuid>``)."""

    path: str
    directory: str
    rules: tuple[ClientRule, ...] = (ClientRule("*"),)
    read_only: bool = False
    quota_bytes: int | None = None
    export_id: bytes = field(default=b"")
    generation: int = 0   # bumped by every reopen (see ExportTable); part of equality


    def __post_init__(self) -> None:
        if not self.path.startswith("/") or "\0" in self.path:
            raise ValueError(f"export path must be absolute: {self.path!r}")
        if not self.export_id:
            object.__setattr__(self, "export_id", export_id_for(self.path))
        if len(self.export_id) != 8:
            raise ValueError("export_id must be 8 bytes")
        if not isinstance(self.generation, int) or self.generation < 0:
            raise ValueError(f"generation must be a non-negative integer, not {self.generation!r}")

    def rule_for(self, address: str) -> ClientRule | None:
        """The first rule matching a client address, or None (access denied)."""
        for rule in self.rules:
            if rule.matches(address):
                return rule
        return None


class ExportTable:
    """Thread-safe table of exports keyed by path and by export id.

    Subscribers hear ``("add", export)`` for a new export and for every reopen
    (the export then has a higher ``generation`` than the one it replaced) and
    ``("remove", export)`` when one goes away.
    """

    def __init__(self, exports: Iterable[Export] = ()) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[str, Export] = {}
        self._by_id: dict[bytes, Export] = {}
        self._listeners: list = []
        for export in exports:
            self.add(export)

    def add(self, export: Export) -> Export:
        """Add the export at ``export.path``, or replace the one there, which is a reopen:
        the stored export gets the next generation.  Returns the export as stored."""
        with self._lock:
            old = self._by_path.get(export.path)
            if old is not None and export.generation <= old.generation:
                export = replace(export, generation=old.generation + 1)
            self._put(export)
        self._notify("add", export)
        return export

    def reopen(self, path: str) -> Export:
        """The same export at ``path`` with the next generation (its backend is reopened)."""
        with self._lock:
            old = self._by_path.get(path)
            if old is None:
                raise KeyError(f"no export at {path!r}")
            export = replace(old, generation=old.generation + 1)
            self._put(export)
        self._notify("add", export)
        return export

    def sync(self, exports: Iterable[Export]) -> None:
        """Hold exactly ``exports`` (another table's ``list()``), generations as given:
        exports equal to the ones held are left alone (no rescans); one whose generation
        or any other field changed is re-added, which reopens it here too."""
        wanted = {export.path: export for export in exports}
        for export in self.list():
            if export.path not in wanted:
                self.remove(export.path)
        for export in wanted.values():
            with self._lock:
                if self._by_path.get(export.path) == export:
                    continue
                self._put(export)
            self._notify("add", export)

    def _put(self, export: Export) -> None:
        """Store ``export`` in place of whatever is at its path.  Caller holds ``_lock``."""
        old = self._by_path.get(export.path)
        clash = self._by_id.get(export.export_id)
        if clash is not None and clash.path != export.path:
            raise ValueError(f"export id clash between {clash.path} and {export.path}")
        if old is not None:
            self._by_id.pop(old.export_id, None)
        self._by_path[export.path] = export
        self._by_id[export.export_id] = export

    def remove(self, path: str) -> Export | None:
        with self._lock:
            export = self._by_path.pop(path, None)
            if export is not None:
                self._by_id.pop(export.export_id, None)
        if export is not None:
            self._notify("remove", export)
        return export

    def get(self, path: str) -> Export | None:
        return self._by_path.get(path)

    def by_id(self, export_id: bytes) -> Export | None:
        return self._by_id.get(export_id)

    def list(self) -> list[Export]:
        with self._lock:
            return sorted(self._by_path.values(), key=lambda e: e.path)

    def subscribe(self, callback) -> None:
        """``callback(event, export)`` after every add or reopen ("add") and remove ("remove")."""
        self._listeners.append(callback)

    def _notify(self, event: str, export: Export) -> None:
        for callback in list(self._listeners):
            callback(event, export)
