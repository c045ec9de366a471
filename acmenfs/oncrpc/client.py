"""A small ONC RPC client: synchronous (TCP or UDP) and asyncio (TCP, many calls in flight).

Owns the client side of the wire: building call messages with AUTH_NONE or
AUTH_SYS, record marking, matching replies to calls by xid, and turning reply
statuses into exceptions. Used by tests, tools, benchmarks and the Cinder
driver's user-space NFS data path. It knows no program semantics: callers pass
encoded arguments and get the encoded result body back.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import struct
import time
from dataclasses import dataclass

from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.record import LAST_FRAGMENT, MAX_FRAGMENT, RecordReader
from acmenfs.oncrpc.rpc import AcceptStat, AuthFlavor, ReplyStat
from acmenfs.oncrpc.xdr import XdrError

_HEADER = struct.Struct(">I")


class RpcError(Exception):
    """Base class of everything an RPC call can fail with."""


class RpcAcceptError(RpcError):
    """The server accepted the call but did not run it successfully."""

    def __init__(self, accept_stat: int, mismatch: tuple[int, int] | None = None) -> None:
        name = AcceptStat(accept_stat).name if accept_stat in AcceptStat._value2member_map_ else accept_stat
        super().__init__(f"call not executed: {name}" + (f" (versions {mismatch[0]}-{mismatch[1]})" if mismatch else ""))
        self.accept_stat = accept_stat
        self.mismatch = mismatch


class RpcDeniedError(RpcError):
    """The server refused the call (RPC version mismatch or authentication error)."""

    def __init__(self, reject_stat: int, auth_stat: int | None = None,
                 mismatch: tuple[int, int] | None = None) -> None:
        what = "RPC_MISMATCH" if reject_stat == rpc.RejectStat.RPC_MISMATCH else f"AUTH_ERROR {auth_stat}"
        super().__init__(f"call denied: {what}")
        self.reject_stat = reject_stat
        self.auth_stat = auth_stat
        self.mismatch = mismatch


class RpcTimeout(RpcError, TimeoutError):
    """No reply arrived in time."""


@dataclass(frozen=True)
class AuthSys:
    """AUTH_SYS credentials to send with every call."""

    uid: int = 0
    gid: int = 0
    gids: tuple[int, ...] = ()
    machine: str = "acmenfs"
    stamp: int = 0

    def encode(self) -> bytes:
        return rpc.encode_auth_sys(self.uid, self.gid, self.gids, self.machine, self.stamp)


def _credential(auth: AuthSys | None) -> tuple[int, bytes]:
    if auth is None:
        return AuthFlavor.NONE, b""
    return AuthFlavor.SYS, auth.encode()


def parse_reply(record: bytes | memoryview) -> tuple[int, memoryview]:
    """Return (xid, result body) of a successful reply, or raise the matching RpcError."""
    try:
        header = rpc.decode_reply_header(record)
    except XdrError as exc:
        raise RpcError(f"malformed reply: {exc}") from exc
    if header.reply_stat == ReplyStat.MSG_DENIED:
        raise RpcDeniedError(header.reject_stat, header.auth_stat, header.mismatch)
    if header.accept_stat != AcceptStat.SUCCESS:
        raise RpcAcceptError(header.accept_stat, header.mismatch)
    view = record if isinstance(record, memoryview) else memoryview(record)
    return header.xid, view[header.body_offset:]


def frame(message: bytes) -> bytes:
    if len(message) > MAX_FRAGMENT:
        raise ValueError("message too large for one fragment")
    return _HEADER.pack(LAST_FRAGMENT | len(message)) + message


def _bind_reserved(sock: socket.socket, host: str) -> None:
    """Bind to a privileged source port, as kernel NFS clients do (needs root)."""
    for port in random.sample(range(600, 1024), 424):
        try:
            sock.bind((host, port))
            return
        except OSError:
            continue
    raise RpcError("no free reserved port to bind")


class RpcClient:
    """A blocking client for one server endpoint; one call at a time."""

    def __init__(self, host: str, port: int, *, transport: str = "tcp", timeout: float = 30.0,
                 auth: AuthSys | None = None, reserved_port: bool = False,
                 max_record_size: int = 64 * 1024 * 1024) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError("transport must be 'tcp' or 'udp'")
        self.host, self.port, self.transport = host, port, transport
        self.timeout = timeout
        self.auth = auth
        self._xids = itertools.count(random.getrandbits(31))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        self.sock = socket.socket(family, kind)
        try:
            self.sock.settimeout(timeout)
            if reserved_port:
                _bind_reserved(self.sock, "::" if family == socket.AF_INET6 else "0.0.0.0")
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self._reader = RecordReader(max_record_size)

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def next_xid(self) -> int:
        return next(self._xids) & 0xFFFFFFFF

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"", *,
             xid: int | None = None, auth: AuthSys | None | bool = True) -> bytes:
        """Call a procedure; returns the encoded result body."""
        xid = self.next_xid() if xid is None else xid
        flavor, body = _credential(self.auth if auth is True else (auth or None))
        message = rpc.encode_call(xid, prog, vers, proc, args, flavor, body)
        record = self.send_and_receive(message, xid)
        return bytes(parse_reply(record)[1])

    def send_and_receive(self, message: bytes, xid: int) -> bytes | memoryview:
        """Send a raw call message and wait for the reply record with that xid."""
        if self.transport == "udp":
            return self._udp_exchange(message, xid)
        self.sock.sendall(frame(message))
        while True:
            for record in self._recv_records():
                if rpc.peek_xid(record) == xid:
                    return record

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use this for malformed input)."""
        self.sock.sendall(data)

    def receive_record(self) -> bytes | memoryview:
        records = self._recv_records()
        return records[0]

    def _udp_exchange(self, message: bytes, xid: int) -> bytes:
        """Send over UDP, retransmitting with backoff until a reply or the timeout."""
        deadline = time.monotonic() + self.timeout
        wait = 0.5
        while True:
            self.sock.send(message)
            resend_at = min(time.monotonic() + wait, deadline)
            while (left := resend_at - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    record = self.sock.recv(65536)
                except (socket.timeout, BlockingIOError):
                    break
                if rpc.peek_xid(record) == xid:
                    return record
            if time.monotonic() >= deadline:
                raise RpcTimeout(f"no reply from {self.host}:{self.port} in {self.timeout} s")
            wait = min(wait * 2, 8.0)

    def _recv_records(self) -> list:
        while True:
            buffer = self._reader.get_buffer()
            try:
                n = self.sock.recv_into(buffer)
            except socket.timeout as exc:
                raise RpcTimeout(f"no reply from {self.host}:{self.port} in {self.timeout} s") from exc
            if n == 0:
                raise RpcError(f"connection to {self.host}:{self.port} closed by server")
            records = self._reader.buffer_updated(n)
            if records:
                return records


class _AsyncClientProtocol(asyncio.BufferedProtocol):
    def __init__(self, client: "AsyncRpcClient") -> None:
        self.client = client
        self.reader = RecordReader(client.max_record_size)

    def connection_made(self, transport) -> None:
        self.client._transport = transport

    def get_buffer(self, sizehint: int):
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        for record in self.reader.buffer_updated(nbytes):
            future = self.client._pending.pop(rpc.peek_xid(record), None)
            if future is not None and not future.done():
                future.set_result(record)

    def connection_lost(self, exc) -> None:
        self.client._fail_all(RpcError(f"connection lost: {exc}"))


class AsyncRpcClient:
    """An asyncio TCP client with any number of calls in flight on one connection."""

    def __init__(self, host: str, port: int, *, auth: AuthSys | None = None,
                 timeout: float = 30.0, max_record_size: int = 64 * 1024 * 1024) -> None:
        self.host, self.port = host, port
        self.auth = auth
        self.timeout = timeout
        self.max_record_size = max_record_size
        self._xids = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self._pending: dict[int, asyncio.Future] = {}
        self._transport: asyncio.Transport | None = None

    async def connect(self) -> "AsyncRpcClient":
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _AsyncClientProtocol(self), self.host, self.port)
        return self

    async def __aenter__(self) -> "AsyncRpcClient":
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail_all(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def call(self, prog: int, vers: int, proc: int, args: bytes = b"") -> memoryview:
        xid = next(self._xids) & 0xFFFFFFFF
        flavor, body = _credential(self.auth)
        message = rpc.encode_call(xid, prog, vers, proc, args, flavor, body)
        future = asyncio.get_running_loop().create_future()
        self._pending[xid] = future
        self._transport.write(frame(message))
        try:
            record = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError as exc:
            self._pending.pop(xid, None)
            raise RpcTimeout(f"no reply to xid {xid:#x} in {self.timeout} s") from exc
        return parse_reply(record)[1]
