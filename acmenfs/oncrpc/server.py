"""asyncio transports for the RPC dispatcher: TCP with record marking, and UDP.

Owns sockets and the event loop, nothing else: it feeds received records to
``RpcDispatcher.begin``, runs procedures inline, in a thread pool, inline first
then in the pool (a procedure with a ``fallback``), or as coroutines, and writes replies (a ``FileRegion`` goes out with
``os.sendfile``). Many calls may be in flight per connection and replies may
leave out of order. Bad input never hurts other connections: an oversized
record header or a record stalled longer than ``partial_record_timeout``
closes only that connection, and every such event is counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor

from acmenfs.oncrpc import rpcbind
from acmenfs.oncrpc.busypoll import BusyPoller
from acmenfs.oncrpc.dispatch import IN_POOL, FileRegion, PendingCall, RpcDispatcher, materialize
from acmenfs.oncrpc.record import LAST_FRAGMENT, RecordReader, RecordTooLarge, frame_record

log = logging.getLogger("acmenfs.oncrpc.server")

DEFAULT_MAX_RECORD = 2 * 1024 * 1024 + 4096
SEND_BUFFER_BYTES = 4 * 1024 * 1024
_LAST_FRAGMENT_HEADER = struct.Struct(">I")


class RpcServer:
    """Serves an ``RpcDispatcher`` on any number of TCP and UDP endpoints."""

    def __init__(self, dispatcher: RpcDispatcher, *, executor: Executor | None = None,
                 max_record_size: int = DEFAULT_MAX_RECORD,
                 partial_record_timeout: float = 30.0,
                 max_reply_fragment: int | None = None,
                 drc_gc_interval: float = 30.0,
                 worker_threads: int = 16,
                 register_portmapper: bool = False,
                 busy_poller: BusyPoller | None = None) -> None:
        self.dispatcher = dispatcher
        self.busy_poller = busy_poller if busy_poller is not None else BusyPoller(0)
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(worker_threads, thread_name_prefix="rpc")
        self.max_record_size = max_record_size
        self.partial_record_timeout = partial_record_timeout
        self.max_reply_fragment = max_reply_fragment
        self.drc_gc_interval = drc_gc_interval
        self.register_portmapper = register_portmapper
        self._registered: list[rpcbind.Mapping] = []
        self.counters: Counter[str] = Counter()
        self._servers: list[asyncio.base_events.Server] = []
        self._udp_transports: list[asyncio.DatagramTransport] = []
        self._connections: set[RecordProtocol] = set()
        self._sweeper: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    # lifecycle ------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.busy_poller.attach(self.loop)
            self._sweeper = self.loop.create_task(self._sweep_forever())

    async def start_tcp(self, host: str, port: int) -> int:
        """Listen on TCP; returns the bound port (``port`` 0 picks a free one)."""
        self._ensure_started()
        server = await self.loop.create_server(
            lambda: RecordProtocol(self), host, port, reuse_address=True, backlog=256)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()[1]
        await self._register("tcp", bound)
        return bound

    async def start_udp(self, host: str, port: int) -> int:
        self._ensure_started()
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: DatagramRpcProtocol(self), local_addr=(host, port))
        self._udp_transports.append(transport)
        bound = transport.get_extra_info("sockname")[1]
        await self._register("udp", bound)
        return bound

    async def adopt(self, sock: socket.socket) -> None:
        """Serve a socket another process accepted (TCP) or bound (UDP) and handed over
        (``acmenfs.workers``): from here on it is like one of our own."""
        self._ensure_started()
        if sock.type == socket.SOCK_DGRAM:
            transport, _ = await self.loop.create_datagram_endpoint(lambda: DatagramRpcProtocol(self), sock=sock)
            self._udp_transports.append(transport)
        else:
            await self.loop.connect_accepted_socket(lambda: RecordProtocol(self), sock)

    async def _register(self, protocol: str, port: int) -> None:
        """PMAP v2 SET of every program on this endpoint, when enabled."""
        if not self.register_portmapper:
            return
        # UNSET drops a (program, version) for every protocol: set them all again.
        mappings = self._registered + [rpcbind.Mapping(p.number, p.version, protocol, port)
                                       for p in self.dispatcher.programs()]
        self._registered = await self.loop.run_in_executor(self.executor, rpcbind.register,
                                                           mappings)

    async def close(self) -> None:
        self.closing = True
        if self._registered:
            await self.loop.run_in_executor(self.executor, rpcbind.unregister, self._registered)
            self._registered = []
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        for transport in self._udp_transports:
            transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._servers.clear()
        self._udp_transports.clear()
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, int]:
        merged = Counter(self.counters)
        merged.update(self.dispatcher.counters())
        merged["connections"] = len(self._connections)
        return dict(merged)

    async def _sweep_forever(self) -> None:
        """Close connections stuck mid-record; collect expired DRC entries."""
        interval = min(5.0, self.partial_record_timeout / 2)
        last_gc = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self._connections):
                if connection.stalled_since and now - connection.stalled_since > self.partial_record_timeout:
                    self.counters["partial_record_timeouts"] += 1
                    log.info("closing %s: partial record stalled for %.0f s",
                             connection.peer, now - connection.stalled_since)
                    connection.close()
            drc = self.dispatcher.drc
            if drc is not None and now - last_gc >= self.drc_gc_interval:
                last_gc = now
                await self.loop.run_in_executor(self.executor, drc.gc)

    # running calls --------------------------------------------------------

    def handle_record(self, record, client: tuple, transport: str, reply) -> None:
        """Dispatch one record; ``reply(parts)`` is called with the reply, maybe later."""
        lane = self.dispatcher.fast_lane
        in_pool = False
        if lane is not None:
            parts = lane(record, client)
            if parts is not None:
                if parts is not IN_POOL:
                    if parts:
                        reply(parts)
                    return
                in_pool = True
        outcome = self.dispatcher.begin(record, client, transport)
        if outcome is None:
            return
        if not isinstance(outcome, PendingCall):
            reply(outcome)
            return
        procedure = outcome.procedure
        if procedure.is_async:
            self.loop.create_task(self._run_async(outcome, reply))
        elif procedure.fallback is not None:
            if not in_pool:  # (the fast lane was this call's inline try)
                parts = self.dispatcher.run_inline_first(outcome)
                if parts is not None:
                    reply(parts)
                    return
                if getattr(outcome, "resume", None) is not None:   # RunAsync: await, hold no pool thread
                    self.loop.create_task(self._run_resumed(outcome, reply))
                    return
            self._run_in_pool(outcome, reply)
        elif procedure.blocking:
            self._run_in_pool(outcome, reply)
        else:
            reply(self.dispatcher.run_sync(outcome))

    def _run_in_pool(self, pending: PendingCall, reply) -> None:
        future = self.loop.run_in_executor(self.executor, self.dispatcher.run_sync, pending)
        future.add_done_callback(lambda f: self._deliver(f, pending, reply))

    async def _run_resumed(self, pending: PendingCall, reply) -> None:
        reply(await self.dispatcher.run_resumed(pending))
        self.busy_poller.activity(False)

    async def _run_async(self, pending: PendingCall, reply) -> None:
        reply(await self.dispatcher.run_async(pending))
        self.busy_poller.activity(False)

    def _deliver(self, future: asyncio.Future, pending: PendingCall, reply) -> None:
        if future.cancelled():
            self.dispatcher.abandon(pending)
            return
        exc = future.exception()
        if exc is not None:  # run_sync turns handler errors into replies; this is a bug
            log.error("dispatch failed", exc_info=exc)
            self.dispatcher.abandon(pending)
            return
        reply(future.result())
        self.busy_poller.activity(False)


class RecordProtocol(asyncio.BufferedProtocol):
    """One TCP connection: record-marked calls in, record-marked replies out."""

    def __init__(self, server: RpcServer) -> None:
        self.server = server
        self.reader = RecordReader(server.max_record_size)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple = ("?", 0)
        self.stalled_since = 0.0
        self._fd = -1
        self._closed = False
        self._batch: list | None = None  # replies produced while handling one receive
        self._activity = server.busy_poller.activity

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = (peer[0], peer[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self._fd = sock.fileno()
        if self.server.closing:  # accepted while the server was shutting down
            transport.abort()
            return
        self.server._connections.add(self)
        self.server.counters["connections_accepted"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server._connections.discard(self)

    def close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            records = self.reader.buffer_updated(nbytes)
        except RecordTooLarge as exc:
            self.server.counters["oversized_records"] += 1
            log.warning("closing %s: %s", self.peer, exc)
            self.close()
            return
        self.stalled_since = time.monotonic() if self.reader.has_partial else 0.0
        if len(records) == 1:
            self.server.handle_record(records[0], self.peer, "tcp", self.send_reply)
            self._activity()
            return
        # Several calls arrived together: replies produced inline leave in one write.
        self._batch = []
        try:
            for record in records:
                self.server.handle_record(record, self.peer, "tcp", self.send_reply)
        finally:
            batch, self._batch = self._batch, None
        if batch and not self._closed:
            self.transport.writelines(batch)
        self._activity()

    def eof_received(self) -> bool:
        if self.reader.has_partial:
            self.server.counters["truncated_records"] += 1
        return False

    def send_reply(self, parts: list) -> None:
        if self._closed:
            self.server.counters["replies_after_close"] += 1
            return
        # One pass over the parts: total length and whether any is a file region.
        total, has_file = 0, False
        for part in parts:
            total += len(part)
            has_file = has_file or type(part) is FileRegion
        limit = self.server.max_reply_fragment
        if limit is None or total <= limit:
            framed = [_LAST_FRAGMENT_HEADER.pack(LAST_FRAGMENT | total), *parts]
        else:
            framed = frame_record(parts, limit)
        if has_file:
            self._flush_batch()
            self._send_with_file(framed)
        elif self._batch is not None:
            self._batch.extend(framed)
        else:
            self.transport.writelines(framed)

    def _flush_batch(self) -> None:
        if self._batch:
            self.transport.writelines(self._batch)
            self._batch.clear()

    def _send_with_file(self, parts: list) -> None:
        """Send parts containing file regions, with sendfile while the socket keeps up."""
        direct = self._fd >= 0 and self.transport.get_write_buffer_size() == 0
        for index, part in enumerate(parts):
            if not direct:
                self._write_buffered(parts[index:])
                return
            if isinstance(part, FileRegion):
                sent = self._sendfile(part)
                if sent < part.count:
                    rest = FileRegion(part.fileobj, part.offset + sent, part.count - sent)
                    self._write_buffered([rest, *parts[index + 1:]])
                    return
            else:
                sent = self._send_now(part)
                if sent < len(part):
                    self._write_buffered([memoryview(part)[sent:], *parts[index + 1:]])
                    return

    def _send_now(self, data) -> int:
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.close()
            return len(data)

    def _sendfile(self, region: FileRegion) -> int:
        sent = 0
        in_fd = region.fileobj.fileno()
        while sent < region.count:
            try:
                n = os.sendfile(self._fd, in_fd, region.offset + sent, region.count - sent)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return region.count
            if n == 0:  # file shorter than promised: the rest is padded by read()
                break
            sent += n
        return sent

    def _write_buffered(self, parts: list) -> None:
        self.transport.writelines(
            [p.read() if isinstance(p, FileRegion) else p for p in parts])


class DatagramRpcProtocol(asyncio.DatagramProtocol):
    """RPC over UDP: each datagram is one call."""

    def __init__(self, server: RpcServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        client = (addr[0], addr[1])

        def reply(parts: list) -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(materialize(parts), addr)

        self.server.handle_record(data, client, "udp", reply)
        self.server.busy_poller.activity()
