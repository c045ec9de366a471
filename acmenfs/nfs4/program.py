"""Program 100003 version 4 (NULL, COMPOUND) and ``Nfs4Server``, what every op reaches through ``cs.server``.

Owns the op registry (``OP_MODULES``: every module listed that exists is imported and
its ``OPS`` merged), the RPC ``Program`` registered next to NFSv3 on the same port,
inline-first COMPOUND (read-only ops and SEQUENCE run on the event loop; at the first
other op, or backend call that would wait, the COMPOUND is parked and resumed at that op in
the thread pool), the per-call DRC decision (a 4.0 COMPOUND that may change something is checked in the
v3 duplicate request cache, found by stepping over the arguments of read-only ops; its
entry is kept only if a non-idempotent op ran; 4.1+ relies on SEQUENCE slots), and the lazy lease sweep.  No procedure logic.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import struct
import threading
import time

from acmenfs.nfs4.compound import OpSpec, run_compound
from acmenfs.nfs4.const import MAX_OPS, NFS4_PROGRAM, NFS_V4, STATEID_SIZE, Nfs4Stat, Op, Proc
from acmenfs.nfs4.errors import Nfs4Error
from acmenfs.nfs4.fastpath import run_fast
from acmenfs.nfs4.fh4 import Fh4Codec
from acmenfs.nfs4.pseudofs import PseudoFs
from acmenfs.fs.nonblocking import WouldBlock, inline_state
from acmenfs.nfs4.ops_io import WaitDurable
from acmenfs.oncrpc.dispatch import Procedure, Program, RunAsync, RunInPool
from acmenfs.oncrpc.xdr import Unpacker

log = logging.getLogger("acmenfs.nfs4")

# Engineer A's modules, then B's; a module not (yet) in the tree is skipped.
OP_MODULES = (
    "acmenfs.nfs4.ops_fh", "acmenfs.nfs4.ops_attr", "acmenfs.nfs4.ops_dir", "acmenfs.nfs4.ops_io",
    "acmenfs.nfs4.ops_v42",
    "acmenfs.nfs4.ops_client", "acmenfs.nfs4.ops_open", "acmenfs.nfs4.ops_lock",
)


def load_ops(modules=OP_MODULES) -> dict[int, OpSpec]:
    ops: dict[int, OpSpec] = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for opnum, spec in module.OPS.items():
            if opnum in ops:
                raise ValueError(f"op {opnum} registered by two modules")
            ops[int(opnum)] = spec
    return ops


class AnonymousOnlyState:
    """Stand-in until B's StateManager is in the tree: I/O with the anonymous or READ-bypass
    stateid only; no clients, no sessions."""

    lease_seconds = 90

    def check_io(self, stateid: bytes, file_key: tuple, write: bool) -> None:
        if stateid == b"\0" * STATEID_SIZE or (stateid == b"\xff" * STATEID_SIZE and not write):
            return
        raise Nfs4Error(Nfs4Stat.BAD_STATEID, "no open state on this server")

    def check_io_fast(self, stateid: bytes, file_key: tuple, write: bool) -> bool:
        return False   # no open state: check_io answers every stateid

    def slot_done(self, slot, reply: bytes) -> None:
        pass

    def in_grace(self) -> bool:
        return False

    def expire_idle(self, now: float) -> None:
        pass


def make_state_manager(nfs_state, lease_seconds: int):
    try:
        from acmenfs.nfs4.state import StateManager
    except ModuleNotFoundError as exc:
        if exc.name != "acmenfs.nfs4.state":
            raise
        return AnonymousOnlyState()
    return StateManager(lease_seconds=lease_seconds, records_dir=nfs_state.state_dir / "nfs4")


_COMPOUND_KEY = ("NFS4", "COMPOUND")


def _status_name(status: int) -> str:
    try:
        return Nfs4Stat(status).name
    except ValueError:
        return str(status)


_OPAQUE, _BITMAP, _READDIR, _FATTR = -1, -2, -3, -4
# The argument layout of the ops that change nothing (byte counts for fixed ones): the DRC
# decision steps over them without decoding anything else.
_READ_ONLY_ARGS = {
    Op.PUTFH: _OPAQUE, Op.LOOKUP: _OPAQUE, Op.SECINFO: _OPAQUE,
    Op.PUTROOTFH: 0, Op.PUTPUBFH: 0, Op.GETFH: 0, Op.SAVEFH: 0, Op.RESTOREFH: 0, Op.LOOKUPP: 0,
    Op.READLINK: 0, Op.ACCESS: 4, Op.READ: 28, Op.RENEW: 8,
    Op.GETATTR: _BITMAP, Op.READDIR: _READDIR, Op.VERIFY: _FATTR, Op.NVERIFY: _FATTR,
}
_U32 = struct.Struct(">I")


_PUTFH_HEAD = struct.Struct(">IIIII")   # tag length, minorversion, op count, first opnum, its handle's length
_PUTFH, _READ, _GETATTR = Op.PUTFH, Op.READ, Op.GETATTR


def needs_drc(record, offset: int) -> bool:
    """Whether a COMPOUND call goes through the duplicate request cache: a 4.0 one that may
    contain an op that changes something (an op not known to be read-only, or arguments that
    do not parse: cached, the harmless side).  4.1+ replays come from the session's slots.
    (PUTFH + READ and PUTFH + GETATTR without a tag, what a 4.0 client sends most, are answered
    without the loop of ``_needs_drc``, the same way.)"""
    try:
        tag_length, minor, count, opnum, length = _PUTFH_HEAD.unpack_from(record, offset)
    except struct.error:
        return _needs_drc(record, offset)
    if tag_length == 0:
        if minor:
            return False
        if count == 2 and opnum == _PUTFH:
            position = offset + 20 + ((length + 3) & ~3)   # the second op
            end = len(record)
            if position + 4 <= end:
                second = _U32.unpack_from(record, position)[0]
                if second == _READ:
                    return position + 4 + 28 > end
                if second == _GETATTR and position + 8 <= end:
                    return position + 8 + 4 * _U32.unpack_from(record, position + 4)[0] > end
    return _needs_drc(record, offset)


def _needs_drc(record, offset: int) -> bool:
    unpack = _U32.unpack_from
    end = len(record)
    try:
        position = offset + 4 + ((unpack(record, offset)[0] + 3) & ~3)
        if unpack(record, position)[0] != 0:
            return False
        count = unpack(record, position + 4)[0]
        position += 8
        for _ in range(min(count, MAX_OPS + 1)):
            layout = _READ_ONLY_ARGS.get(unpack(record, position)[0])
            position += 4
            if layout is None:
                return True
            if layout >= 0:
                position += layout
                continue
            if layout == _READDIR:
                position += 24
            if layout != _OPAQUE:   # a bitmap4 first
                position += 4 + 4 * unpack(record, position)[0]
            if layout in (_OPAQUE, _FATTR):
                position += 4 + ((unpack(record, position)[0] + 3) & ~3)
        return position > end
    except struct.error:
        return True


class Nfs4Server:
    """What NFSv4 ops share: ``nfs`` (the v3 NfsState), ``state`` (open/lock/session state),
    ``pseudo`` (pseudo fs), ``fh`` (handle codec)."""

    def __init__(self, nfs_state, *, drc=None, lease_seconds: int = 90, state_manager=None,
                 call_stats=None, data_stats=None) -> None:
        """``call_stats``: the NfsServer's CallStats; each COMPOUND is counted as ("NFS4",
        "COMPOUND") with its latency, and a failed one under its final nfsstat4's name.
        ``data_stats``: what v3 counts its READ/WRITE payload bytes in (the NfsServer: its
        ``bytes_read`` / ``bytes_written``); v4 READ and WRITE add theirs there too."""
        self.nfs = nfs_state
        self.drc = drc
        self.call_stats = call_stats
        self.data_stats = data_stats
        self.pseudo = PseudoFs(nfs_state.exports)
        self.fh = Fh4Codec(nfs_state)
        self.state = state_manager if state_manager is not None else make_state_manager(nfs_state, lease_seconds)
        self.ops = load_ops()
        self.fast_path = run_fast   # the hot COMPOUND shapes in one function (None: general loop only)
        self.started_ns = time.time_ns()
        self._parked: dict[int, tuple] = {}   # id(call) -> (call, COMPOUND parked on the event loop)
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()

    def count_read(self, count: int) -> None:
        if self.data_stats is not None:
            self.data_stats.bytes_read += count

    def count_written(self, count: int) -> None:
        if self.data_stats is not None:
            self.data_stats.bytes_written += count

    @property
    def lease_seconds(self) -> int:
        return int(getattr(self.state, "lease_seconds", 90))

    def program(self) -> Program:
        return Program(NFS4_PROGRAM, NFS_V4, "NFS4", {
            Proc.NULL: Procedure("NULL", lambda ctx, args: b""),
            Proc.COMPOUND: Procedure("COMPOUND", self.compound_inline, cached=True, fallback=self.compound,
                                     cache_if=needs_drc),
        })

    def compound(self, ctx, args):
        started = time.perf_counter()
        self._sweep()
        return self._counted(started, run_compound(self, ctx, args, self.ops))

    def _counted(self, started: float, reply):
        if self.call_stats is not None:
            status = _U32.unpack_from(reply if isinstance(reply, (bytes, bytearray)) else reply[0])[0]
            self.call_stats.record(_COMPOUND_KEY, time.perf_counter() - started,
                                   None if status == 0 else _status_name(status))
        return reply

    def compound_inline(self, ctx, args):
        """COMPOUND on the event loop: RunInPool as soon as an op would change something or wait;
        RunAsync when COMMIT waits for the group committer (awaited, see ``_resume_after_commit``)."""
        previous = inline_state.active
        inline_state.active = True
        started = time.perf_counter()
        try:
            fast = self.fast_path   # tried here, not by run_compound: one call level less per COMPOUND
            reply = fast(self, ctx, args, self.ops, True) if fast is not None else None
            if reply is None:
                reply = run_compound(self, ctx, args, self.ops, fast=False)
            return self._counted(started, reply)
        except WaitDurable as wait:
            raise RunAsync(functools.partial(self._resume_after_commit, ctx, wait.ticket, started)) from None
        except WouldBlock:
            raise RunInPool from None
        finally:
            inline_state.active = previous

    async def _resume_after_commit(self, ctx, ticket: int, started: float):
        """Await COMMIT's ticket on the event loop (as v3 COMMIT does), then resume the parked
        COMPOUND at COMMIT: inline, or in the pool from the first op that must run there."""
        await self.nfs.committer.durable.wait_for_async(ticket)
        entry = self._parked.get(id(ctx))
        if entry is None or entry[0] is not ctx:
            raise RuntimeError("parked COMPOUND lost while COMMIT waited")
        entry[1].cs.durable_ticket = ticket
        previous = inline_state.active
        inline_state.active = True
        try:
            return self._counted(started, run_compound(self, ctx, Unpacker(ctx.record, ctx.args_offset),
                                                       self.ops, resume=True))
        except WouldBlock:
            pass   # parked again, at an op after COMMIT
        finally:
            inline_state.active = previous
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.nfs.executor, self.compound, ctx,
                                          Unpacker(ctx.record, ctx.args_offset))

    def park(self, ctx, run) -> None:
        """Keep a COMPOUND that stopped on the event loop until the pool thread resumes it.
        (The transport always runs the fallback after RunInPool unless the connection is gone:
        the table is bounded so such leftovers cannot pile up.)"""
        if len(self._parked) >= 4096:
            self._parked.clear()
        self._parked[id(ctx)] = (ctx, run)

    def unpark(self, ctx):
        entry = self._parked.pop(id(ctx), None)
        return entry[1] if entry is not None and entry[0] is ctx else None

    def forget_cached(self, ctx) -> None:
        """A 4.0 COMPOUND without a non-idempotent op: its DRC entry is not kept."""
        if self.drc is not None and ctx.drc_token is not None:
            self.drc.drop(ctx.drc_token)
            ctx.drc_token = None

    def _sweep(self) -> None:
        """Expire idle leases about once a second, on the calls that arrive (no timer thread)."""
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + 1.0
            clock = getattr(self.state, "clock", None)
            self.state.expire_idle(clock() if callable(clock) else now)
        except Exception:  # noqa: BLE001 - a sweep failure must not fail the call
            log.exception("NFSv4 lease sweep failed")
        finally:
            self._sweep_lock.release()
