"""NFSv3 directory listing: READDIR and READDIRPLUS.

Every listing starts with "." and ".." (as knfsd and Ganesha list them; ``ls -a`` and
Connectathon expect them): "." is the directory itself, ".." its parent, and ".." of
an export root is the root itself, so no fileid or handle ever names an object above
the export.  They carry the cookies 1 and 2.  The other cookies are derived from entry
names (see ``acmenfs.fs.local.name_cookie``, always with the top bit set): they stay
valid while the directory changes and across server restarts, so the cookie verifier
is a constant naming this cookie scheme.  A non-zero cookie that is not of one of
these forms, or sent with a foreign verifier, is NFS3ERR_BAD_COOKIE.
Replies honour ``count`` (READDIR) and ``dircount``/``maxcount`` (READDIRPLUS):
entries are added while they fit; if not even one fits, NFS3ERR_TOOSMALL.
"""

from __future__ import annotations

import struct

from acmenfs.fs.backend import DirEntry, StaleHandle
from acmenfs.fs.credentials import ROOT
from acmenfs.fs.local import COOKIE_FLAG
from acmenfs.nfs3.const import NFS3_COOKIEVERFSIZE, NfsProc, NfsStat
from acmenfs.nfs3.errors import NfsError, status_for
from acmenfs.nfs3.scope import NfsState, Scope
from acmenfs.nfs3.xdr import FALSE, POST_OP_ATTR_SIZE, STATUS_OK, TRUE, decode_fh, encode_fh, encode_opaque, fileid_of
from acmenfs.oncrpc.xdr import Unpacker

COOKIE_VERIFIER = b"acmeHC01"
_ZERO_VERIFIER = b"\0" * NFS3_COOKIEVERFSIZE
DOT_COOKIE, DOTDOT_COOKIE = 1, 2  # below every name cookie (those have COOKIE_FLAG set)
MAX_REPLY = 1024 * 1024
ENTRY_HEAD = struct.Struct(">IQ")  # value_follows, fileid
UINT64 = struct.Struct(">Q")
# status + post_op_attr(dir) + cookieverf + end-of-list + eof
_FIXED_SIZE = 4 + POST_OP_ATTR_SIZE + NFS3_COOKIEVERFSIZE + 4 + 4


def _check_cookie(scope: Scope, cookie: int, verifier: bytes) -> None:
    if cookie == 0:
        return
    ours = cookie & COOKIE_FLAG or cookie in (DOT_COOKIE, DOTDOT_COOKIE)
    if not ours or verifier not in (COOKIE_VERIFIER, _ZERO_VERIFIER):
        raise NfsError(NfsStat.BAD_COOKIE, f"cookie {cookie:#x} was not issued by this server",
                       body=scope.attrs_of(scope.node))


def _listing(scope: Scope, cookie: int):
    """(entries after ``cookie`` but for the dot entries, the directory's attributes)."""
    try:
        entries = scope.backend.list_directory(scope.node, scope.who, 0 if cookie <= DOTDOT_COOKIE else cookie)
        return entries, scope.backend.stat(scope.node)
    except (OSError, StaleHandle) as exc:
        raise NfsError(status_for(exc), str(exc), body=scope.attrs_of(scope.node)) from exc


def _dot_entries(scope: Scope, dir_st, cookie: int) -> list[tuple[DirEntry, bytes, object]]:
    """The "." and ".." entries still due after ``cookie``: (entry, backend handle, attributes).

    ".." is resolved by the backend, which answers the export root for the root's parent;
    as knfsd, without a permission check of its own (the caller could list the directory)."""
    if cookie >= DOTDOT_COOKIE:
        return []
    root_dev = scope.backend.root_dev
    dots = [(DirEntry(DOT_COOKIE, ".", fileid_of(dir_st, root_dev)), scope.node.handle, dir_st)]
    try:
        parent, parent_st, _ = scope.backend.lookup(scope.node, "..", ROOT)
    except (OSError, StaleHandle) as exc:
        raise NfsError(status_for(exc), str(exc), body=scope.post_op_attr(dir_st)) from exc
    dots.append((DirEntry(DOTDOT_COOKIE, "..", fileid_of(parent_st, root_dev)), parent.handle, parent_st))
    return dots[cookie:]


def _finish(scope: Scope, dir_st, parts: list[bytes], eof: bool, any_entry_left: bool) -> list[bytes]:
    if not parts and any_entry_left:
        raise NfsError(NfsStat.TOOSMALL, "reply size too small for one entry", body=scope.post_op_attr(dir_st))
    return [STATUS_OK + scope.post_op_attr(dir_st) + COOKIE_VERIFIER, *parts, FALSE + (TRUE if eof else FALSE)]


def nfs3_readdir(state: NfsState, ctx, args: Unpacker):
    fh = decode_fh(args)
    cookie, verifier, count = args.unpack_uhyper(), args.unpack_fopaque(NFS3_COOKIEVERFSIZE), args.unpack_uint()
    scope = state.scope(ctx, fh)
    _check_cookie(scope, cookie, verifier)
    entries, dir_st = _listing(scope, cookie)
    if cookie < DOTDOT_COOKIE:
        entries = [entry for entry, _, _ in _dot_entries(scope, dir_st, cookie)] + entries
    budget = min(count, MAX_REPLY) - _FIXED_SIZE
    parts: list[bytes] = []
    for entry in entries:
        encoded = ENTRY_HEAD.pack(1, entry.fileid) + encode_opaque(entry.name.encode("utf-8", "surrogateescape")) + UINT64.pack(entry.cookie)
        budget -= len(encoded)
        if budget < 0:
            return _finish(scope, dir_st, parts, False, True)
        parts.append(encoded)
    return _finish(scope, dir_st, parts, True, False)


def _plus_entries(scope: Scope, dir_st, dots: list, entries: list[DirEntry]):
    """(entry, backend handle, attributes) of the dot entries, then of each listed name still there."""
    yield from dots
    backend, who, directory = scope.backend, scope.who, scope.node
    for entry in entries:
        try:
            handle, st = backend.entry_node(directory, entry.name, who)
        except FileNotFoundError:
            continue  # removed since the listing was taken
        except (OSError, StaleHandle) as exc:
            raise NfsError(status_for(exc), str(exc), body=scope.post_op_attr(dir_st)) from exc
        yield entry, handle, st


def nfs3_readdirplus(state: NfsState, ctx, args: Unpacker):
    fh = decode_fh(args)
    cookie, verifier = args.unpack_uhyper(), args.unpack_fopaque(NFS3_COOKIEVERFSIZE)
    dircount, maxcount = args.unpack_uint(), args.unpack_uint()
    scope = state.scope(ctx, fh)
    _check_cookie(scope, cookie, verifier)
    entries, dir_st = _listing(scope, cookie)
    dots = _dot_entries(scope, dir_st, cookie)
    dir_budget = min(dircount, MAX_REPLY)
    budget = min(maxcount, MAX_REPLY) - _FIXED_SIZE
    parts: list[bytes] = []
    root_dev = scope.backend.root_dev
    for entry, handle, st in _plus_entries(scope, dir_st, dots, entries):
        name = encode_opaque(entry.name.encode("utf-8", "surrogateescape"))
        directory_part = ENTRY_HEAD.pack(1, fileid_of(st, root_dev)) + name + UINT64.pack(entry.cookie)
        encoded = directory_part + scope.post_op_attr(st) + TRUE + encode_fh(scope.fh_for(handle))
        dir_budget -= len(directory_part) - 4
        budget -= len(encoded)
        if budget < 0 or (dir_budget < 0 and parts):
            return _finish(scope, dir_st, parts, False, True)
        parts.append(encoded)
    return _finish(scope, dir_st, parts, True, False)


HANDLERS = {
    NfsProc.READDIR: nfs3_readdir,
    NfsProc.READDIRPLUS: nfs3_readdirplus,
}
