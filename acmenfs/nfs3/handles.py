"""NFS file handles on the wire: version, export id, backend handle, MAC.

Owns the opaque nfs_fh3 layout (at most 64 bytes)::

    version (1) | export_id (8) | backend handle (1..44) | MAC (10)

The MAC is keyed BLAKE2b over everything before it, with a 32-byte secret kept
in the state directory (``handle-secret``, created on first start, mode 0600),
so handles stay valid across restarts with the same state directory and a
client can neither forge a handle nor move one to another export.  Decoding
failures raise ``BadHandle``.  Recently encoded or verified handles are remembered
(bounded), so a busy client's handles cost a dictionary lookup, not a MAC.  It does
not resolve handles to files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from acmenfs.fs.backend import BadHandle
from acmenfs.fs.durable import write_atomically
from acmenfs.nfs3.const import NFS3_FHSIZE

HANDLE_VERSION = 1
MAC_SIZE = 10
EXPORT_ID_SIZE = 8
_PREFIX = 1 + EXPORT_ID_SIZE
MAX_BACKEND_HANDLE = NFS3_FHSIZE - _PREFIX - MAC_SIZE
SECRET_FILE = "handle-secret"
REMEMBERED_HANDLES = 65536


def load_or_create_secret(state_dir: str | Path) -> bytes:
    """The state directory's handle secret, created (durably, mode 0600) on first use.

    Creation never overwrites: if another process created the secret meanwhile, its
    secret is the one used, so every process of a server signs handles alike.  A file
    too short to be a secret is replaced.
    """
    path = Path(state_dir) / SECRET_FILE
    existing = _read_secret(path)
    if existing is not None:
        return existing
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32)
    try:
        write_atomically(path, secret, mode=0o600, replace=path.exists())  # exists: too short, replaced
    except FileExistsError:
        existing = _read_secret(path)
        if existing is None:
            raise
        return existing
    return secret


def _read_secret(path: Path) -> bytes | None:
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        return None
    return secret[:32] if len(secret) >= 32 else None


class HandleCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # handle -> (export_id, backend handle), for handles issued or verified (plain dict
        # operations are atomic under the GIL; cleared when full)
        self._known: dict[bytes, tuple[bytes, bytes]] = {}
        self._encoded: dict[bytes, bytes] = {}  # export_id + backend handle -> handle

    def _mac(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, key=self._secret, digest_size=MAC_SIZE).digest()

    def _remember(self, handle: bytes, parts: tuple[bytes, bytes]) -> None:
        if len(self._known) >= REMEMBERED_HANDLES:
            self._known.clear()
        self._known[handle] = parts

    def encode(self, export_id: bytes, backend_handle: bytes) -> bytes:
        handle = self._encoded.get(export_id + backend_handle)
        if handle is not None and len(export_id) == EXPORT_ID_SIZE:
            return handle
        if len(export_id) != EXPORT_ID_SIZE:
            raise ValueError("export id must be 8 bytes")
        if not 0 < len(backend_handle) <= MAX_BACKEND_HANDLE:
            raise ValueError(f"backend handle of {len(backend_handle)} bytes does not fit")
        body = bytes((HANDLE_VERSION,)) + export_id + backend_handle
        handle = body + self._mac(body)
        self._remember(handle, (export_id, backend_handle))
        if len(self._encoded) >= REMEMBERED_HANDLES:
            self._encoded.clear()
        self._encoded[export_id + backend_handle] = handle
        return handle

    def decode(self, handle: bytes) -> tuple[bytes, bytes]:
        """(export_id, backend handle) of a handle this server issued; BadHandle otherwise."""
        known = self._known.get(handle)
        if known is not None:
            return known
        if not _PREFIX + 1 + MAC_SIZE <= len(handle) <= NFS3_FHSIZE:
            raise BadHandle(f"file handle of {len(handle)} bytes")
        if handle[0] != HANDLE_VERSION:
            raise BadHandle(f"file handle version {handle[0]}")
        body, mac = handle[:-MAC_SIZE], handle[-MAC_SIZE:]
        if not hmac.compare_digest(self._mac(body), mac):
            raise BadHandle("file handle MAC does not verify")
        parts = body[1:_PREFIX], body[_PREFIX:]
        self._remember(bytes(handle), parts)
        return parts
