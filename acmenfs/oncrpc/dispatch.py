"""Sans-IO dispatch of RPC calls to registered programs, with the duplicate request cache.

Owns the decision of what happens to one call record: which accept or reject
status it earns (RPC_MISMATCH, AUTH_ERROR, PROG_UNAVAIL, PROG_MISMATCH,
PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR), whether the DRC answers it or drops
it, and how the procedure's result becomes reply bytes. It never touches a
socket or an event loop: a transport calls ``begin`` with a record, runs the
returned ``PendingCall`` where it likes (inline, thread pool, or awaited) with
``run_sync`` / ``run_async``, and sends the buffers it gets back.  A procedure with
a ``fallback`` is tried inline first (``run_inline_first``); if its handler raises
``RunInPool``, the transport runs ``run_sync`` (the fallback) in its thread pool.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Sequence, Union

from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.drc import DrcStatus, DuplicateRequestCache, make_request_key
from acmenfs.oncrpc.rpc import AcceptStat, AuthError, Credential
from acmenfs.oncrpc.xdr import Unpacker, XdrError

log = logging.getLogger("acmenfs.oncrpc")


class GarbageArgs(Exception):
    """A procedure could not decode its arguments; answered with GARBAGE_ARGS."""


class _InPool:
    """The type of ``IN_POOL``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IN_POOL"


# A fast lane's answer for a call it cannot finish without blocking (``RpcDispatcher.fast_lane``):
# ``begin`` it and run its fallback in the thread pool at once (its inline handler was the lane).
IN_POOL = _InPool()


class RunInPool(Exception):
    """Raised by the inline handler of a procedure with a ``fallback`` when it cannot
    finish without blocking: the call is run again, from its first argument byte, by
    the fallback handler in the transport's thread pool.  The handler must raise it
    before doing anything that must not be done twice."""


class RunAsync(Exception):
    """Raised by the inline handler of a procedure with a ``fallback`` when it must wait for
    something it can await (NFSv4 COMMIT on the group committer): the transport then awaits
    ``resume()`` (a coroutine function returning the reply body) on its event loop instead of
    holding a pool thread.  Whatever ran inline before is the handler's to keep track of."""

    def __init__(self, resume) -> None:
        super().__init__("resumed on the event loop")
        self.resume = resume


class FileRegion:
    """Part of a reply that is a byte range of an open file.

    The TCP transport sends it with ``os.sendfile`` (no copy through Python);
    other paths read it with ``os.pread``. ``fileobj`` (anything with
    ``fileno()``) is kept referenced until the reply is sent, so the descriptor
    stays open even if a cache drops it meanwhile.
    """

    __slots__ = ("fileobj", "offset", "count")

    def __init__(self, fileobj, offset: int, count: int) -> None:
        self.fileobj = fileobj
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count

    def read(self) -> bytes:
        data = os.pread(self.fileobj.fileno(), self.count, self.offset)
        if len(data) < self.count:  # file shrank since the reply was built: pad to promised size
            data += b"\0" * (self.count - len(data))
        return data


Buffer = Union[bytes, bytearray, memoryview]
ReplyPart = Union[Buffer, FileRegion]
ReplyBody = Union[Buffer, Sequence[ReplyPart]]
Handler = Callable[["CallContext", Unpacker], Union[ReplyBody, Awaitable[ReplyBody]]]


class CallContext:
    """What a procedure knows of its call besides the arguments."""

    __slots__ = ("xid", "prog", "vers", "proc", "cred", "client", "transport")

    def __init__(self, xid: int, prog: int, vers: int, proc: int, cred: Credential,
                 client: tuple, transport: str) -> None:
        self.xid = xid
        self.prog = prog
        self.vers = vers
        self.proc = proc
        self.cred = cred
        self.client = client
        self.transport = transport

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(xid={self.xid:#x}, prog={self.prog}, vers={self.vers}, "
                f"proc={self.proc}, client={self.client!r}, transport={self.transport!r})")


@dataclass(frozen=True)
class Procedure:
    """One procedure of a program.

    ``cached``: replies go through the duplicate request cache (non-idempotent
    procedures). ``blocking``: a synchronous handler that may wait on disk and
    must run in the transport's thread pool. An ``async def`` handler is awaited.
    ``fallback``: a synchronous handler for the thread pool; ``handler`` (synchronous)
    then runs inline on the transport's thread first and raises ``RunInPool`` when it
    would block (no task, no thread hop for the calls that need neither).
    ``cache_if(record, args_offset)``: for a ``cached`` procedure, decides per call whether
    it goes through the cache (NFSv4 COMPOUND: minor version 0 only); None = always.
    """

    name: str
    handler: Handler
    cached: bool = False
    blocking: bool = False
    fallback: Handler | None = None
    cache_if: Callable[[bytes | bytearray | memoryview, int], bool] | None = None
    is_async: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))


class Program:
    """One version of an RPC program: its number, version, name and procedures."""

    def __init__(self, number: int, version: int, name: str,
                 procedures: dict[int, Procedure]) -> None:
        self.number = number
        self.version = version
        self.name = name
        self.procedures = dict(procedures)


class PendingCall(CallContext):
    """A decoded call whose procedure still has to run.

    It is its own ``context`` (a ``CallContext`` with the call's routing added):
    one object per call instead of two.  ``record`` is the call record as received
    (bytes, bytearray or memoryview); the arguments start at ``args_offset``.
    """

    __slots__ = ("procedure", "program", "record", "args_offset", "drc_token", "resume")

    def __init__(self, xid: int, prog: int, vers: int, proc: int, cred: Credential,
                 client: tuple, transport: str, procedure: Procedure, program: Program,
                 record: bytes | bytearray | memoryview, args_offset: int) -> None:
        CallContext.__init__(self, xid, prog, vers, proc, cred, client, transport)
        self.procedure = procedure
        self.program = program
        self.record = record
        self.args_offset = args_offset
        self.drc_token: object = None

    @property
    def context(self) -> CallContext:
        return self


_BUFFER_TYPES = (bytes, bytearray, memoryview)
# Module globals for the per-call path (an Enum member lookup costs ~70 ns on 3.11).
_RPC_VERSION = rpc.RPC_VERSION
_DRC_NEW = DrcStatus.NEW
_DRC_DONE = DrcStatus.DONE
_REPLY = int(rpc.MsgType.REPLY)
_SUCCESS_HEADER = rpc.SUCCESS_HEADER


def materialize(parts: Iterable[ReplyPart]) -> bytes:
    """Join reply parts into bytes, reading file regions (for UDP and the DRC)."""
    return b"".join(p.read() if type(p) is FileRegion else p for p in parts)


class RpcDispatcher:
    """Routes call records to programs; thread-safe (procedures may run anywhere)."""

    def __init__(self, programs: Iterable[Program] = (),
                 drc: DuplicateRequestCache | None = None) -> None:
        self.drc = drc
        # Offered every record first by the transports and ``call_here``: ``fast_lane(record, client)``
        # answers reply parts, ``()`` (send nothing), IN_POOL (``begin``, then the procedure's fallback in
        # the thread pool) or None (``begin`` and the general path), having changed nothing for the last two.
        # The NFS server sets it to ``acmenfs.nfs3.fastpath.FastPath`` (v3 GETATTR, READ, WRITE).
        self.fast_lane: Callable[[bytes | bytearray | memoryview, tuple], list | tuple | None] | None = None
        self._programs: dict[tuple[int, int], Program] = {}
        self._versions: dict[int, list[int]] = {}
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        for program in programs:
            self.register(program)

    # registry ---------------------------------------------------------------

    def register(self, program: Program) -> None:
        key = (program.number, program.version)
        if key in self._programs:
            raise ValueError(f"program {program.number} version {program.version} already registered")
        self._programs[key] = program
        self._versions.setdefault(program.number, []).append(program.version)
        self._versions[program.number].sort()

    def programs(self) -> list[Program]:
        return list(self._programs.values())

    def count(self, what: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[what] += n

    def counters(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    # the call path ----------------------------------------------------------

    def begin(self, record: bytes | bytearray | memoryview, client: tuple,
              transport: str) -> PendingCall | list[ReplyPart] | None:
        """Decide what to do with one record.

        Returns reply buffers to send now (errors, cache hits), ``None`` to send
        nothing (undecodable record without an xid, non-call message, or a
        duplicate of a call in progress), or a ``PendingCall`` to run.
        """
        try:
            xid, rpcvers, prog, vers, proc, cred_flavor, cred_end, args_offset = \
                rpc.parse_call_header(record)
        except XdrError as exc:
            return self._undecodable(record, exc)
        if rpcvers != _RPC_VERSION:
            self.count("rpc_mismatch")
            return [rpc.encode_rpc_mismatch(xid)]
        try:
            cred = rpc.credential_from(cred_flavor, record[32:cred_end])
        except AuthError as exc:
            self.count("auth_errors")
            log.debug("xid %#x from %s: %s", xid, client, exc)
            return [rpc.encode_auth_error(xid, exc.stat)]
        program = self._programs.get((prog, vers))
        if program is None:
            return self._unavailable(xid, prog)
        procedure = program.procedures.get(proc)
        if procedure is None:
            self.count("proc_unavail")
            return [rpc.encode_accept_error(xid, AcceptStat.PROC_UNAVAIL)]
        pending = PendingCall(xid, prog, vers, proc, cred, client, transport, procedure, program,
                              record, args_offset)
        if procedure.cached and self.drc is not None and (
                procedure.cache_if is None or procedure.cache_if(record, args_offset)):
            return self._check_cache(pending)
        return pending

    def _undecodable(self, record: bytes | bytearray | memoryview, exc: Exception):
        self.count("garbage_calls")
        xid = rpc.peek_xid(record)
        if xid is None or len(record) < 8 or int.from_bytes(record[4:8], "big") != rpc.MsgType.CALL:
            return None
        log.debug("xid %#x: undecodable call header: %s", xid, exc)
        return [rpc.encode_accept_error(xid, AcceptStat.GARBAGE_ARGS)]

    def _unavailable(self, xid: int, prog: int) -> list[ReplyPart]:
        versions = self._versions.get(prog)
        if not versions:
            self.count("prog_unavail")
            return [rpc.encode_accept_error(xid, AcceptStat.PROG_UNAVAIL)]
        self.count("prog_mismatch")
        return [rpc.encode_accept_error(xid, AcceptStat.PROG_MISMATCH, versions[0], versions[-1])]

    def _check_cache(self, pending: PendingCall):
        args = pending.record
        if type(args) is not memoryview:  # slice a view: a bytes slice would copy every argument byte
            args = memoryview(args)
        key = make_request_key(pending.xid, pending.client, pending.prog, pending.vers, pending.proc,
                               args[pending.args_offset:])
        status, value = self.drc.check(key)
        if status is _DRC_NEW:
            pending.drc_token = value
            return pending
        if status is _DRC_DONE:
            self.count("drc_replays")
            return [value]
        self.count("drc_in_progress_drops")
        return None

    def run_sync(self, pending: PendingCall) -> list[ReplyPart]:
        """Run a synchronous procedure (its ``fallback`` if it has one) and build its reply."""
        procedure = pending.procedure
        handler = procedure.fallback if procedure.fallback is not None else procedure.handler
        try:
            body = handler(pending, Unpacker(pending.record, pending.args_offset))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an RPC status
            return self._failed(pending, exc)
        return self._succeeded(pending, body)

    def run_inline_first(self, pending: PendingCall) -> list[ReplyPart] | None:
        """Run the inline handler of a procedure with a ``fallback``; None when it raised
        ``RunInPool`` (then run ``run_sync`` in a thread pool; the DRC entry stays pending)."""
        try:
            body = pending.procedure.handler(pending, Unpacker(pending.record, pending.args_offset))
        except RunInPool:
            return None
        except RunAsync as wait:   # set only here: no per-call cost (read with getattr)
            pending.resume = wait.resume
            return None
        except Exception as exc:  # noqa: BLE001 - every failure becomes an RPC status
            return self._failed(pending, exc)
        return self._succeeded(pending, body)

    async def run_resumed(self, pending: PendingCall) -> list[ReplyPart]:
        """Await the ``resume`` of a call whose inline handler raised ``RunAsync``."""
        try:
            body = await pending.resume()
        except Exception as exc:  # noqa: BLE001
            return self._failed(pending, exc)
        return self._succeeded(pending, body)

    async def run_async(self, pending: PendingCall) -> list[ReplyPart]:
        """Run an ``async def`` procedure and build its reply."""
        try:
            body = await pending.procedure.handler(pending, Unpacker(pending.record, pending.args_offset))
        except Exception as exc:  # noqa: BLE001
            return self._failed(pending, exc)
        return self._succeeded(pending, body)

    def _succeeded(self, pending: PendingCall, body: ReplyBody) -> list[ReplyPart]:
        header = _SUCCESS_HEADER.pack(pending.xid, _REPLY)  # rpc.encode_success_header, inlined
        if pending.drc_token is not None:
            return [self._cache_reply(pending, header, body)]
        if isinstance(body, _BUFFER_TYPES):
            return [header, body]
        return [header, *body]

    def _cache_reply(self, pending: PendingCall, header: bytes, body: ReplyBody) -> bytes:
        """The whole reply as bytes, stored in the DRC for retransmissions."""
        if type(body) is bytes:
            reply = header + body
        else:
            reply = materialize([header, body] if isinstance(body, _BUFFER_TYPES) else [header, *body])
        self.drc.done(pending.drc_token, reply)
        return reply

    def _failed(self, pending: PendingCall, exc: Exception) -> list[ReplyPart]:
        if isinstance(exc, (XdrError, GarbageArgs)):
            self.count("garbage_args")
            log.debug("%s.%s xid %#x: garbage arguments: %s", pending.program.name,
                      pending.procedure.name, pending.xid, exc)
            stat = AcceptStat.GARBAGE_ARGS
        else:
            self.count("system_errors")
            log.error("%s.%s xid %#x from %s failed", pending.program.name,
                      pending.procedure.name, pending.xid, pending.client, exc_info=exc)
            stat = AcceptStat.SYSTEM_ERR
        if pending.drc_token is not None:
            self.drc.drop(pending.drc_token)
        return [rpc.encode_accept_error(pending.xid, stat)]

    def call_here(self, record: bytes | bytearray | memoryview, client: tuple,
                  transport: str = "tcp") -> list[ReplyPart] | None:
        """``begin`` and run a synchronous procedure on this thread (inline handler first,
        then its fallback), as a transport would: for tests and benchmarks, no pool."""
        in_pool = False
        if self.fast_lane is not None:
            parts = self.fast_lane(record, client)
            in_pool = parts is IN_POOL
            if parts is not None and not in_pool:
                return list(parts) or None
        outcome = self.begin(record, client, transport)
        if not isinstance(outcome, PendingCall):
            return outcome
        if outcome.procedure.is_async:
            raise TypeError(f"{outcome.procedure.name} is async: use run_async")
        if outcome.procedure.fallback is not None and not in_pool:
            parts = self.run_inline_first(outcome)
            if parts is not None:
                return parts
            if getattr(outcome, "resume", None) is not None:
                return asyncio.run(self.run_resumed(outcome))
        return self.run_sync(outcome)

    def abandon(self, pending: PendingCall) -> None:
        """Forget a call that will never be answered (connection gone, shutdown)."""
        if pending.drc_token is not None:
            self.drc.drop(pending.drc_token)
            pending.drc_token = None
