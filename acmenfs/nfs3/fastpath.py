"""The NFSv3 fast path: GETATTR, READ and UNSTABLE WRITE of a cached handle, one function each.

Owns ``FastPath``, which the NFS port's ``RpcDispatcher`` offers every call record first
(``RpcDispatcher.fast_lane``).  These three procedures are what a VM disk sends; the general
path runs each through ``begin`` (a ``PendingCall``), ``run_inline_first``, the statistics
wrapper, an ``Unpacker`` and the argument decoders, about a dozen Python frames that cost
more than the procedure's own work on a 4 KiB call.  Here the same steps are taken from the
raw record in one frame per call: the RPC header and credential (``rpc.parse_call_header``,
``rpc.credential_from``), the arguments, ``NfsState.scope`` (every access rule, as always),
the backend's own ``read`` / ``write`` / ``stat`` on the event loop (``inline_state``), the
duplicate request cache for WRITE, the reply body from ``procs_data`` / ``procs_attrs`` and
the call counted in ``CallStats`` and the server's byte counters.

It answers None, having changed nothing, for anything else, and the general path then runs
the call from the start: another program, version or procedure, an RPC version other than 2,
a credential the general path would refuse, arguments it would refuse (truncated, a handle
too long), a WRITE whose count differs from its data, a scope that fails (BADHANDLE, STALE,
ACCES, ROFS) and any backend error: the general path produces their error replies.  A call
that cannot finish without blocking (``WouldBlock``: data not in the page cache, a handle or
export not open yet, a DATA_SYNC/FILE_SYNC WRITE, paused inline writes) answers ``IN_POOL``:
the transport runs it in the thread pool, as it would after a failed inline try.  A WRITE's
DRC entry is dropped before either, so the general path finds the call new; a WRITE
retransmission is answered here from the cache, or dropped while the original still runs,
as ``RpcDispatcher.begin`` would.  Answers ``()`` for "send nothing".  Sans-IO: records in,
reply parts out.

A READ answered here with a copy (1..64 KiB in the page cache) leaves a grant in ``grants``
(``acmenfs.nfs3._readaccel.ReadGrants``, compiled at install when a C compiler and Python's
headers are there): later READs with the same handle, client address and credential, under the
same export-table generation, are then answered in C, byte for byte as here, with the checks
this path makes per call (a regular file not deleted, readable by the caller, the range in the
page cache); anything else falls through to this path.  Without the module, or with
``ACMENFS_READ_ACCEL=0`` in the environment, this path answers every READ.

An UNSTABLE WRITE answered here leaves a grant in ``write_grants`` the same way
(``acmenfs.nfs3._writeaccel.WriteGrants``): later page-aligned UNSTABLE WRITEs of 1..64 KiB with
the same handle, client address and credential, under the same generation, are answered in C with
this path's steps (permission, set-id bits, the inline-write pause, the quota, the duplicate request
cache, mark_dirty for COMMIT, the usage counter, the reply with the verifier); anything else, and
anything those steps would refuse, falls through to this path.  ``ACMENFS_WRITE_ACCEL=0`` turns it
off.  Both modules share ``_accel.h``, whose header names the Python code each C part mirrors.
"""

from __future__ import annotations

import os
import struct
import time

from acmenfs.fs.nonblocking import WouldBlock, inline_state
from acmenfs.nfs3.const import NFS_PROGRAM, NFS_V3, NfsProc
from acmenfs.nfs3.procs_attrs import getattr_body
from acmenfs.nfs3.procs_data import MAX_IO, read_head, write_body
from acmenfs.nfs3.scope import NfsState
from acmenfs.nfs3.xdr import NFS3_FHSIZE
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import IN_POOL
from acmenfs.oncrpc.drc import DrcStatus, DuplicateRequestCache, make_request_key
from acmenfs.oncrpc.read_parts import read_parts
from acmenfs.oncrpc.xdr import XdrError

try:
    from acmenfs.nfs3._readaccel import ReadGrants
except ImportError:  # built without a C compiler or Python's headers: this module answers every READ
    ReadGrants = None
try:
    from acmenfs.nfs3._writeaccel import WriteGrants
except ImportError:  # (likewise: this module answers every WRITE)
    WriteGrants = None

_FH_LENGTH = struct.Struct(">I")
_ROUTE = struct.Struct(">IIII")        # at byte 8 of a call: rpcvers, prog, vers, proc
_READ_ARGS = struct.Struct(">QI")      # after the handle: offset, count
_WRITE_ARGS = struct.Struct(">QIII")   # after the handle: offset, count, stable, data length
_SUCCESS_HEADER, _REPLY = rpc.SUCCESS_HEADER, int(rpc.MsgType.REPLY)
_GETATTR, _READ, _WRITE = int(NfsProc.GETATTR), int(NfsProc.READ), int(NfsProc.WRITE)
_KEYS = {_GETATTR: ("NFS3", "GETATTR"), _READ: ("NFS3", "READ"), _WRITE: ("NFS3", "WRITE")}
_NEW, _DONE = DrcStatus.NEW, DrcStatus.DONE
_NOTHING = ()   # answered: nothing to send (a duplicate of a call still running)


def read_accel_enabled() -> bool:
    """Whether READs may be answered by the compiled ``ReadGrants`` (built, and not turned off)."""
    return ReadGrants is not None and os.environ.get("ACMENFS_READ_ACCEL", "1") != "0"


def write_accel_enabled() -> bool:
    """Whether UNSTABLE WRITEs may be answered by the compiled ``WriteGrants`` (built, not turned off)."""
    return WriteGrants is not None and os.environ.get("ACMENFS_WRITE_ACCEL", "1") != "0"


class _Caller:
    """What ``NfsState.scope`` reads of a call: the credential and the client address."""

    __slots__ = ("cred", "client")


def _handle_at(record, at: int, size: int) -> tuple[bytes, int] | None:
    """(file handle, offset after it) when ``size`` more bytes follow it in ``record``, else None."""
    if at + 4 > size:
        return None
    length = _FH_LENGTH.unpack_from(record, at)[0]
    if length > NFS3_FHSIZE:
        return None
    start = at + 4
    after = start + length + (-length & 3)
    return (bytes(record[start:start + length]), after) if after <= size else None


class FastPath:
    """``fast_path(record, client)`` -> reply parts, ``()`` (send nothing) or None (general path)."""

    def __init__(self, state: NfsState, drc: DuplicateRequestCache | None, call_stats, data_stats,
                 count, *, accelerate: bool | None = None, accelerate_writes: bool | None = None) -> None:
        """``call_stats``: a ``CallStats``; ``data_stats``: has ``bytes_read`` / ``bytes_written``
        (the NfsServer); ``count``: the dispatcher's counter (``RpcDispatcher.count``).
        ``accelerate``: use ``ReadGrants`` (default: ``read_accel_enabled()``), ``accelerate_writes``:
        ``WriteGrants`` (default: ``write_accel_enabled()``, and only with a DRC); their calls and
        bytes are counted in their ``counts()``, not in ``call_stats`` / ``data_stats``."""
        if accelerate is None:
            accelerate = read_accel_enabled()
        elif accelerate and ReadGrants is None:
            raise RuntimeError("acmenfs.nfs3._readaccel was not built")
        if accelerate_writes is None:
            accelerate_writes = write_accel_enabled()
        elif accelerate_writes and WriteGrants is None:
            raise RuntimeError("acmenfs.nfs3._writeaccel was not built")
        self.grants = ReadGrants(state) if accelerate else None
        self.write_grants = WriteGrants(state, drc, self._duplicate) if accelerate_writes and drc is not None else None
        self.state = state
        self.drc = drc
        self.record_call = call_stats.record
        self.data_stats = data_stats
        self.count = count
        self._procedures = {_GETATTR: self._getattr, _READ: self._read}
        if drc is not None:  # WRITE's replies must go through the DRC: without one, the general path
            self._procedures[_WRITE] = self._write

    def __call__(self, record, client: tuple):
        grants = self.grants
        if grants is not None:
            reply = grants.answer(record, client[0])
            if reply is not None:
                return [reply]
        write_grants = self.write_grants
        if write_grants is not None:
            try:
                parts = write_grants.answer(record, client)
            except Exception:  # noqa: BLE001 - as below (it calls the DRC): the general path runs the call
                return None
            if parts is not None:
                return parts
        if len(record) < 24:
            return None
        rpcvers, prog, vers, proc = _ROUTE.unpack_from(record, 8)  # a look before parsing: most calls are not ours
        run = self._procedures.get(proc)
        if run is None or prog != NFS_PROGRAM or vers != NFS_V3 or rpcvers != rpc.RPC_VERSION:
            return None
        try:
            xid, _, _, _, _, flavor, cred_end, at = rpc.parse_call_header(record)
        except XdrError:
            return None
        try:
            cred = rpc.credential_from(flavor, record[32:cred_end])
        except rpc.AuthError:
            return None
        caller = _Caller()
        caller.cred, caller.client = cred, client
        previous = inline_state.active
        inline_state.active = True
        started = time.perf_counter()
        try:
            parts = run(xid, caller, record, at)
        except WouldBlock:  # data not in the page cache, a stable write, a paused export, ...
            return IN_POOL
        except Exception:  # noqa: BLE001 - any failure: the general path runs the call and answers it
            return None
        finally:
            inline_state.active = previous
        if parts is not None and parts is not _NOTHING:  # (a duplicate is not a call)
            self.record_call(_KEYS[proc], time.perf_counter() - started, None)
        return parts

    def _getattr(self, xid: int, caller: _Caller, record, at: int):
        found = _handle_at(record, at, len(record))
        if found is None:
            return None
        scope = self.state.scope(caller, found[0])
        return [_SUCCESS_HEADER.pack(xid, _REPLY), getattr_body(scope, scope.backend.stat(scope.node))]

    def _read(self, xid: int, caller: _Caller, record, at: int):
        found = _handle_at(record, at, len(record) - _READ_ARGS.size)
        if found is None:
            return None
        fh, after = found
        offset, count = _READ_ARGS.unpack_from(record, after)
        grants = self.grants
        if grants is not None:
            generation = self.state.generation  # before the scope: a grant must not outlive a rule it used
        scope = self.state.scope(caller, fh)
        backend = scope.backend
        data, count, eof, st = backend.read(scope.node, scope.who, offset, min(count, MAX_IO))
        parts, count, eof = read_parts(backend, data, offset, count, eof, True)
        self.data_stats.bytes_read += count
        if grants is not None and type(data) is bytearray:  # (a copy: 1..64 KiB, what ReadGrants answers)
            who = scope.who
            grants.grant(record, caller.client[0], scope.node.data_fd(), who.uid, who.gid, who.gids,
                         scope.fsid, backend.root_dev, generation)
        parts.insert(0, _SUCCESS_HEADER.pack(xid, _REPLY) + read_head(scope, st, count, eof))
        return parts

    def _write(self, xid: int, caller: _Caller, record, at: int):
        size = len(record)
        found = _handle_at(record, at, size - _WRITE_ARGS.size)
        if found is None:
            return None
        fh, after = found
        offset, count, stable, length = _WRITE_ARGS.unpack_from(record, after)
        start = after + _WRITE_ARGS.size
        if count != length or start + length + (-length & 3) > size:
            return None
        if stable:
            raise WouldBlock("a stable write waits for the disk")
        write_grants = self.write_grants
        if write_grants is not None:
            generation = self.state.generation  # before the scope, as for READ
        scope = self.state.scope(caller, fh, write=True)
        view = record if type(record) is memoryview else memoryview(record)
        status, token = self.drc.check(make_request_key(xid, caller.client, NFS_PROGRAM, NFS_V3, _WRITE, view[at:]))
        if status is not _NEW:
            return self._duplicate(status, token)
        try:
            pre, post = scope.backend.write(scope.node, scope.who, offset, view[start:start + length], 0)
            reply = _SUCCESS_HEADER.pack(xid, _REPLY) + write_body(self.state, scope, pre, post, length, 0)
        except BaseException:
            self.drc.drop(token)
            raise
        self.drc.done(token, reply)
        self.data_stats.bytes_written += length
        if write_grants is not None:
            who, node = scope.who, scope.node
            write_grants.grant(record, caller.client[0], node, node.data_fd(writable=True), who.uid, who.gid,
                               who.gids, scope.fsid, scope.backend.root_dev, generation, scope.backend)
        return [reply]

    def _duplicate(self, status: DrcStatus, reply):
        """A retransmission: the cached reply, or nothing while the original still runs."""
        if status is _DONE:
            self.count("drc_replays")
            return [reply]
        self.count("drc_in_progress_drops")
        return _NOTHING

