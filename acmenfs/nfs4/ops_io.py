"""NFSv4 data ops: READ, WRITE, COMMIT.

Owns the stateid check hand-off (``cs.server.state.check_io``: anonymous and READ-bypass
stateids as RFC 7530 §9.1.4.3, open/lock stateids by B's StateManager; a 4.1 client may
send the "current stateid" (seqid 1, other zero), replaced here by ``cs.current_stateid``),
and reuses the v3 data path (on the event loop, page-cached data goes out with sendfile): backend read/write, UNSTABLE data made durable by the group
committer, whose verifier is the write verifier (it changes on restart).  WRITE runs inline
when the backend can take it into the page cache (as v3).  COMMIT with data to flush, on the
event loop, raises ``WaitDurable``: the COMPOUND is parked and ``Nfs4Server`` awaits the group
committer's ticket as v3 COMMIT does (no pool thread waits for the fsync); a COMPOUND already
in the pool waits there.
"""

from __future__ import annotations

from acmenfs.fs.nonblocking import WouldBlock, inline_active
from acmenfs.nfs4.compound import CompoundState, OpSpec, effective_stateid
from acmenfs.nfs4.const import FILE_SYNC4, MAX_IO, Nfs4Stat, Op
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.xdr4 import FALSE, TRUE, U32, decode_stateid
from acmenfs.oncrpc.read_parts import read_parts
from acmenfs.oncrpc.xdr import Unpacker

MAX_OFFSET = 2**64 - 1


def io_scope(cs: CompoundState, stateid: bytes, *, write: bool):
    """Scope of the current fh for I/O: a regular file whose stateid passes check_io."""
    scope = cs.require_file(write=write)
    if scope.node.is_dir:
        raise Nfs4Error(Nfs4Stat.ISDIR, "a directory")
    if not scope.node.is_reg:
        raise Nfs4Error(Nfs4Stat.INVAL, "not a regular file")
    cs.server.state.check_io(effective_stateid(cs, stateid), cs.file_key(), write)
    return scope


def op_read(cs: CompoundState, args: Unpacker):
    stateid = decode_stateid(args)
    offset, count = args.unpack_uhyper(), args.unpack_uint()
    scope = io_scope(cs, stateid, write=False)
    try:
        data, count, eof, _ = scope.backend.read(scope.node, scope.who, offset, min(count, MAX_IO))
        parts, count, eof = read_parts(scope.backend, data, offset, count, eof, inline_active())
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    parts.insert(0, (TRUE if eof else FALSE) + U32.pack(count))
    return parts


def op_write(cs: CompoundState, args: Unpacker) -> bytes:
    stateid = decode_stateid(args)
    offset, stable = args.unpack_uhyper(), args.unpack_uint()
    data = args.unpack_opaque_view()
    if stable > FILE_SYNC4:
        raise Nfs4Error(Nfs4Stat.BADXDR, f"stable_how4 {stable}")
    if offset + len(data) > MAX_OFFSET:
        raise Nfs4Error(Nfs4Stat.INVAL, "write beyond the largest offset")
    scope = io_scope(cs, stateid, write=True)
    try:
        scope.backend.write(scope.node, scope.who, offset, data, stable)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    cs.server.count_written(len(data))
    return U32.pack(len(data)) + U32.pack(stable) + cs.server.nfs.committer.verifier


class WaitDurable(WouldBlock):
    """COMMIT on the event loop with unstable data to flush: the COMPOUND is parked at COMMIT and
    ``Nfs4Server`` awaits ``ticket`` on the group committer (no pool thread waits), then resumes it."""

    def __init__(self, ticket: int) -> None:
        super().__init__("COMMIT waits for the group committer")
        self.ticket = ticket


def op_commit(cs: CompoundState, args: Unpacker) -> bytes:
    offset, count = args.unpack_uhyper(), args.unpack_uint()
    if count and offset + count > MAX_OFFSET:
        raise Nfs4Error(Nfs4Stat.INVAL, "commit range beyond the largest offset")
    scope = cs.require_file(write=True)
    if scope.node.is_dir:
        raise Nfs4Error(Nfs4Stat.ISDIR, "a directory")
    if not scope.node.is_reg:
        raise Nfs4Error(Nfs4Stat.INVAL, "not a regular file")
    committer = cs.server.nfs.committer
    if cs.durable_ticket is not None:   # resumed after the wait: what was written before is durable
        return committer.verifier
    ticket = scope.backend.commit_ticket(scope.node)  # names the file: other workers' data too
    if ticket is not None:
        if inline_active():
            raise WaitDurable(ticket)
        committer.durable.wait_for(ticket)   # a COMPOUND already in the pool (e.g. OPEN, WRITE, COMMIT)
    return committer.verifier


def counted_read(cs: CompoundState, args: Unpacker):
    """op_read, its data counted in the server's bytes_read (READ4resok: eof, then the count)."""
    result = op_read(cs, args)
    cs.server.count_read(int.from_bytes(result[0][4:8], "big"))
    return result


OPS = {
    Op.READ: OpSpec("READ", counted_read),
    Op.WRITE: OpSpec("WRITE", op_write),
    Op.COMMIT: OpSpec("COMMIT", op_commit),
}
