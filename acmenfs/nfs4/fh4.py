"""NFSv4 file handles (nfs_fh4, at most 128 bytes): export objects and pseudo-fs directories.

Owns ``Fh4`` (a decoded handle) and ``Fh4Codec``.  An object inside an export has
exactly its NFSv3 handle (``acmenfs.nfs3.handles``: MAC'd, restart-safe, shared
with v3), so v3 and v4 agree on every handle.  A pseudo-fs directory has::

    0x50 ('P') | pseudo path, UTF-8 (1..107 bytes) | MAC (20)

keyed BLAKE2b over the version and path with the state directory's handle secret
(personalised, so a pseudo MAC can never verify as a v3 one).  Anything else is
NFS4ERR_BADHANDLE.  Whether a pseudo path still exists for a client is the
pseudo fs's business (``pseudofs``), not the codec's.  No file I/O.
"""

from __future__ import annotations

import hashlib
import hmac

from acmenfs.fs.backend import BadHandle
from acmenfs.nfs3.handles import load_or_create_secret
from acmenfs.nfs4.const import NFS4_FHSIZE, Nfs4Stat
from acmenfs.nfs4.errors import Nfs4Error

PSEUDO_VERSION = 0x50
PSEUDO_MAC_SIZE = 20
MAX_PSEUDO_PATH = NFS4_FHSIZE - 1 - PSEUDO_MAC_SIZE


class Fh4:
    """A handle this server issued: ``raw`` bytes plus what it names.

    ``pseudo_path`` is set for a pseudo-fs directory, ``export_id`` and
    ``backend_handle`` for an object of an export."""

    __slots__ = ("raw", "pseudo_path", "export_id", "backend_handle", "is_pseudo")

    def __init__(self, raw: bytes, pseudo_path: str | None = None, export_id: bytes | None = None,
                 backend_handle: bytes | None = None) -> None:
        self.raw = raw
        self.pseudo_path = pseudo_path
        self.export_id = export_id
        self.backend_handle = backend_handle
        self.is_pseudo = pseudo_path is not None   # a plain attribute: read several times per op

    def __eq__(self, other) -> bool:
        return isinstance(other, Fh4) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        what = f"pseudo {self.pseudo_path!r}" if self.is_pseudo else f"export {self.export_id.hex()}"
        return f"Fh4({what})"


REMEMBERED_FH4 = 16384


class Fh4Codec:
    def __init__(self, nfs_state) -> None:
        self._v3 = nfs_state.codec
        self._secret = load_or_create_secret(nfs_state.state_dir)
        self._known: dict[bytes, Fh4] = {}   # handles already verified (PUTFH repeats a few)

    def _mac(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, key=self._secret, digest_size=PSEUDO_MAC_SIZE,
                               person=b"acmenfs-v4pseudo").digest()

    def pseudo(self, path: str) -> Fh4:
        encoded = path.encode("utf-8")
        if not 0 < len(encoded) <= MAX_PSEUDO_PATH:
            raise Nfs4Error(Nfs4Stat.NAMETOOLONG, f"pseudo path {path!r} does not fit a handle")
        body = bytes((PSEUDO_VERSION,)) + encoded
        return Fh4(body + self._mac(body), pseudo_path=path)

    def export_object(self, export_id: bytes, backend_handle: bytes) -> Fh4:
        return Fh4(self._v3.encode(export_id, backend_handle), export_id=export_id, backend_handle=backend_handle)

    def decode(self, raw: bytes) -> Fh4:
        """The Fh4 of a handle from the wire; NFS4ERR_BADHANDLE if this server did not issue it.
        A handle decoded before is answered from ``_known`` (the same bytes verify the same way;
        whether its export still exists is the scope's business)."""
        raw = bytes(raw)
        known = self._known.get(raw)
        if known is not None:
            return known
        fh = self._decode(raw)
        if len(self._known) >= REMEMBERED_FH4:
            self._known.clear()
        self._known[raw] = fh
        return fh

    def _decode(self, raw: bytes) -> Fh4:
        if not 0 < len(raw) <= NFS4_FHSIZE:
            raise Nfs4Error(Nfs4Stat.BADHANDLE, f"file handle of {len(raw)} bytes")
        if raw[0] == PSEUDO_VERSION:
            body, mac = raw[:-PSEUDO_MAC_SIZE], raw[-PSEUDO_MAC_SIZE:]
            if len(body) < 2 or not hmac.compare_digest(self._mac(body), mac):
                raise Nfs4Error(Nfs4Stat.BADHANDLE, "pseudo handle MAC does not verify")
            try:
                return Fh4(raw, pseudo_path=body[1:].decode("utf-8"))
            except UnicodeDecodeError as exc:  # cannot happen with a valid MAC
                raise Nfs4Error(Nfs4Stat.BADHANDLE, "pseudo handle path") from exc
        try:
            export_id, backend_handle = self._v3.decode(raw)
        except BadHandle as exc:
            raise Nfs4Error(Nfs4Stat.BADHANDLE, str(exc)) from exc
        return Fh4(raw, export_id=export_id, backend_handle=backend_handle)
