"""Fixtures for the REST API and CLI tests: a live API in a thread, a real ``acmenfs serve``.

Owns ``free_port``, ``LiveApi`` (uvicorn serving ``create_app`` for a real
``ApplianceService`` on a temp data dir, in a background thread on a free
127.0.0.1 port) and ``ServeProcess`` (the ``acmenfs serve`` command as a
subprocess on free ports, its ready line parsed, stopped by pid). Test modules
import these helpers by name; the fixtures built on them (``live_api``,
``module_live_api``, ``api``, ``module_api``, ``serve_processes``) live in
tests/appliance/conftest.py, which pairs every start with a stop in teardown.
"""

from __future__ import annotations

import importlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from acmenfs.appliance.api import create_app
from acmenfs.appliance.api_http import parse_metrics_auth
from acmenfs.appliance.service import ApplianceService
from acmenfs.nfs3.exports import ExportTable
from procstop import stop_process  # tests/procstop.py

ACMENFS = str(Path(sys.executable).with_name("acmenfs"))
STARTUP_TIMEOUT = 60.0
READY_PATTERN = re.compile(r"acmenfs ready: API (?P<url>https?://\S+?)/v1 ")
NFS_PATTERN = re.compile(r"NFS \S+ port (?P<port>\d+), MOUNT port (?P<mount_port>\d+)")
TOKEN_PATTERN = re.compile(r"acmenfs admin token \(shown only this once; saved to (?P<path>\S+)\): (?P<token>\S+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nfs_server_available() -> bool:
    try:
        importlib.import_module("acmenfs.nfs3.server")
    except ModuleNotFoundError:
        return False
    return True


class LiveApi:
    """The REST app for a real service, served by uvicorn in a thread on 127.0.0.1."""

    def __init__(self, data_dir: Path, nfs_stats=None, metrics_auth: str = "none") -> None:
        self.service = ApplianceService(data_dir, exports=ExportTable())
        self.service.open()
        self.admin_token = self.service.ensure_admin_token()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        app = create_app(self.service, nfs_stats=nfs_stats, metrics_auth=parse_metrics_auth(metrics_auth))
        config = uvicorn.Config(app, host="127.0.0.1",
                                port=self.port, log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="live-api", daemon=True)

    def start(self) -> "LiveApi":
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STARTUP_TIMEOUT)
        self.service.close()

    def client(self, token: str | None = "admin") -> httpx.Client:
        """An HTTP client; token "admin" means the admin token, None means no header."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.admin_token if token == 'admin' else token}"
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)


class ServeProcess:
    """``acmenfs serve`` as a subprocess on free 127.0.0.1 ports with its own data dir."""

    def __init__(self, data_dir: Path, *extra_args: str, nfs: bool | None = None) -> None:
        self.data_dir = data_dir
        self.nfs = nfs_server_available() if nfs is None else nfs
        self.api_port = free_port()
        self.args = [ACMENFS, "serve", "--data-dir", str(data_dir), "--bind", "127.0.0.1",
                     "--api-port", str(self.api_port), "--nfs-port", "0", "--mount-port", "0",
                     "--log-level", "warning", *extra_args]
        if not self.nfs:
            self.args.append("--no-nfs")
        self.process: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self.url = self.token = None
        self.nfs_port = self.mount_port = None

    def start(self) -> "ServeProcess":
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self.url is None:
            self.stop()
            raise RuntimeError("acmenfs serve did not get ready:\n" + self.stderr_text())
        return self

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            self._parse(line)
        self._ready.set()  # the process ended

    def _parse(self, line: str) -> None:
        ready = READY_PATTERN.search(line)
        if ready:
            self.url = ready.group("url")
            nfs = NFS_PATTERN.search(line)
            if nfs:
                self.nfs_port, self.mount_port = int(nfs.group("port")), int(nfs.group("mount_port"))
        token = TOKEN_PATTERN.search(line)
        if token:
            self.token = token.group("token")
        if line.startswith("acmenfs admin token"):  # always the line after the ready line
            self._ready.set()

    def stderr_text(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """Signal by pid (SIGTERM unless told); returns the exit code (kills after a timeout)."""
        if self.process is None:
            return None
        return stop_process(self.process, STARTUP_TIMEOUT, signum)
