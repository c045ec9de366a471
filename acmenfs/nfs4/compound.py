"""The NFSv4 COMPOUND procedure (RFC 7530 §15-16, RFC 8881 §16): framing, op loop, limits.

Owns ``CompoundState`` (what the ops of one COMPOUND share: current and saved
file handles and stateids, the session and slot SEQUENCE set) and
``run_compound`` (decode tag/minorversion/ops, check the minor version, run each
op's handler from the merged ``OpSpec`` registry, stop at the first error, answer
OP_ILLEGAL / NOTSUPP / OP_NOT_IN_SESSION / SEQUENCE_POS / NOT_ONLY_OP /
RESOURCE / TOO_MANY_OPS / REP_TOO_BIG, echo the tag, hand the encoded reply to
the slot).  It knows no operation's semantics.  Sans-IO: bytes in, reply parts out.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Callable

from acmenfs.fs.backend import BadHandle, StaleHandle
from acmenfs.fs.nonblocking import WouldBlock, inline_active
from acmenfs.nfs3.errors import NfsError
from acmenfs.nfs4.const import (
    INLINE_OPS, LAST_OP, MAX_OPS, MAX_REPLY, MAX_TAG, MINOR_VERSIONS, NON_IDEMPOTENT_OPS, OBSOLETE_IN_41,
    SESSIONLESS_OPS, Nfs4Stat, Op,
)
from acmenfs.nfs4.errors import Nfs4Error, SlotReplay, status_for
from acmenfs.nfs4.fh4 import Fh4
from acmenfs.nfs4.xdr4 import CURRENT_STATEID, U32, encode_opaque
from acmenfs.oncrpc.dispatch import materialize
from acmenfs.oncrpc.xdr import Unpacker, XdrError

log = logging.getLogger("acmenfs.nfs4")


@dataclass(frozen=True)
class OpSpec:
    name: str
    handler: Callable
    minor_min: int = 0
    minor_max: int = 2


class CompoundState:
    """One COMPOUND's shared state (RFC 8881 §16.2.3.1.1 current/saved fh and stateid)."""

    __slots__ = ("server", "ctx", "minorversion", "current_fh", "saved_fh", "current_stateid",
                 "saved_stateid", "session", "slot", "clientid", "nonidempotent", "op_index", "op_count",
                 "cinfo", "_last_scope", "durable_ticket", "cachethis")

    def __init__(self, server, ctx, minorversion: int) -> None:
        self.server = server
        self.ctx = ctx
        self.minorversion = minorversion
        self.current_fh: Fh4 | None = None
        self.saved_fh: Fh4 | None = None
        self.current_stateid: bytes | None = None
        self.saved_stateid: bytes | None = None
        self.session = None
        self.slot = None
        self.clientid: int | None = None
        self.nonidempotent = False
        self.op_index = 0
        self.op_count = 0
        self.cinfo: bytes | None = None   # change_info4 of the directory open_create changed
        self._last_scope: tuple | None = None   # (fh, Scope): PUTFH then GETATTR resolve once
        self.durable_ticket: int | None = None   # COMMIT's group-commit ticket, once awaited
        self.cachethis = True                     # SEQUENCE's sa_cachethis

    @property
    def address(self) -> str:
        return self.ctx.client[0]

    def require_fh(self) -> Fh4:
        if self.current_fh is None:
            raise Nfs4Error(Nfs4Stat.NOFILEHANDLE, "no current file handle")
        return self.current_fh

    def scope(self, fh: Fh4 | None = None, *, write: bool = False):
        """The v3 ``Scope`` (export, backend, node, identity) of ``fh`` (default: the current fh).
        A pseudo directory has none: ROFS when writing, else ``None``."""
        fh = self.require_fh() if fh is None else fh
        if fh.is_pseudo:
            if write:
                raise Nfs4Error(Nfs4Stat.ROFS, "the pseudo file system is read-only")
            self.server.pseudo.require(fh.pseudo_path, self.address)
            return None
        last = self._last_scope
        if last is not None and last[0] is fh and (not write or last[1].writable):
            return last[1]
        try:
            scope = self.server.nfs.scope(self.ctx, fh.raw, write=write)
        except (NfsError, StaleHandle, BadHandle, OSError) as exc:
            raise Nfs4Error(status_for(exc), str(exc)) from exc
        self._last_scope = (fh, scope)
        return scope

    def require_file(self, *, write: bool = False):
        """Scope of the current fh, which must be an export object (pseudo dirs: ISDIR)."""
        scope = self.scope(write=write)
        if scope is None:
            raise Nfs4Error(Nfs4Stat.ISDIR, "a pseudo-fs directory")
        return scope

    def file_key(self) -> tuple:
        """Identity of the current fh's object for open/lock state: (export_id, backend handle)."""
        fh = self.require_fh()
        if fh.is_pseudo:
            return (b"pseudo", fh.pseudo_path.encode())
        return (fh.export_id, fh.backend_handle)


def effective_stateid(cs: CompoundState, stateid: bytes) -> bytes:
    """RFC 8881 §16.2.3.1.2: the special "current stateid" stands for the COMPOUND's current one."""
    if stateid == CURRENT_STATEID and cs.minorversion >= 1:
        if cs.current_stateid is None:
            raise Nfs4Error(Nfs4Stat.BAD_STATEID, "no current stateid")
        return cs.current_stateid
    return stateid


def _status_of_exception(exc: BaseException, opname: str) -> tuple[int, bytes]:
    if isinstance(exc, Nfs4Error):
        return exc.status, exc.body
    status = status_for(exc)
    if status is Nfs4Stat.SERVERFAULT:
        log.error("NFS4 %s failed unexpectedly", opname, exc_info=exc)
    return status, b""


_HEAD = struct.Struct(">II")   # nfs_resop4 discriminant, then the op's status
_U32_FROM = struct.Struct(">I").unpack_from
_BUFFERS = (bytes, bytearray, memoryview)


def _parts_size(body) -> int:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    return sum(len(part) for part in body)


def _precheck(cs: CompoundState, opnum: int, index: int, numops: int, ops: dict) -> tuple[int, int] | None:
    """(result op number, status) when the op must not run; None when it may."""
    minor = cs.minorversion
    if not (Op.ACCESS <= opnum <= LAST_OP[minor]):
        return Op.ILLEGAL, Nfs4Stat.OP_ILLEGAL
    if minor >= 1:
        if opnum in OBSOLETE_IN_41:
            return opnum, Nfs4Stat.NOTSUPP
        if index == 0 and opnum != Op.SEQUENCE:
            if opnum not in SESSIONLESS_OPS:
                return opnum, Nfs4Stat.OP_NOT_IN_SESSION
            if numops > 1:
                return opnum, Nfs4Stat.NOT_ONLY_OP
        if index > 0 and opnum == Op.SEQUENCE:
            return opnum, Nfs4Stat.SEQUENCE_POS
    spec = ops.get(opnum)
    if spec is None or not spec.minor_min <= minor <= spec.minor_max:
        return opnum, Nfs4Stat.NOTSUPP
    return None


def _reply_limit(cs: CompoundState) -> int:
    limit = getattr(cs.session, "max_response_size", None) if cs.session is not None else None
    return min(limit, MAX_REPLY) if limit else MAX_REPLY


def _limits(cs: CompoundState) -> tuple[int, int]:
    """(size the results may reach, the status of the op that goes past it): RESOURCE in 4.0;
    REP_TOO_BIG past ca_maxresponsesize, or REP_TOO_BIG_TO_CACHE past ca_maxresponsesize_cached
    when SEQUENCE asked to cache the reply (RFC 8881 §2.10.6.4, §18.46.3)."""
    limit = _reply_limit(cs)
    if cs.minorversion == 0:
        return limit, Nfs4Stat.RESOURCE
    if cs.session is not None and cs.cachethis and cs.session.fore.maxresponsesize_cached < limit:
        return cs.session.fore.maxresponsesize_cached, Nfs4Stat.REP_TOO_BIG_TO_CACHE
    return limit, Nfs4Stat.REP_TOO_BIG


class _Run:
    """A COMPOUND in progress: where it is in its op array and what it answered so far."""

    __slots__ = ("cs", "tag", "numops", "index", "offset", "results", "count", "size", "status")

    def __init__(self, cs: CompoundState, tag: bytes, numops: int) -> None:
        self.cs = cs
        self.tag = tag
        self.numops = numops
        self.index = 0
        self.offset = 0
        self.results: list = []
        self.count = 0
        self.size = 0
        self.status = Nfs4Stat.OK

    def answer(self, resop: int, status: int, body=b"") -> None:
        head = _HEAD.pack(resop, status)
        if isinstance(body, (bytes, bytearray, memoryview)):
            self.results.append(head + body)
        else:
            self.results.append(head)
            self.results.extend(body)
        self.count += 1
        self.status = status


class _OpEntry:
    """An op as one minor version dispatches it: what ``_precheck`` would pass at any position
    but the first (4.1+), with the per-op decisions of the loop made once."""

    __slots__ = ("name", "handler", "inline", "nonidempotent")

    def __init__(self, spec: OpSpec, opnum: int) -> None:
        self.name = spec.name
        self.handler = spec.handler
        self.inline = opnum in INLINE_OPS or opnum == Op.SEQUENCE
        self.nonidempotent = opnum in NON_IDEMPOTENT_OPS


_TABLES: dict[int, tuple[dict, dict]] = {}


def dispatch_table(ops: dict[int, OpSpec], minor: int) -> dict[int, _OpEntry]:
    """opnum -> _OpEntry of the ops ``minor`` may run (built once per registry and minor)."""
    cached = _TABLES.get(id(ops))
    if cached is None or cached[0] is not ops:
        cached = (ops, {})
        _TABLES[id(ops)] = cached
    table = cached[1].get(minor)
    if table is None:
        table = {opnum: _OpEntry(spec, opnum) for opnum, spec in ops.items()
                 if spec.minor_min <= minor <= spec.minor_max and Op.ACCESS <= opnum <= LAST_OP[minor]
                 and not (minor and opnum in OBSOLETE_IN_41)}
        cached[1][minor] = table
    return table


_ARGS_HEAD = struct.Struct(">I")


def _start(server, ctx, args: Unpacker):
    """Decode COMPOUND4args' tag, minorversion and op count: a new _Run, or the reply when the
    minor version is not ours."""
    view, offset = args.view, args.offset
    if offset + 4 > args.end:
        raise XdrError("truncated COMPOUND4args")
    length = _U32_FROM(view, offset)[0]
    if length == 0 and offset + 12 <= args.end:   # no tag: what Linux sends
        tag = b""
        minor, numops = _TWO_U32(view, offset + 4)
        args.offset = offset + 12
    else:
        tag = args.unpack_opaque(MAX_TAG)
        minor = args.unpack_uint()
        numops = args.unpack_uint()
    if minor not in MINOR_VERSIONS:
        return None, _encode_res(Nfs4Stat.MINOR_VERS_MISMATCH, tag, [], 0)
    run = _Run(CompoundState(server, ctx, minor), tag, numops)
    run.cs.op_count = numops
    return run, None


_TWO_U32 = struct.Struct(">II").unpack_from


def _answer(run: _Run, count: int, resop: int, status: int, body=b"") -> int:
    """``run.answer`` for the loop, which keeps the result count in a local: the new count."""
    run.count = count
    run.answer(resop, status, body)
    return run.count


def run_compound(server, ctx, args: Unpacker, ops: dict[int, OpSpec], *, resume: bool = False,
                 fast: bool = True):
    """Run one COMPOUND4args; returns the COMPOUND4res as bytes or a list of parts.
    An undecodable header raises XdrError (the RPC layer answers GARBAGE_ARGS).

    On the event loop (``inline_active()``) ops of ``INLINE_OPS`` (and SEQUENCE) run until one
    that is not, or a backend call that would wait, raises WouldBlock; that op has changed
    nothing yet.  The COMPOUND is then parked with ``server.park(ctx, run)`` and the transport's
    pool thread resumes it at that op (``server.unpark(ctx)``): what ran inline never runs twice.
    ``resume``: resume a parked COMPOUND on the event loop too (after COMMIT's awaited flush).

    A fresh COMPOUND is first offered to ``server.fast_path`` (``fastpath.run_fast``: the hot
    shapes Linux sends, same reply bytes and state effects), which answers None for anything
    else, having changed nothing; ``fast`` False: the caller already offered it."""
    inline = inline_active()
    run = server.unpark(ctx) if resume or not inline else None
    if run is None:
        fast_path = getattr(server, "fast_path", None) if fast else None
        if fast_path is not None:
            reply = fast_path(server, ctx, args, ops, inline)
            if reply is not None:
                return reply
        run, refused = _start(server, ctx, args)
        if run is None:
            return refused
    else:
        args.offset = run.offset
    return run_ops(server, ctx, args, run, ops, inline)


def run_ops(server, ctx, args: Unpacker, run: _Run, ops: dict[int, OpSpec], inline: bool):
    """The op loop of ``run_compound`` from ``run.index`` (at ``args.offset``) to the reply."""
    cs = run.cs
    minor = cs.minorversion
    table = dispatch_table(ops, minor)
    limit, too_big = _limits(cs)
    results = run.results
    view, end = args.view, args.end
    numops = run.numops
    # The loop keeps its position in locals; ``run`` is brought up to date where it can stop.
    index, size, count = run.index, run.size, run.count
    while index < numops:
        offset = args.offset
        if offset + 4 > end:   # the op array is shorter than it claims
            count = _answer(run, count, Op.ILLEGAL, Nfs4Stat.BADXDR)
            break
        opnum = _U32_FROM(view, offset)[0]
        args.offset = offset + 4
        if index == 0 and numops > MAX_OPS:
            count = _answer(run, count, opnum if opnum in Op._value2member_map_ else Op.ILLEGAL,
                            Nfs4Stat.RESOURCE if minor == 0 else Nfs4Stat.TOO_MANY_OPS)
            break
        entry = table.get(opnum)
        if entry is None or (minor and (index == 0) != (opnum == Op.SEQUENCE)):
            cs.op_index = index
            refused = _precheck(cs, opnum, index, numops, ops)
            if refused is not None:
                count = _answer(run, count, *refused)
                break
            entry = _OpEntry(ops[opnum], opnum)
        if inline and not entry.inline:
            run.index, run.offset, run.size, run.count = index, offset, size, count
            server.park(ctx, run)
            raise WouldBlock(f"{entry.name} runs in the thread pool")
        if entry.nonidempotent:
            cs.nonidempotent = True
        cs.op_index = index
        try:
            body = entry.handler(cs, args)
            status = 0
        except SlotReplay as replay:
            return replay.reply
        except WouldBlock:
            if inline:
                run.index, run.offset, run.size, run.count = index, offset, size, count
                server.park(ctx, run)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes this op's nfsstat4
            status, body = _status_of_exception(exc, entry.name)
        if index == 0 and cs.session is not None:
            limit, too_big = _limits(cs)
        index += 1
        if type(body) is bytes:   # the common case, inlined
            size += 8 + len(body)
            if size <= limit:
                results.append(_HEAD.pack(opnum, status) + body)
                count += 1
                run.status = status
                if status:
                    break
                continue
        else:
            size += 8 + _parts_size(body)
        if size > limit:
            count = _answer(run, count, opnum, too_big)
            break
        count = _answer(run, count, opnum, status, body)
        if status != Nfs4Stat.OK:
            break
    run.count = count
    return finish(server, ctx, cs.slot, cs.cachethis, cs.nonidempotent,
                  _encode_res(run.status, run.tag, results, run.count))


def finish(server, ctx, slot, cachethis: bool, nonidempotent: bool, reply: list):
    """Hand the encoded COMPOUND4res to the 4.1 slot (READ data kept only when ``cachethis``)
    or, in 4.0, drop the DRC entry of a COMPOUND that changed nothing; returns the reply."""
    if slot is not None:
        if len(reply) == 1:
            server.state.slot_done(slot, reply[0])
            return reply[0]
        if not cachethis:   # READ data the client did not ask to keep: not copied into the slot
            server.state.slot_done(slot, None)
            return reply
        data = materialize(reply)
        server.state.slot_done(slot, data)
        return data
    if not nonidempotent and getattr(ctx, "drc_token", None) is not None:
        server.forget_cached(ctx)
    return reply


_RES_HEAD_NO_TAG = struct.Struct(">III")   # status, empty tag, result count


def _encode_res(status: int, tag: bytes, results: list, count: int) -> list:
    head = _RES_HEAD_NO_TAG.pack(status, 0, count) if not tag else (
        U32.pack(status) + encode_opaque(tag) + U32.pack(count))
    if not results:
        return [head]
    if all(type(part) is bytes for part in results):
        return [head + b"".join(results)]
    return _gather(head, results)


def _gather(head: bytes, results: list) -> list:
    """Reply parts around READ data (a copied buffer or a FileRegion), which goes out as it is,
    never joined: the small encoded pieces between them joined, empty ones dropped (each part
    is an iovec, or a write(2) next to a FileRegion)."""
    parts: list = []
    pending = [head]
    for part in results:
        if type(part) is bytes:
            if part:
                pending.append(part)
            continue
        parts.append(b"".join(pending) if len(pending) > 1 else pending[0])
        parts.append(part)
        pending = []
    if pending:
        parts.append(b"".join(pending) if len(pending) > 1 else pending[0])
    return parts
