"""The NFSv3 + MOUNT v3 server: assembles programs, exports, DRC and the RPC server.

Owns ``NfsServer`` (the class the appliance embeds and ``acmenfs nfsd`` runs):
it wraps every procedure function so that errors become nfsstat3 replies with
their failure bodies (SERVERFAULT only for unexpected exceptions, logged) and
counts calls, latency and errors per procedure; it registers NFS and MOUNT on
one port or two, TCP and optionally UDP.  It must not contain procedure logic.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import resource
import struct
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from acmenfs.fs.nonblocking import WouldBlock, inline_state
from acmenfs.nfs3 import procs_attrs, procs_data, procs_fsinfo, procs_namespace, procs_readdir
from acmenfs.nfs3.const import (
    MOUNT_PROGRAM, MOUNT_V3, NFS_CACHED_PROCEDURES, NFS_PROGRAM, NFS_V3, MountProc, NfsProc, NfsStat,
)
from acmenfs.nfs3.errors import NfsError, status_for
from acmenfs.nfs3.exports import ExportTable
from acmenfs.nfs3.fastpath import FastPath
from acmenfs.nfs3.mount import MountService
from acmenfs.nfs3.scope import NfsState
from acmenfs.nfs3.xdr import UINT32
from acmenfs.nfs4.program import Nfs4Server
from acmenfs.oncrpc.busypoll import DEFAULT_WINDOW, BusyPoller
from acmenfs.oncrpc.dispatch import Procedure, Program, RpcDispatcher, RunInPool
from acmenfs.oncrpc.drc import DuplicateRequestCache
from acmenfs.oncrpc.server import RpcServer
from acmenfs.oncrpc.xdr import XdrError

log = logging.getLogger("acmenfs.nfs3")
_READ_KEY = ("NFS3", "READ")    # the CallStats keys of READ and WRITE: calls answered by ReadGrants and
_WRITE_KEY = ("NFS3", "WRITE")  # WriteGrants (compiled) are added under them
WRITE_COUNT = struct.Struct(">I")  # WRITE3resok: ... count, committed, verifier[8]: count is 16 bytes from the end

# Number of FALSE words (absent post_op_attr / pre_op_attr) in each failure body.
FAILURE_WORDS = {
    NfsProc.GETATTR: 0, NfsProc.SETATTR: 2, NfsProc.LOOKUP: 1, NfsProc.ACCESS: 1, NfsProc.READLINK: 1,
    NfsProc.READ: 1, NfsProc.WRITE: 2, NfsProc.CREATE: 2, NfsProc.MKDIR: 2, NfsProc.SYMLINK: 2,
    NfsProc.MKNOD: 2, NfsProc.REMOVE: 2, NfsProc.RMDIR: 2, NfsProc.RENAME: 4, NfsProc.LINK: 3,
    NfsProc.READDIR: 1, NfsProc.READDIRPLUS: 1, NfsProc.FSSTAT: 1, NfsProc.FSINFO: 1,
    NfsProc.PATHCONF: 1, NfsProc.COMMIT: 2,
}
INLINE_PROCEDURES = frozenset({NfsProc.NULL})
# Tried inline on the event loop first; re-run in the thread pool if the backend says WouldBlock
# (CREATE/REMOVE inline only in a cached directory, see LocalExportBackend._begin_inline_change;
# WRITE only UNSTABLE into the page cache, see LocalExportBackend._begin_inline_write).
HYBRID_PROCEDURES = frozenset({
    NfsProc.GETATTR, NfsProc.SETATTR, NfsProc.LOOKUP, NfsProc.ACCESS, NfsProc.READ, NfsProc.READLINK,
    NfsProc.FSSTAT, NfsProc.FSINFO, NfsProc.PATHCONF, NfsProc.CREATE, NfsProc.REMOVE, NfsProc.WRITE,
})


def raise_open_file_limit() -> None:
    """The fd cache keeps descriptors open: allow the process as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d: %s", soft, exc)


class _ThreadCounts:
    """One thread's share of the statistics; only that thread writes it."""

    __slots__ = ("calls", "errors")

    def __init__(self) -> None:
        # (program, procedure) -> (calls, latency seconds), replaced as one value so a reader
        # never sees a call without its latency
        self.calls: dict[tuple[str, str], tuple[int, float]] = {}
        self.errors: dict[tuple[str, str, str], int] = {}


class _OwnCounts(threading.local):
    counts: _ThreadCounts | None = None


class CallStats:
    """Per-procedure call counts, latency sums and error counts (thread-safe, exact).

    Every thread counts into its own ``_ThreadCounts`` (no lock per call: one per
    registration and per read); readers merge them (a dict copy is atomic under the GIL).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the list of per-thread counts
        self._all_counts: list[_ThreadCounts] = []
        self._own = _OwnCounts()

    def _register(self) -> _ThreadCounts:
        counts = self._own.counts = _ThreadCounts()
        with self._lock:
            self._all_counts.append(counts)
        return counts

    def record(self, key: tuple[str, str], seconds: float, status: str | None) -> None:
        counts = self._own.counts or self._register()
        calls, total = counts.calls.get(key, (0, 0.0))
        counts.calls[key] = (calls + 1, total + seconds)
        if status is not None:
            error_key = (*key, status)
            counts.errors[error_key] = counts.errors.get(error_key, 0) + 1

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float], dict[tuple[str, str, str], int]]:
        """(calls, latency seconds, errors), summed over all threads."""
        calls: dict[tuple[str, str], int] = defaultdict(int)
        latency: dict[tuple[str, str], float] = defaultdict(float)
        errors: dict[tuple[str, str, str], int] = defaultdict(int)
        with self._lock:
            all_counts = list(self._all_counts)
        for counts in all_counts:
            for key, (count, seconds) in counts.calls.copy().items():
                calls[key] += count
                latency[key] += seconds
            for key, count in counts.errors.copy().items():
                errors[key] += count
        return dict(calls), dict(latency), dict(errors)


def _add_compiled(calls: dict, latency: dict, key: tuple, tables: list) -> int:
    """Add the calls and seconds of compiled grant tables (``counts()``) under ``key``; -> their bytes."""
    total = 0
    for grants in tables:
        count, size, seconds = grants.counts()
        if count:
            calls[key] = calls.get(key, 0) + count
            latency[key] = latency.get(key, 0.0) + seconds
            total += size
    return total


class NfsServer:
    def __init__(self, exports: ExportTable, state_dir: str | Path, *, drc_max_entries: int = 32768,
                 drc_lifetime: float = 120.0, use_kernel_handles: bool | None = None, threads: int = 8,
                 busy_poll: float = DEFAULT_WINDOW, serve_nfs4: bool = True, fast_path: bool = True) -> None:
        """``busy_poll``: seconds the event loop stays awake after NFS work to catch the
        next call without a wake-up (adaptive, see ``acmenfs.oncrpc.busypoll``); 0 = off.
        ``serve_nfs4=False``: version 4 is not registered on the NFS port (a worker process
        other than the one that holds all NFSv4 state: a v4 call reaching it gets
        PROG_MISMATCH 3..3 rather than state of its own that other workers cannot see).
        ``fast_path=False``: every call takes the general path (``acmenfs.nfs3.fastpath`` is
        the shortcut for v3 GETATTR, READ and WRITE; the general path is the reference)."""
        self.fast_path = fast_path
        self.exports = exports
        self.serve_nfs4 = serve_nfs4
        raise_open_file_limit()
        self.state = NfsState(exports, state_dir, use_kernel_handles=use_kernel_handles)
        self.mount_service = MountService(self.state)
        self.drc = DuplicateRequestCache(max_entries=drc_max_entries, lifetime=drc_lifetime)
        self.call_stats = CallStats()
        self.nfs4 = Nfs4Server(self.state, drc=self.drc, call_stats=self.call_stats,  # NFSv4 on the NFS port
                               data_stats=self)   # v4 READ/WRITE bytes in bytes_read/bytes_written
        self.busy_poller = BusyPoller(busy_poll)
        self.bytes_read = 0
        self._read_grants: list = []   # each FastPath's ReadGrants: its READs are counted there
        self._write_grants: list = []  # and its WriteGrants: its WRITEs
        self.bytes_written = 0
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="acmenfs-nfs")
        self.state.executor = self._executor
        self._rpc_servers: list[RpcServer] = []
        self.port = 0
        self.mount_port = 0

    # ----- programs -------------------------------------------------------------
    def nfs_program(self) -> Program:
        handlers: dict[int, Callable] = {}
        for module in (procs_attrs, procs_data, procs_namespace, procs_readdir, procs_fsinfo):
            handlers.update(module.HANDLERS)
        procedures = {}
        for proc, function in handlers.items():
            handler, inline_handler = self._wrap("NFS3", NfsProc(proc).name, function, FAILURE_WORDS.get(proc, 0))
            cached = proc in NFS_CACHED_PROCEDURES
            if proc in HYBRID_PROCEDURES:
                procedures[int(proc)] = Procedure(NfsProc(proc).name, inline_handler, cached=cached,
                                                  fallback=handler)
                continue
            procedures[int(proc)] = Procedure(
                NfsProc(proc).name, handler, cached=cached,
                blocking=proc not in INLINE_PROCEDURES and not inspect.iscoroutinefunction(function),
            )
        return Program(NFS_PROGRAM, NFS_V3, "NFS3", procedures)

    def nfs_dispatcher(self, programs: list[Program]) -> RpcDispatcher:
        """The dispatcher of the NFS port: ``programs`` (built by this server) with its DRC and, unless
        ``fast_path`` is off, v3 GETATTR/READ/WRITE offered to ``FastPath`` first."""
        dispatcher = RpcDispatcher(programs, drc=self.drc)
        if self.fast_path:
            dispatcher.fast_lane = lane = FastPath(self.state, self.drc, self.call_stats, self, dispatcher.count)
            if lane.grants is not None:
                self._read_grants.append(lane.grants)
            if lane.write_grants is not None:
                self._write_grants.append(lane.write_grants)
        return dispatcher

    def mount_program(self) -> Program:
        procedures = {}
        for proc, method in self.mount_service.handlers().items():
            name = MountProc(proc).name
            procedures[int(proc)] = Procedure(name, self._wrap_mount(name, method), blocking=proc == MountProc.MNT)
        return Program(MOUNT_PROGRAM, MOUNT_V3, "MOUNT3", procedures)

    def _wrap(self, program: str, name: str, function: Callable, failure_words: int) -> tuple[Callable, Callable | None]:
        """(handler, inline-first handler): ``function`` with its errors turned into nfsstat3
        replies and its calls counted; the second runs it on the event loop (``inline_state``
        set, WouldBlock becomes RunInPool), None for a coroutine function."""
        key = (program, name)
        state, stats = self.state, self.call_stats
        failure_tail = b"\0\0\0\0" * failure_words
        counts_data = name in ("READ", "WRITE")

        def settle(started: float, result, error: Exception | None):
            """Account for one finished call; a failure becomes its nfsstat3 reply."""
            stats.record(key, time.perf_counter() - started, None if error is None else status_for(error).name)
            if error is None:
                if counts_data:
                    self._count_data(name, result)
                return result
            status = status_for(error)
            if status is NfsStat.SERVERFAULT:
                log.error("%s.%s failed unexpectedly", program, name, exc_info=error)
            else:
                log.debug("%s.%s: %s: %s", program, name, status.name, error)
            body = error.body if isinstance(error, NfsError) and error.body is not None else failure_tail
            return UINT32.pack(status) + body

        if inspect.iscoroutinefunction(function):
            async def async_handler(ctx, args):
                started = time.perf_counter()
                try:
                    return settle(started, await function(state, ctx, args), None)
                except XdrError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure becomes an nfsstat3
                    return settle(started, None, exc)
            return async_handler, None

        record, clock = stats.record, time.perf_counter
        count_data = self._count_data

        def handler(ctx, args):
            started = clock()
            try:
                result = function(state, ctx, args)
            except (XdrError, WouldBlock):  # garbage args / retry in the thread pool
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes an nfsstat3
                return settle(started, None, exc)
            record(key, clock() - started, None)  # settle's success path, inlined: it runs on every call
            if counts_data:
                count_data(name, result)
            return result

        def inline_handler(ctx, args):
            """``handler`` on the event loop, in one frame (it runs on every inline call):
            backend calls that could block raise WouldBlock, and the transport re-runs the
            call with ``handler`` in the thread pool."""
            previous = inline_state.active  # what ``with inline():`` does, without a context manager
            inline_state.active = True
            started = clock()
            try:
                result = function(state, ctx, args)
            except WouldBlock:
                raise RunInPool from None
            except XdrError:  # garbage args
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes an nfsstat3
                return settle(started, None, exc)
            finally:
                inline_state.active = previous
            record(key, clock() - started, None)
            if counts_data:
                count_data(name, result)
            return result
        return handler, inline_handler

    def _count_data(self, name: str, result) -> None:
        if name == "WRITE":
            self.bytes_written += WRITE_COUNT.unpack_from(result, len(result) - 16)[0]
        elif type(result) is list and len(result) > 1:  # READ: [header, data, (padding)]
            self.bytes_read += len(result[1])

    def _wrap_mount(self, name: str, method: Callable) -> Callable:
        key = ("MOUNT3", name)

        def handler(ctx, args):
            started = time.perf_counter()
            result = method(ctx, args)
            self.call_stats.record(key, time.perf_counter() - started, None)
            return result
        return handler

    # ----- lifecycle -------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 2049, mount_port: int | None = 20048,
                    udp: bool = False, register_portmapper: bool = False, listen: bool = True) -> None:
        """Listen; with ``register_portmapper`` also PMAP SET the ports (UNSET on stop).

        ``listen=False`` (a worker process of ``acmenfs.workers``): build the servers of
        ``rpc_servers`` without listening; the supervisor hands them accepted connections."""
        self._register_portmapper = register_portmapper
        self._listening = listen
        nfs, mount = self.nfs_program(), self.mount_program()
        nfs_programs = [nfs, self.nfs4.program()] if self.serve_nfs4 else [nfs]
        if mount_port is None:
            self.port = await self._listen(self.nfs_dispatcher([*nfs_programs, mount]), host, port, udp)
            self.mount_port = self.port
        else:
            self.port = await self._listen(self.nfs_dispatcher(nfs_programs), host, port, udp)
            self.mount_port = await self._listen(RpcDispatcher([mount]), host, mount_port, udp)

    async def _listen(self, dispatcher: RpcDispatcher, host: str, port: int, udp: bool) -> int:
        server = RpcServer(dispatcher, executor=self._executor, busy_poller=self.busy_poller,
                           register_portmapper=getattr(self, "_register_portmapper", False))
        self._rpc_servers.append(server)
        if not getattr(self, "_listening", True):
            return 0
        bound = await server.start_tcp(host, port)
        if udp:
            await server.start_udp(host, bound)
        return bound

    @property
    def rpc_servers(self) -> list[RpcServer]:
        """[NFS, MOUNT] RpcServers, or [NFS + MOUNT] when both share one port."""
        return list(self._rpc_servers)

    async def stop(self) -> None:
        for server in self._rpc_servers:
            await server.close()
        self._rpc_servers.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_blocking)

    def _shutdown_blocking(self) -> None:
        self._executor.shutdown(wait=True)
        self.state.close()

    # ----- introspection ---------------------------------------------------------
    def stats(self) -> dict:
        calls, latency, errors = self.call_stats.snapshot()
        bytes_read = self.bytes_read + _add_compiled(calls, latency, _READ_KEY, self._read_grants)
        bytes_written = self.bytes_written + _add_compiled(calls, latency, _WRITE_KEY, self._write_grants)
        return {
            "calls": calls,
            "latency_seconds_sum": latency,
            "errors": errors,
            "bytes_read": bytes_read,
            "bytes_written": bytes_written,
            "drc": self.drc.stats(),
            "busy_poll": self.busy_poller.stats(),
        }

    def export_usage(self, path: str) -> int:
        return self.state.usage(path)
