"""The supervisor: N worker processes behind one set of listening sockets.

Owns ``Supervisor`` (what ``acmenfs nfsd --workers N`` and ``acmenfs serve
--workers N`` run instead of an in-process ``NfsServer``; same ``port``,
``mount_port``, ``start``, ``stop`` and ``stats``):

* binds the NFS and MOUNT ports (TCP; UDP with ``udp``, given to worker 0) and
  accepts on its event loop (``acceptor``), handing each connection to a worker;
* starts every worker as a fresh interpreter (``subprocess`` with ``pass_fds``:
  never a fork of this process), with one monitor thread per worker that
  restarts it when it dies (logged, counted in ``restarts``);
* keeps the workers consistent: every change of the ``ExportTable`` (its
  listener) pushes the whole table to every live worker and waits for each ack
  before the change returns (a worker that does not answer within
  ``push_timeout`` is killed, logged, and restarted with the current table); a
  (re)started worker gets the table and a fresh write verifier, also pushed to
  all others, before it is handed any connection; quota usage lives in shared
  cells (``acmenfs.fs.quota``) under ``<state dir>/usage``;
* ``stats()`` asks every live worker over its control channel (all at once) and adds up.

It never serves RPC itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from acmenfs.fs.quota import forget_shared_usage
from acmenfs.nfs3.exports import ExportTable
from acmenfs.oncrpc import rpcbind
from acmenfs.workers.acceptor import Acceptor
from acmenfs.workers.channel import (
    MOUNT_TAG, NFS_TAG, ChannelClosed, ControlChannel, ask_all, receive_message, send_connection,
)
from acmenfs.workers.stats import counters_only, sum_stats

log = logging.getLogger("acmenfs.workers")

START_TIMEOUT = 60.0
PUSH_TIMEOUT = 10.0
STATS_TIMEOUT = 5.0
STOP_TIMEOUT = 30.0
QUICK_DEATH_SECONDS = 2.0  # a worker dying sooner than this after starting waits before the next try
CLEAN_EXIT_GRACE_SECONDS = 5.0  # a worker that stopped cleanly: wait this long for our own stop
NFS_PROGRAM, NFS_V3, MOUNT_PROGRAM, MOUNT_V3 = 100003, 3, 100005, 3


class WorkerSlot:
    """One worker position: its current process and channels."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen | None = None
        self.channel: ControlChannel | None = None
        self.handoff: socket.socket | None = None
        self.ready = False
        self.started_at = 0.0
        self.first_start = threading.Event()
        self.first_error: BaseException | None = None
        self.monitor: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def _tcp_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(256)
    except OSError:
        sock.close()
        raise
    return sock


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    def __init__(self, exports: ExportTable, state_dir: str | Path, *, workers: int, busy_poll: float,
                 log_level: str = "INFO", push_timeout: float = PUSH_TIMEOUT,
                 reuse_port: bool = False, nfs4_lease_seconds: float | None = None) -> None:
        """``reuse_port`` (measurement only): every worker accepts on its own SO_REUSEPORT
        listener instead of being handed connections (no NFSv4 routing, no DRC locality
        across a worker restart)."""
        if workers < 2:
            raise ValueError("a supervisor runs 2 or more workers (1 worker: run NfsServer in process)")
        self.exports = exports
        self.state_dir = Path(state_dir)
        self.usage_dir = self.state_dir / "usage"
        self.workers = workers
        self.busy_poll = busy_poll
        self.log_level = log_level
        self.push_timeout = push_timeout
        self.reuse_port = reuse_port
        self.nfs4_lease_seconds = nfs4_lease_seconds  # NFSv4 state lives in worker 0
        self.slots = [WorkerSlot(index) for index in range(workers)]
        self.restarts = 0
        self.counters: Counter[str] = Counter()
        self.verifier = os.urandom(8)
        self.port = 0
        self.mount_port = 0
        self._same_port = False
        self._listeners: list[tuple[bytes, socket.socket]] = []
        self._worker_listeners: list[list[tuple[bytes, socket.socket]]] = []
        self._udp: list[tuple[bytes, socket.socket]] = []
        self._acceptors: list[Acceptor] = []
        self._registered: list[rpcbind.Mapping] = []
        self._table_lock = threading.Lock()  # one table/verifier change at a time, in order
        self._stopping = False
        self._started = False
        self._stats_lock = threading.Lock()
        self._last_stats: dict[int, tuple[int, dict]] = {}  # worker index -> (pid, its latest stats)
        self._retired: list[dict] = []  # counters of dead workers, so sums never go backwards
        exports.subscribe(self._exports_changed)

    # ----- lifecycle ------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 2049, mount_port: int | None = 20048,
                    udp: bool = False, register_portmapper: bool = False) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._bind(host, port, mount_port, udp)
            shutil.rmtree(self.usage_dir, ignore_errors=True)  # figures of an earlier run are not trusted
            try:
                self.usage_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a full pool: workers then count quota usage each on their own
                log.warning("cannot create %s (%s): quota usage is not shared between workers",
                            self.usage_dir, exc)
            for slot in self.slots:
                slot.monitor = threading.Thread(target=self._monitor, args=(slot,), daemon=True,
                                                name=f"acmenfs-worker-{slot.index}")
                slot.monitor.start()
            for slot in self.slots:
                await loop.run_in_executor(None, slot.first_start.wait)
                if slot.first_error is not None:
                    raise RuntimeError(f"worker {slot.index} did not start: {slot.first_error}")
            self._started = True
            if not self.reuse_port:
                for tag, listener in self._listeners:
                    self._acceptors.append(Acceptor(loop, listener, tag, self.workers, self._takes_connections,
                                                    self._hand_over, self.counters))
            if register_portmapper:
                await loop.run_in_executor(None, self._register_portmapper, udp)
        except BaseException:
            await self.stop()
            raise
        log.info("%d workers serving NFS on port %d, MOUNT on port %d (pids %s)", self.workers, self.port,
                 self.mount_port, ", ".join(str(slot.pid) for slot in self.slots))

    def _bind(self, host: str, port: int, mount_port: int | None, udp: bool) -> None:
        reuse = self.reuse_port  # the workers then bind the same ports; ours are closed below
        nfs = _tcp_listener(host, port, reuse)
        self._listeners.append((NFS_TAG, nfs))
        self.port = nfs.getsockname()[1]
        if mount_port is None:
            self._same_port = True
            self.mount_port = self.port
        else:
            mount = _tcp_listener(host, mount_port, reuse)
            self._listeners.append((MOUNT_TAG, mount))
            self.mount_port = mount.getsockname()[1]
        if udp:
            self._udp.append((NFS_TAG, _udp_socket(host, self.port)))
            if not self._same_port:
                self._udp.append((MOUNT_TAG, _udp_socket(host, self.mount_port)))
        if reuse:
            for _slot in self.slots:
                self._worker_listeners.append([(tag, _tcp_listener(host, sock.getsockname()[1], True))
                                               for tag, sock in self._listeners])
            for _tag, listener in self._listeners:  # else the kernel gives it a share nobody accepts
                listener.close()
            self._listeners.clear()

    def _register_portmapper(self, udp: bool) -> None:
        mappings = []
        for protocol in ("tcp", "udp") if udp else ("tcp",):
            mappings += [rpcbind.Mapping(NFS_PROGRAM, NFS_V3, protocol, self.port),
                         rpcbind.Mapping(MOUNT_PROGRAM, MOUNT_V3, protocol, self.mount_port)]
        self._registered = rpcbind.register(mappings)

    async def stop(self) -> None:
        """Stop accepting, ask every worker to stop, wait (SIGKILL after ``STOP_TIMEOUT``)."""
        self._stopping = True
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors.clear()
        for _tag, listener in self._listeners:
            listener.close()
        for _tag, sock in self._udp:
            sock.close()
        for listeners in self._worker_listeners:
            for _tag, listener in listeners:
                listener.close()
        self._listeners.clear()
        self._udp.clear()
        self._worker_listeners.clear()
        loop = asyncio.get_running_loop()
        if self._registered:
            registered, self._registered = self._registered, []
            await loop.run_in_executor(None, rpcbind.unregister, registered)
        await loop.run_in_executor(None, self._stop_workers)

    def _stop_workers(self) -> None:
        for slot in self.slots:
            slot.ready = False
            if slot.channel is not None and slot.process is not None and slot.process.poll() is None:
                try:
                    slot.channel.request({"op": "stop"}, timeout=5.0)
                except (ChannelClosed, RuntimeError):
                    slot.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                slot.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time: killing it", slot.index, slot.pid)
                slot.process.kill()
                slot.process.wait()
        for slot in self.slots:
            if slot.monitor is not None:
                slot.monitor.join(10)
            self._close_channels(slot)

    # ----- workers --------------------------------------------------------------------
    def _monitor(self, slot: WorkerSlot) -> None:
        """Start the worker, wait for it to exit, restart it; until the supervisor stops."""
        while not self._stopping:
            try:
                self._spawn(slot)
            except Exception as exc:  # noqa: BLE001 - logged; the loop retries unless first start
                log.error("worker %d did not start: %s", slot.index, exc)
                self._kill(slot)
                if not slot.first_start.is_set():
                    slot.first_error = exc
                    slot.first_start.set()
                    return
            else:
                slot.first_start.set()
            code = slot.process.wait() if slot.process is not None else None
            slot.ready = False
            self._retire_stats(slot)
            if self._stopping or (code == 0 and self._stop_begins_within(CLEAN_EXIT_GRACE_SECONDS)):
                return
            self.restarts += 1
            log.error("worker %d (pid %s) exited with status %s; restarting it (restart %d)",
                      slot.index, slot.pid, code, self.restarts)
            self._close_channels(slot)
            try:
                forget_shared_usage(self.usage_dir)  # it may have died between a write and its accounting
            except OSError as exc:
                log.warning("could not reset shared quota usage: %s", exc)
            if time.monotonic() - slot.started_at < QUICK_DEATH_SECONDS:
                time.sleep(QUICK_DEATH_SECONDS)

    def _stop_begins_within(self, seconds: float) -> bool:
        """A worker exits with status 0 only when it got SIGTERM.  systemd (KillMode=control-group),
        `timeout` or a shell signal every process of the service at once, so a worker can stop a
        moment before we are told to: give our own stop that long before calling it a crash."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._stopping

    def _spawn(self, slot: WorkerSlot) -> None:
        parent_control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_handoff, child_handoff = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        udp = self._udp if slot.index == 0 else []
        own_listeners = self._worker_listeners[slot.index] if self._worker_listeners else []
        passed = [child_control.fileno(), child_handoff.fileno(), *(s.fileno() for _tag, s in udp),
                  *(s.fileno() for _tag, s in own_listeners)]
        try:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "acmenfs.workers.worker", str(passed[0]), str(passed[1]), f"worker={slot.index}"],
                pass_fds=passed, stdin=subprocess.DEVNULL)
        finally:
            child_control.close()
            child_handoff.close()
        slot.started_at = time.monotonic()
        slot.channel = ControlChannel(parent_control)
        parent_handoff.setblocking(False)
        slot.handoff = parent_handoff
        parent_control.settimeout(START_TIMEOUT)
        hello = receive_message(parent_control)  # the interpreter is up and has imported us
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            raise RuntimeError(f"unexpected first message {hello!r}")
        with self._table_lock:
            if self._stopping:  # a restart racing with stop: this one would never be told to stop
                raise RuntimeError("the supervisor is stopping")
            # A new process: a new verifier for everyone, so clients resend what it may have lost.
            self.verifier = os.urandom(8)
            self._broadcast({"op": "verifier", "verifier": self.verifier}, skip=slot)
            config = {
                "index": slot.index, "state_dir": str(self.state_dir), "usage_dir": str(self.usage_dir),
                "busy_poll": self.busy_poll, "nfs4_lease_seconds": self.nfs4_lease_seconds, "same_port": self._same_port, "log_level": self.log_level,
                "exports": self.exports.list(), "verifier": self.verifier,
                "udp_fds": [(tag, s.fileno()) for tag, s in udp],
                "listen_fds": [(tag, s.fileno()) for tag, s in own_listeners],
            }
            slot.channel.request(config, timeout=START_TIMEOUT)
            slot.ready = True
        log.info("worker %d started (pid %d)", slot.index, slot.pid)

    def _kill(self, slot: WorkerSlot) -> None:
        slot.ready = False
        if slot.process is not None and slot.process.poll() is None:
            slot.process.kill()
            try:
                slot.process.wait(10)
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) does not die", slot.index, slot.pid)

    @staticmethod
    def _close_channels(slot: WorkerSlot) -> None:
        if slot.channel is not None:
            slot.channel.close()
        if slot.handoff is not None:
            slot.handoff.close()

    # ----- connections (event loop) -------------------------------------------------------
    def _takes_connections(self, index: int) -> bool:
        return self.slots[index].ready

    def _hand_over(self, index: int, tag: bytes, sock: socket.socket) -> bool:
        slot = self.slots[index]
        try:
            send_connection(slot.handoff, tag, sock)
        except (BlockingIOError, InterruptedError):
            self.counters["handoff_queue_full"] += 1
            return False
        except OSError as exc:
            log.warning("worker %d cannot take connections (%s): marking it down", index, exc)
            slot.ready = False
            return False
        return True

    # ----- keeping workers consistent -----------------------------------------------------
    def _exports_changed(self, event: str, export) -> None:
        if self._started and not self._stopping:
            self.push_exports()

    def push_exports(self) -> None:
        """Every live worker holds the current export table when this returns, generations
        included (a worker reopens each export whose generation went up)."""
        with self._table_lock:
            self._broadcast({"op": "exports", "exports": self.exports.list()})

    def _broadcast(self, message: dict, skip: WorkerSlot | None = None) -> None:
        """Send to every ready worker and wait for each ack; one that fails is killed (and
        restarted by its monitor, with the current state).  Caller holds ``_table_lock``."""
        slots = [slot for slot in self.slots if slot is not skip and slot.ready and slot.channel is not None]
        replies = ask_all([slot.channel for slot in slots], message, self.push_timeout)
        for slot, reply in zip(slots, replies):
            if not isinstance(reply, Exception):
                continue
            if slot.process is not None and slot.process.poll() is not None:
                slot.ready = False  # died meanwhile: its monitor restarts it with the current state
                continue
            log.error("worker %d (pid %s) did not apply %r within %.0f s (%s): killing it; it restarts "
                      "with the current state", slot.index, slot.pid, message["op"], self.push_timeout, reply)
            self.counters["push_failures"] += 1
            self._kill(slot)

    # ----- introspection ----------------------------------------------------------------
    def worker_stats(self) -> dict[str, int]:
        return {"workers": self.workers, "up": sum(slot.ready for slot in self.slots), "restarts": self.restarts,
                **self.counters}

    def stats(self) -> dict:
        """``NfsServer.stats()`` summed over the live workers, plus ``workers``."""
        slots = [slot for slot in self.slots if slot.ready and slot.channel is not None]
        per_worker = []
        pids = [slot.pid for slot in slots]
        for slot, pid, reply in zip(slots, pids, ask_all([slot.channel for slot in slots], {"op": "stats"},
                                                         STATS_TIMEOUT)):
            if isinstance(reply, Exception):
                log.warning("worker %d gave no stats: %s", slot.index, reply)
                continue
            per_worker.append(reply)
            with self._stats_lock:
                if slot.pid == pid:
                    self._last_stats[slot.index] = (pid, reply)
        with self._stats_lock:
            retired = list(self._retired)
        total = sum_stats(per_worker + retired)
        total["workers"] = self.worker_stats()
        return total

    def _retire_stats(self, slot: WorkerSlot) -> None:
        """Keep the counters last read from a worker that died (what it counted after that read is lost)."""
        with self._stats_lock:
            last = self._last_stats.pop(slot.index, None)
            if last is not None and last[0] == slot.pid:
                self._retired = [sum_stats([*self._retired, counters_only(last[1])])]

    def pids(self) -> list[int | None]:
        return [slot.pid for slot in self.slots]
