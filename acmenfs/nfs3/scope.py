"""Per-call authorisation and resolution: from (call, file handle) to (export, backend, node, identity).

Owns ``NfsState``: the pieces every procedure shares (the live ``ExportTable``,
one ``LocalExportBackend`` per export opened lazily and closed when the export
is removed, the handle codec, the group committer) and ``scope``/``root_scope``,
which apply the rules in order: handle MAC (BADHANDLE) -> export still present
(STALE) -> client rule for the caller's address (ACCES) -> squash -> read-only
export or rule (ROFS for modifying calls) -> backend node (STALE/BADHANDLE).
What every call of one client address on one export shares (the export, its
rule, backend and fsid) is kept in a ``Route``, valid until the export table
next changes, so a call checks those rules with two dictionary lookups.
It performs no file operations itself beyond opening an export's root.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from acmenfs.fs import kernel_handles
from acmenfs.fs.backend import BadHandle, StaleHandle
from acmenfs.fs.commit import GroupCommitter
from acmenfs.fs.credentials import Identity, squash
from acmenfs.fs.local import LocalExportBackend
from acmenfs.fs.nonblocking import WouldBlock, inline, inline_active
from acmenfs.fs.nodes import Node
from acmenfs.fs.pathtable import PathTable
from acmenfs.fs.quota import UsageCounter
from acmenfs.nfs3.const import NfsStat
from acmenfs.nfs3.errors import NfsError
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.handles import HandleCodec, load_or_create_secret
from acmenfs.nfs3.xdr import NO_ATTRS, encode_wcc_data, word_and_fattr3

log = logging.getLogger("acmenfs.nfs3")
AUTH_SYS = 1


@dataclass(slots=True)
class Scope:
    """Everything a procedure needs about one handle in one call."""

    export: Export
    backend: LocalExportBackend
    node: Node
    who: Identity
    rule: ClientRule
    fsid: int
    codec: HandleCodec

    @property
    def writable(self) -> bool:
        return not self.export.read_only and self.rule.access == "rw"

    def require_writable(self) -> None:
        if not self.writable:
            raise NfsError(NfsStat.ROFS, f"export {self.export.path} is read-only for this client")

    def post_op_attr(self, st: os.stat_result | None) -> bytes:
        if st is None:
            return NO_ATTRS
        return word_and_fattr3(1, st, self.fsid, self.backend.root_dev)

    def wcc(self, pre: os.stat_result | None, post: os.stat_result | None) -> bytes:
        return encode_wcc_data(pre, post, self.fsid, self.backend.root_dev)

    def attrs_of(self, node: Node) -> bytes:
        """post_op_attr of another node of the same export (absent if it vanished)."""
        try:
            return self.post_op_attr(self.backend.stat(node))
        except (OSError, StaleHandle):
            return self.post_op_attr(None)

    def fh_for(self, backend_handle: bytes) -> bytes:
        return self.codec.encode(self.export.export_id, backend_handle)


class Route:
    """The export, client rule, backend and fsid shared by the calls of one client address on
    one export; valid while ``generation`` is the state's, i.e. until the export table changes.
    ``last_identity`` is (credential, identity) of the latest caller (clients repeat one credential)."""

    __slots__ = ("generation", "export", "rule", "backend", "fsid", "writable", "last_identity")

    def __init__(self, generation: int, export: Export, rule: ClientRule, backend: LocalExportBackend) -> None:
        self.generation = generation
        self.export = export
        self.rule = rule
        self.backend = backend
        self.fsid = int.from_bytes(export.export_id, "big")
        self.writable = not export.read_only and rule.access == "rw"
        self.last_identity: tuple[object, Identity | None] = (None, None)


class NfsState:
    def __init__(self, exports: ExportTable, state_dir: str | Path, *, use_kernel_handles: bool | None = None) -> None:
        self.exports = exports
        self.executor = None  # the server's thread pool, for async procedures (None: asyncio's default)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.codec = HandleCodec(load_or_create_secret(self.state_dir))
        self.committer = GroupCommitter()
        if use_kernel_handles is None:
            use_kernel_handles = kernel_handles.available(str(self.state_dir))
        self.path_table = None if use_kernel_handles else PathTable(self.state_dir / "handles.sqlite3")
        self._backends: dict[bytes, tuple[Export, LocalExportBackend]] = {}
        self._backends_lock = threading.Lock()
        self._identities: dict[tuple, Identity] = {}
        self._routes: dict[tuple[bytes, str], Route] = {}
        self._generation = 0  # bumped on every export table change: older Routes are not used
        exports.subscribe(self._export_changed)

    @property
    def generation(self) -> int:
        """Bumped on every export table change (read as ``_generation`` by ``_readaccel.c``)."""
        return self._generation

    # ----- exports -------------------------------------------------------------------
    def _export_changed(self, event: str, export: Export) -> None:
        """Follow the export table: a removed export, or one whose directory is now
        another object (a revert swaps the share's directory), loses its backend,
        reopened lazily on the next call, so handles of the old tree answer STALE.
        A re-added export still on the same directory keeps its descriptors, takes
        the new quota and rescans its usage (the data may have changed meanwhile)."""
        retired = None
        with self._backends_lock:
            entry = self._backends.get(export.export_id)
            if entry is not None:
                previous, backend = entry
                if (event == "remove" or previous.directory != export.directory
                        or not backend.serves_root(export.directory)):
                    del self._backends[export.export_id]
                    retired = backend
                else:
                    backend.usage.invalidate(export.quota_bytes)
                    self._backends[export.export_id] = (export, backend)
            self._generation += 1
            self._routes.clear()
        if retired is not None:
            log.info("export %s: %s, closing its open objects", export.path,
                     "removed" if event == "remove" else "directory replaced")
            retired.close()

    def backend(self, export: Export) -> LocalExportBackend:
        entry = self._backends.get(export.export_id)
        if entry is not None and entry[0].directory == export.directory:
            return entry[1]
        if inline_active():
            raise WouldBlock("export not opened yet")
        with self._backends_lock:
            entry = self._backends.get(export.export_id)
            if entry is None or entry[0].directory != export.directory:
                usage = UsageCounter(export.directory, export.quota_bytes)
                backend = LocalExportBackend(
                    export.export_id, export.directory, self.committer, usage, self.path_table
                )
                entry = (export, backend)
                self._backends[export.export_id] = entry
            return entry[1]

    def usage(self, path: str) -> int:
        export = self.exports.get(path)
        if export is None:
            raise KeyError(f"no export at {path}")
        return self.backend(export).usage.used

    def close(self) -> None:
        with self._backends_lock:
            backends = [backend for _, backend in self._backends.values()]
            self._backends.clear()
            self._generation += 1
            self._routes.clear()
        for backend in backends:
            backend.close()
        self.committer.stop()
        if self.path_table is not None:
            self.path_table.close()

    # ----- authorisation -----------------------------------------------------------------
    def rule_for(self, export: Export, address: str) -> ClientRule | None:
        """The export's rule for a client address (NFS calls keep theirs in a ``Route``)."""
        return export.rule_for(address)

    def identity_for(self, cred, rule: ClientRule) -> Identity:
        key = (cred, rule)
        who = self._identities.get(key)
        if who is None:
            if cred.flavor == AUTH_SYS:
                who = squash(cred.uid, cred.gid, tuple(cred.gids), rule.squash, rule.anon_uid, rule.anon_gid)
            else:
                who = Identity(rule.anon_uid, rule.anon_gid, ())
            if len(self._identities) > 4096:
                self._identities.clear()
            self._identities[key] = who
        return who

    def scope(self, ctx, fh: bytes, *, write: bool = False) -> Scope:
        try:
            export_id, backend_handle = self.codec.decode(fh)
        except BadHandle as exc:
            raise NfsError(NfsStat.BADHANDLE, str(exc)) from exc
        export = self.exports.by_id(export_id)
        if export is None:
            raise NfsError(NfsStat.STALE, "export no longer exists")
        route = self._routes.get((export_id, ctx.client[0]))
        if route is None or route.export is not export or route.generation != self._generation:
            route = self._route(export, ctx.client[0])
        cred = ctx.cred
        last = route.last_identity
        if last[0] is cred:
            who = last[1]
        else:
            who = self.identity_for(cred, route.rule)
            route.last_identity = (cred, who)
        if write and not route.writable:
            raise NfsError(NfsStat.ROFS, f"export {export.path} is read-only for this client")
        backend = route.backend
        return Scope(export, backend, backend.node(backend_handle), who, route.rule, route.fsid, self.codec)

    def _route(self, export: Export, address: str) -> Route:
        """A new Route (ACCES if no rule admits ``address``); WouldBlock inline if the export is not open yet."""
        generation = self._generation  # read first: a change meanwhile makes this Route stale at once
        rule = self.rule_for(export, address)
        if rule is None:
            raise NfsError(NfsStat.ACCES, f"client {address} not allowed on {export.path}")
        route = Route(generation, export, rule, self.backend(export))
        if len(self._routes) > 4096:
            self._routes.clear()
        self._routes[(export.export_id, address)] = route
        return route

    async def scope_async(self, ctx, fh: bytes, *, write: bool = False) -> Scope:
        """``scope`` for async procedures: inline when cached, else in the thread pool."""
        try:
            with inline():
                return self.scope(ctx, fh, write=write)
        except WouldBlock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, lambda: self.scope(ctx, fh, write=write))

    def same_export(self, first: Scope, ctx, fh: bytes, *, write: bool = False) -> Scope:
        """Scope of a second handle of one call (RENAME, LINK): XDEV across exports."""
        second = self.scope(ctx, fh, write=write)
        if second.export.export_id != first.export.export_id:
            raise NfsError(NfsStat.XDEV, "objects in different exports")
        return second
