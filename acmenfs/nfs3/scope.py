"""Per-call authorisation and resolution: from (call, file handle) to (export, backend, node, identity).

Owns ``NfsState``: the pieces every procedure shares (the live ``ExportTable``,
one ``LocalExportBackend`` per export opened lazily and closed when the export
is removed, the handle codec, the group committer) and ``scope``/``root_scope``,
which apply the rules in order: handle MAC (BADHANDLE) -> export still present
(STALE) -> client rule for the caller's address (ACCES) -> squash -> read-only
export or rule (ROFS for modifying calls) -> backend node (STALE/BADHANDLE).
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
from acmenfs.nfs3.xdr import encode_post_op_attr, encode_wcc_data

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
        return encode_post_op_attr(st, self.fsid, self.backend.root_dev)

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
        self._rules: dict[tuple[bytes, str], tuple[Export, ClientRule | None]] = {}
        self._identities: dict[tuple, Identity] = {}
        exports.subscribe(self._export_changed)

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
            self._rules.clear()
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
        for backend in backends:
            backend.close()
        self.committer.stop()
        if self.path_table is not None:
            self.path_table.close()

    # ----- authorisation -----------------------------------------------------------------
    def rule_for(self, export: Export, address: str) -> ClientRule | None:
        """The export's rule for a client address (cached per export object and address)."""
        key = (export.export_id, address)
        cached = self._rules.get(key)
        if cached is not None and cached[0] is export:
            return cached[1]
        rule = export.rule_for(address)
        if len(self._rules) > 4096:
            self._rules.clear()
        self._rules[key] = (export, rule)
        return rule

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
        rule = self.rule_for(export, ctx.client[0])
        if rule is None:
            raise NfsError(NfsStat.ACCES, f"client {ctx.client[0]} not allowed on {export.path}")
        scope = Scope(export, self.backend(export), None, self.identity_for(ctx.cred, rule), rule,  # type: ignore[arg-type]
                      int.from_bytes(export_id, "big"), self.codec)
        if write:
            scope.require_writable()
        scope.node = scope.backend.node(backend_handle)
        return scope

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
