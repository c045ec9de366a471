"""NFSv3 data procedures: READ, WRITE, COMMIT.

READ runs inline on the event loop when the handle is cached and the data is in
the page cache; up to 64 KiB are copied with one preadv2(RWF_NOWAIT) and sent in
one writev, larger replies are ``[header, FileRegion, padding]`` so the TCP
transport sends file data with sendfile (never copied through Python).  Cold
data is read in the thread pool with one preadv into a fresh buffer.  The data
parts are built by ``acmenfs.oncrpc.read_parts`` (shared with NFSv4 READ).  WRITE hands the
payload (a memoryview into the received record) straight to pwrite; UNSTABLE
data goes to the page cache and is made durable by COMMIT through the group
committer (COMMIT is an async handler awaiting its durable sequence, so many
COMMITs share one flush).  DATA_SYNC / FILE_SYNC are synced before replying.
"""

from __future__ import annotations

import struct

from acmenfs.fs.backend import StaleHandle
from acmenfs.fs.nonblocking import inline_active
from acmenfs.nfs3.const import NfsProc, NfsStat, StableHow
from acmenfs.nfs3.errors import NfsError, status_for
from acmenfs.nfs3.scope import NfsState, Scope
from acmenfs.nfs3.xdr import STATUS_OK, decode_fh, decode_read_args, decode_write_args
from acmenfs.oncrpc.read_parts import read_parts
from acmenfs.oncrpc.xdr import Unpacker

MAX_IO = 1024 * 1024
READ_TAIL = struct.Struct(">III")  # count, eof, opaque length
WRITE_TAIL = struct.Struct(">II8s")  # count, committed, verifier


def nfs3_read(state: NfsState, ctx, args: Unpacker):
    fh, offset, count = decode_read_args(args)
    scope = state.scope(ctx, fh)
    backend = scope.backend
    try:
        data, count, eof, st = backend.read(scope.node, scope.who, offset, min(count, MAX_IO))
        parts, count, eof = read_parts(backend, data, offset, count, eof, inline_active())
    except (OSError, StaleHandle) as exc:
        raise NfsError(status_for(exc), str(exc), body=scope.attrs_of(scope.node)) from exc
    header = read_head(scope, st, count, eof)
    if not parts:
        return header
    parts.insert(0, header)
    return parts


def read_head(scope: Scope, st, count: int, eof: bool) -> bytes:
    """READ3resok up to its data: NFS3_OK, post_op_attr, count, eof, the data's length (also ``fastpath``)."""
    return STATUS_OK + scope.post_op_attr(st) + READ_TAIL.pack(count, eof, count)


def nfs3_write(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh, offset, count, stable, data = decode_write_args(args)
    if stable > StableHow.FILE_SYNC:
        raise NfsError(NfsStat.INVAL, f"bad stable_how {stable}")
    if count < len(data):
        data = data[:count]
    scope = state.scope(ctx, fh, write=True)
    try:
        pre, post = scope.backend.write(scope.node, scope.who, offset, data, stable)
    except (OSError, StaleHandle) as exc:
        raise NfsError(status_for(exc), str(exc), body=scope.wcc(None, None)) from exc
    return write_body(state, scope, pre, post, len(data), stable)


def write_body(state: NfsState, scope: Scope, pre, post, count: int, stable: int) -> bytes:
    """WRITE3resok: NFS3_OK, wcc_data, count, committed, the write verifier (also ``fastpath``)."""
    return STATUS_OK + scope.wcc(pre, post) + WRITE_TAIL.pack(count, stable, state.committer.verifier)


async def nfs3_commit(state: NfsState, ctx, args: Unpacker) -> bytes:
    fh = decode_fh(args)
    args.unpack_uhyper(), args.unpack_uint()  # offset, count: we always commit whole files
    scope = await state.scope_async(ctx, fh, write=True)
    ticket = scope.backend.commit_ticket(scope.node)
    if ticket is not None:
        await state.committer.durable.wait_for_async(ticket)
    st = scope.backend.stat(scope.node)
    return STATUS_OK + scope.wcc(None, st) + state.committer.verifier


HANDLERS = {
    NfsProc.READ: nfs3_read,
    NfsProc.WRITE: nfs3_write,
    NfsProc.COMMIT: nfs3_commit,
}
