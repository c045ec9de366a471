"""One worker process: ``python -m acmenfs.workers.worker CONTROL_FD HANDOFF_FD worker=INDEX``.

Owns the worker's side of the supervisor contract: say hello, take the start
message (configuration, export table, write verifier, UDP sockets), run an
``NfsServer`` that listens nowhere and adopts every connection the supervisor
hands over, and answer control requests (new export table, new verifier,
stats, stop) from a thread while the event loop serves NFS.  It exits when the
supervisor says stop, on SIGTERM, or when the control channel reaches EOF
(the supervisor died: no orphan keeps serving).  Started as a fresh
interpreter, never forked from a running server.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import threading

from acmenfs.workers.channel import (
    MOUNT_TAG, ChannelClosed, receive_connections, receive_message, send_message,
)
from acmenfs.workers.routing import WORKER_FOR_NFS4

log = logging.getLogger("acmenfs.workers")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGTERM when the process that started us goes away (belt and braces beside EOF)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass


class Worker:
    def __init__(self, control: socket.socket, handoff: socket.socket, config: dict) -> None:
        self.control = control
        self.handoff = handoff
        self.config = config
        self.index = config["index"]
        self.server = None
        self.stop_event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> int:
        from acmenfs.fs import quota
        from acmenfs.nfs3.exports import ExportTable
        from acmenfs.nfs3.server import NfsServer

        config = self.config
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        quota.share_usage_between_processes(config["usage_dir"])
        # NFSv4 state (clients, opens, locks, leases) lives in one worker; the supervisor sends
        # connections whose first call is v4 there.  The others do not serve v4 at all, so a
        # connection that starts with v3 and then speaks v4 is refused instead of split-brained.
        self.server = NfsServer(ExportTable(config["exports"]), config["state_dir"], busy_poll=config["busy_poll"],
                                serve_nfs4=self.index == WORKER_FOR_NFS4)
        if config.get("nfs4_lease_seconds") is not None:
            self.server.nfs4.state.configure(config["nfs4_lease_seconds"])
        committer = self.server.state.committer
        committer.verifier = config["verifier"]
        committer.other_writers = True
        await self.server.start(mount_port=None if config["same_port"] else 0, listen=False)
        servers = self.server.rpc_servers
        self.nfs_rpc, self.mount_rpc = servers[0], servers[-1]
        for tag, fd in config.get("udp_fds", ()):  # worker 0 only
            await (self.mount_rpc if tag == MOUNT_TAG else self.nfs_rpc).adopt(socket.socket(fileno=fd))
        for tag, fd in config.get("listen_fds", ()):  # SO_REUSEPORT comparison mode: accept ourselves
            self._accept_on(socket.socket(fileno=fd), tag)
        self.handoff.setblocking(False)
        self.loop.add_reader(self.handoff.fileno(), self._take_connections)
        for signum in (signal.SIGTERM,):
            self.loop.add_signal_handler(signum, self.stop_event.set)
        send_message(self.control, {"ok": True, "pid": os.getpid()})
        threading.Thread(target=self._control_loop, name="acmenfs-worker-control", daemon=True).start()
        log.info("worker %d (pid %d) serving", self.index, os.getpid())
        await self.stop_event.wait()
        self.loop.remove_reader(self.handoff.fileno())
        await self.server.stop()
        polled = self.server.busy_poller.stats()
        log.info("worker %d stopped (busy polling: %d windows, %d calls caught)", self.index, polled["windows"],
                 polled["hits"])
        return 0

    # ----- connections --------------------------------------------------------------
    def _take_connections(self) -> None:
        received = receive_connections(self.handoff)
        if received is None:  # the supervisor closed its end
            self.loop.remove_reader(self.handoff.fileno())
            self.stop_event.set()
            return
        for tag, sock in received:
            target = self.mount_rpc if tag == MOUNT_TAG else self.nfs_rpc
            self.loop.create_task(target.adopt(sock))

    def _accept_on(self, listener: socket.socket, tag: bytes) -> None:
        listener.setblocking(False)
        target = self.mount_rpc if tag == MOUNT_TAG else self.nfs_rpc

        def accept() -> None:
            for _ in range(64):
                try:
                    sock, _peer = listener.accept()
                except (BlockingIOError, InterruptedError):
                    return
                self.loop.create_task(target.adopt(sock))
        self.loop.add_reader(listener.fileno(), accept)

    # ----- control ------------------------------------------------------------------
    def _control_loop(self) -> None:
        while True:
            try:
                message = receive_message(self.control)
            except (ChannelClosed, OSError):
                log.info("worker %d: supervisor gone, stopping", self.index)
                self.loop.call_soon_threadsafe(self.stop_event.set)
                return
            try:
                reply = self._handle(message)
            except Exception as exc:  # noqa: BLE001 - reported to the supervisor
                log.exception("worker %d: control request %r failed", self.index, message.get("op"))
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            try:
                send_message(self.control, reply)
            except OSError:
                self.loop.call_soon_threadsafe(self.stop_event.set)
                return
            if message.get("op") == "stop":
                self.loop.call_soon_threadsafe(self.stop_event.set)
                return

    def _handle(self, message: dict) -> object:
        op = message.get("op")
        if op == "exports":
            # the supervisor's table, generations included: an export whose generation
            # went up was reopened there (e.g. a revert), so it is reopened here too
            self.server.exports.sync(message["exports"])
            return {"ok": True}
        if op == "verifier":
            self.server.state.committer.verifier = message["verifier"]
            return {"ok": True}
        if op == "stats":
            stats = self.server.stats()
            stats["connections"] = sum(server.stats().get("connections", 0) for server in self.server.rpc_servers)
            return stats
        if op in ("stop", "ping"):
            return {"ok": True}
        raise ValueError(f"unknown control request {op!r}")


def main(argv: list[str]) -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    control = socket.socket(fileno=int(argv[0]))
    handoff = socket.socket(fileno=int(argv[1]))
    control.setblocking(True)
    try:
        send_message(control, {"op": "hello", "pid": os.getpid()})
        config = receive_message(control)
    except (ChannelClosed, OSError):
        return 1
    if not isinstance(config, dict) or "index" not in config:  # e.g. the supervisor is stopping
        return 1
    logging.basicConfig(stream=sys.stderr, level=config.get("log_level", "INFO").upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {config['index']}]: %(message)s")
    worker = Worker(control, handoff, config)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(worker.run())
    except Exception:  # noqa: BLE001 - logged for the supervisor's log; it restarts us
        log.exception("worker %d failed", config["index"])
        try:
            send_message(control, {"error": "worker failed to start (see its log)"})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
