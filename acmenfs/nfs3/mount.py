"""MOUNT v3 (RFC 1813 appendix I): NULL, MNT, DUMP, UMNT, UMNTALL, EXPORT.

Owns the mount list (who mounted what, for DUMP; informational only, as in
every NFSv3 server) and the MNT decision: the export is found by its path or,
for a directory below it, by the longest export path that prefixes the dirpath
(``mountpath``); client not in the export's rules -> MNT3ERR_ACCES; the rest of
the path is resolved inside the export as the squashed caller (see ``mountpath``
for "..", symbolic links and errors); otherwise that directory's file handle and
the flavors we accept (AUTH_SYS, AUTH_NONE).  No sockets here.
"""

from __future__ import annotations

import logging
import threading

from acmenfs.nfs3.const import MNTPATHLEN, MountProc, MountStat
from acmenfs.nfs3.mountpath import MountRefused, find_export, resolve_in_export
from acmenfs.nfs3.scope import NfsState
from acmenfs.nfs3.xdr import FALSE, TRUE, UINT32, encode_fh, encode_opaque
from acmenfs.oncrpc.xdr import Unpacker

log = logging.getLogger("acmenfs.mount")
AUTH_FLAVORS = (1, 0)  # AUTH_SYS, AUTH_NONE


def normalize_dirpath(path: str) -> str:
    return path.rstrip("/") or "/"


class MountService:
    def __init__(self, state: NfsState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._mounts: set[tuple[str, str]] = set()

    def null(self, ctx, args: Unpacker) -> bytes:
        return b""

    def mnt(self, ctx, args: Unpacker) -> bytes:
        path = normalize_dirpath(args.unpack_string(MNTPATHLEN))
        try:
            fh = self._handle_for(ctx, path)
        except MountRefused as refused:
            log.info("MNT %s from %s: %s", path, ctx.client[0], refused)
            return UINT32.pack(refused.status)
        with self._lock:
            self._mounts.add((ctx.client[0], path))
        flavors = UINT32.pack(len(AUTH_FLAVORS)) + b"".join(UINT32.pack(f) for f in AUTH_FLAVORS)
        return UINT32.pack(MountStat.OK) + encode_fh(fh) + flavors

    def _handle_for(self, ctx, path: str) -> bytes:
        """The file handle MNT answers for ``path``; MountRefused if it must not."""
        export, below = find_export(self.state.exports, path)
        rule = self.state.rule_for(export, ctx.client[0])
        if rule is None:
            raise MountRefused(MountStat.ACCES, "client not allowed")
        try:
            backend = self.state.backend(export)
        except OSError as exc:
            log.error("MNT %s: cannot open %s: %s", path, export.directory, exc)
            raise MountRefused(MountStat.NOENT if isinstance(exc, FileNotFoundError) else MountStat.IO,
                               str(exc)) from exc
        handle = backend.root_handle
        if below:
            handle = resolve_in_export(backend, self.state.identity_for(ctx.cred, rule), below).handle
        return self.state.codec.encode(export.export_id, handle)

    def dump(self, ctx, args: Unpacker) -> bytes:
        with self._lock:
            mounts = sorted(self._mounts)
        out = bytearray()
        for host, path in mounts:
            out += TRUE + encode_opaque(host.encode()) + encode_opaque(path.encode())
        return bytes(out + FALSE)

    def umnt(self, ctx, args: Unpacker) -> bytes:
        path = normalize_dirpath(args.unpack_string(MNTPATHLEN))
        with self._lock:
            self._mounts.discard((ctx.client[0], path))
        return b""

    def umntall(self, ctx, args: Unpacker) -> bytes:
        with self._lock:
            self._mounts = {entry for entry in self._mounts if entry[0] != ctx.client[0]}
        return b""

    def export(self, ctx, args: Unpacker) -> bytes:
        out = bytearray()
        for export in self.state.exports.list():
            out += TRUE + encode_opaque(export.path.encode())
            for rule in export.rules:
                out += TRUE + encode_opaque(rule.client.encode())
            out += FALSE
        return bytes(out + FALSE)

    def handlers(self) -> dict:
        return {
            MountProc.NULL: self.null,
            MountProc.MNT: self.mnt,
            MountProc.DUMP: self.dump,
            MountProc.UMNT: self.umnt,
            MountProc.UMNTALL: self.umntall,
            MountProc.EXPORT: self.export,
        }
