"""Helpers of the multi-process worker tests: ``acmenfs nfsd --workers N`` and
``acmenfs serve --workers N`` as subprocesses (stopped by pid), their worker pids,
and raw NFS calls from a chosen client port (so a test decides which worker it hits:
``acmenfs.workers.routing.home_worker``).

A module of its own (not ``conftest``) so test files import it by a unique name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from acmenfs.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3, MountProc, NfsProc
from acmenfs.oncrpc.client import AuthSys, RpcClient
from acmenfs.oncrpc.record import RecordReader
from acmenfs.oncrpc.xdr import Packer, Unpacker
from acmenfs.workers.routing import home_worker
from procstop import stop_process  # tests/procstop.py

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "nfs3"))
from nfs3_helpers import NfsReply, pack_diropargs, pack_fh, skip_wcc  # noqa: E402

__all__ = ["NfsReply", "pack_diropargs", "pack_fh", "skip_wcc"]  # re-exported for the worker tests

ACMENFS = str(Path(sys.executable).with_name("acmenfs"))
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60


def worker_pids(parent_pid: int) -> dict[int, int]:
    """{worker index: pid} of a supervisor's live workers (from /proc)."""
    found = {}
    for task in Path(f"/proc/{parent_pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"acmenfs.workers.worker" in cmdline:
                index = [arg for arg in cmdline if arg.startswith(b"worker=")]
                if index:
                    found[int(index[0][7:])] = int(child)
    return found


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return state == "Z"


def ports_for_workers(workers: int, per_worker: int = 1, start: int = 41000) -> dict[int, list[int]]:
    """Free-looking client ports, ``per_worker`` of them routed to each worker index."""
    chosen: dict[int, list[int]] = {index: [] for index in range(workers)}
    port = start + (os.getpid() % 4000) * 4
    while any(len(ports) < per_worker for ports in chosen.values()):
        port += 1
        index = home_worker(HOST, port, workers)
        if len(chosen[index]) < per_worker:
            probe = socket.socket()
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            finally:
                probe.close()
            chosen[index].append(port)
    return chosen


class NfsdWorkers:
    """``acmenfs nfsd --workers N`` on free ports, exporting ``/e``."""

    def __init__(self, export_dir: Path, state_dir: Path, log_path: Path, workers: int, *extra: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "acmenfs", "nfsd", "--export", f"/e={export_dir}", "--port", "0",
             "--mount-port", "0", "--state-dir", str(state_dir), "--client", HOST, "--squash", "none",
             "--workers", str(workers), *extra],
            stdout=subprocess.DEVNULL, stderr=self.log)
        self.workers = workers
        start = log_path.stat().st_size if log_path.exists() else 0
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            text = log_path.read_bytes()[start:]
            match = re.search(rb"ready: nfs://\S+nfsport=(\d+)&mountport=(\d+)", text)
            if match:
                self.port, self.mount_port = int(match.group(1)), int(match.group(2))
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"acmenfs nfsd did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> dict[int, int]:
        return worker_pids(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        self.log.close()
        return stop_supervisor(self.process)


def stop_supervisor(process: subprocess.Popen) -> int:
    """SIGTERM by pid; its workers must be gone too (killed here if not, and the test fails)."""
    pids = list(worker_pids(process.pid).values()) if process.poll() is None else []
    returncode = stop_process(process, 60)
    for pid in pids:
        if not wait_for_quietly(lambda: pid_gone(pid), 10):
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"worker pid {pid} outlived its supervisor")
    return returncode


def wait_for_quietly(predicate, timeout: float) -> bool:
    try:
        wait_for(predicate, timeout)
        return True
    except AssertionError:
        return False


class PortClient(RpcClient):
    """An RpcClient connected from a chosen local port (SO_REUSEADDR), closed with a reset
    (SO_LINGER 0) so the same address and port can connect again at once."""

    def __init__(self, port: int, local_port: int, *, timeout: float = 30.0, auth: AuthSys | None = None) -> None:
        self.host, self.port, self.transport = HOST, port, "tcp"
        self.timeout = timeout
        self.auth = auth or AuthSys(uid=0, gid=0)
        self._xids = iter(range(1 + local_port * 1000, 1 << 31))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.settimeout(timeout)
        self.sock.bind((HOST, local_port))
        self.sock.connect((HOST, port))
        self._reader = RecordReader(64 * 1024 * 1024)

    def nfs(self, proc: NfsProc, args: bytes, xid: int | None = None) -> NfsReply:
        return NfsReply(self.call(NFS_PROGRAM, NFS_V3, proc, args, xid=xid))

    def mnt(self, path: str) -> bytes:
        packer = Packer()
        packer.pack_string(path)
        reply = Unpacker(self.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, packer.get_buffer()))
        status = reply.unpack_uint()
        assert status == 0, f"MNT {path}: status {status}"
        return reply.unpack_opaque(64)


def create_file(client: PortClient, directory: bytes, name: str) -> bytes:
    args = pack_diropargs(directory, name) + (0).to_bytes(4, "big") + bytes(24)  # UNCHECKED, no attributes
    reply = client.nfs(NfsProc.CREATE, args)
    assert reply.status == 0, reply.status
    assert reply.args.unpack_bool()
    return reply.args.unpack_opaque(64)


def lookup(client: PortClient, directory: bytes, name: str) -> bytes:
    reply = client.nfs(NfsProc.LOOKUP, pack_diropargs(directory, name))
    assert reply.status == 0, f"LOOKUP {name}: {reply.status}"
    return reply.args.unpack_opaque(64)


def write_args(fh: bytes, offset: int, data: bytes, stable: int) -> bytes:
    packer = Packer()
    packer.pack_opaque(fh)
    packer.pack_uhyper(offset)
    packer.pack_uint(len(data))
    packer.pack_uint(stable)
    packer.pack_opaque(data)
    return packer.get_buffer()


def write(client: PortClient, fh: bytes, offset: int, data: bytes, stable: int) -> tuple[int, int, bytes]:
    """-> (status, committed, verifier)"""
    reply = client.nfs(NfsProc.WRITE, write_args(fh, offset, data, stable))
    if reply.status != 0:
        return reply.status, 0, b""
    skip_wcc(reply.args)
    reply.args.unpack_uint()  # count
    committed = reply.args.unpack_uint()
    return 0, committed, reply.args.unpack_fopaque(8)


def commit(client: PortClient, fh: bytes) -> tuple[int, bytes]:
    packer = Packer()
    packer.pack_opaque(fh)
    packer.pack_uhyper(0)
    packer.pack_uint(0)
    reply = client.nfs(NfsProc.COMMIT, packer.get_buffer())
    if reply.status != 0:
        return reply.status, b""
    skip_wcc(reply.args)
    return 0, reply.args.unpack_fopaque(8)


class ServeWorkers:
    """``acmenfs serve --workers N`` on free 127.0.0.1 ports with its own data dir."""

    READY = re.compile(r"acmenfs ready: API (?P<url>https?://\S+?)/v1 .*NFS \S+ port (?P<port>\d+), "
                       r"MOUNT port (?P<mount_port>\d+)")

    def __init__(self, data_dir: Path, log_path: Path, workers: int, *extra: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.log = open(log_path, "ab")
        start = log_path.stat().st_size
        self.process = subprocess.Popen(
            [ACMENFS, "serve", "--data-dir", str(data_dir), "--bind", HOST, "--api-port", "0", "--nfs-port", "0",
             "--mount-port", "0", "--log-level", "info", "--workers", str(workers), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            start_new_session=True)  # its own process group: a test may signal the group (as systemd does)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            match = self.READY.search(log_path.read_text()[start:])
            if match:
                self.url, self.port, self.mount_port = match["url"], int(match["port"]), int(match["mount_port"])
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"acmenfs serve did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.token = (data_dir / "admin.token").read_text().strip()

    def api(self):
        import httpx
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def worker_pids(self) -> dict[int, int]:
        return worker_pids(self.process.pid)

    def log_text(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        self.log.close()
        return stop_supervisor(self.process)
