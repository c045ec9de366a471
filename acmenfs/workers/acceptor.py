"""The supervisor's listening sockets: accept, peek, hand over.

Owns one ``Acceptor`` per listening TCP socket, driven by the supervisor's
event loop: it accepts every pending connection, waits (at most
``PEEK_TIMEOUT`` seconds) until the client's first call header can be peeked
with MSG_PEEK (nothing is consumed: the worker reads the call itself), asks
``routing.choose_worker`` where it goes and passes the descriptor with
``hand_over(index, tag, sock)``; the parent's copy is closed at once.  A
connection nobody can take is closed (counted).  It runs no RPC.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Callable

from acmenfs.workers.routing import HEADER_BYTES, choose_worker

log = logging.getLogger("acmenfs.workers")

PEEK_TIMEOUT = 1.0
ACCEPTS_PER_WAKEUP = 64


class Acceptor:
    def __init__(self, loop: asyncio.AbstractEventLoop, listener: socket.socket, tag: bytes, workers: int,
                 up: Callable[[int], bool], hand_over: Callable[[int, bytes, socket.socket], bool],
                 counters: Counter) -> None:
        self.loop = loop
        self.listener = listener
        self.tag = tag
        self.workers = workers
        self.up = up
        self.hand_over = hand_over
        self.counters = counters
        self._waiting: dict[int, tuple[socket.socket, tuple, asyncio.TimerHandle]] = {}
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        self.loop.remove_reader(self.listener.fileno())
        for sock, _peer, timer in list(self._waiting.values()):
            timer.cancel()
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self._waiting.clear()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: leave it in the backlog for now
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            fd = sock.fileno()
            timer = self.loop.call_later(PEEK_TIMEOUT, self._peek, fd, True)
            self._waiting[fd] = (sock, peer, timer)
            self.loop.add_reader(fd, self._peek, fd, False)

    def _peek(self, fd: int, timed_out: bool) -> None:
        entry = self._waiting.get(fd)
        if entry is None:
            return
        sock, peer, timer = entry
        try:
            header = sock.recv(HEADER_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if not timed_out:
                return
            header = b""
        except OSError:
            header = None
        del self._waiting[fd]
        timer.cancel()
        self.loop.remove_reader(fd)
        if header is None or (header == b"" and not timed_out):  # reset, or closed before any call
            sock.close()
            return
        if timed_out:
            self.counters["peek_timeouts"] += 1
        # A partial header (the client sent less than 24 bytes so far) routes by address alone.
        for _attempt in range(self.workers):  # a worker that cannot take it is marked down by hand_over
            index = choose_worker(peer[0], peer[1], header, self.workers, self.up)
            if index is None:
                break
            if self.hand_over(index, self.tag, sock):
                self.counters["connections_handed_over"] += 1
                sock.close()
                return
        self.counters["connections_refused"] += 1
        sock.close()
