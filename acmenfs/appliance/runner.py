"""Runs the whole appliance in one process on one asyncio loop: service, NFS, REST.

Owns ``ServeConfig`` (what ``acmenfs serve`` was asked for), ``ApplianceRunner``
(start order: open the service, which reconciles and publishes the exports; start
the NFS + MOUNT server; tell the service the bound NFS endpoint; start the REST
API; stop in the reverse order) and ``run_appliance`` (the blocking entry point
with signal handling and uvloop). It must not implement any REST, NFS or
storage behaviour itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import uvicorn

from acmenfs.appliance.api import create_app, served_nfs_versions
from acmenfs.appliance.api_http import parse_metrics_auth
from acmenfs.appliance.models import NfsEndpoint
from acmenfs.appliance.service import ApplianceService
from acmenfs.nfs3.exports import ExportTable
from acmenfs.oncrpc.busypoll import DEFAULT_WINDOW

logger = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin.token"
NFS_STATE_DIR = "nfs-state"
API_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    bind: str = "127.0.0.1"
    api_port: int = 8080
    nfs_port: int = 2049
    mount_port: int = 20048
    backend: str | None = None  # None = auto-detect
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "info"
    nfs_enabled: bool = True
    advertise_host: str | None = None  # the NFS host put in share locations
    register_portmapper: bool = False  # PMAP SET of NFS and MOUNT on start
    busy_poll: float = DEFAULT_WINDOW  # seconds the loop polls after NFS work (0 = off)
    metrics_auth: str = "none"  # who may read /metrics: none, token, or client IPs/CIDRs
    workers: int | None = None  # NFS worker processes (None: one per CPU; 1: NFS in this process)
    nfs4_lease_seconds: float = 90  # NFSv4 lease and grace period


class StartupError(Exception):
    """The appliance could not start for a reason the operator can fix (message says how)."""


class _UvicornServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: the runner owns signals."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def advertised_host(bind: str, override: str | None) -> str:
    """The NFS host to hand to clients: the bind address unless it is a wildcard."""
    if override:
        return override
    try:
        if not ipaddress.ip_address(bind).is_unspecified:
            return bind
    except ValueError:
        return bind  # a host name
    return socket.getfqdn()


def _bind_api_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ApplianceRunner:
    """The appliance's parts, started and stopped in order on the running loop."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.exports = ExportTable()
        self.service: ApplianceService | None = None
        self.nfs_server = None
        self.api_server: _UvicornServer | None = None
        self.api_port: int | None = None
        self.admin_token: str | None = None
        self._api_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start everything; on any failure stop what already runs and re-raise."""
        try:
            self._open_service()
            await self._start_nfs()
            await self._start_api()
        except BaseException:
            await self.stop()
            raise

    def _open_service(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        host = advertised_host(config.bind, config.advertise_host)
        self.service = ApplianceService(
            config.data_dir, exports=self.exports, backend=config.backend,
            nfs=NfsEndpoint(host, config.nfs_port, config.mount_port),
        )
        self.service.open()  # logs its own reconcile and migration lines
        self.admin_token = self.service.ensure_admin_token()

    async def _start_nfs(self) -> None:
        if not self.config.nfs_enabled:
            logger.warning("NFS server disabled (--no-nfs): shares are not reachable over NFS")
            return
        try:
            from acmenfs.nfs3.server import NfsServer  # imported only when NFS is served
        except ModuleNotFoundError as exc:
            if exc.name != "acmenfs.nfs3.server":
                raise
            raise StartupError("the NFS server (acmenfs.nfs3.server) is missing from this "
                               "installation; --no-nfs serves the REST API alone") from None

        config = self.config
        state_dir = config.data_dir / NFS_STATE_DIR
        from acmenfs.workers.policy import WorkersRefused, effective_workers
        try:
            workers = effective_workers(config.workers, state_dir)
        except WorkersRefused as exc:
            raise StartupError(str(exc)) from None
        if workers > 1:
            from acmenfs.workers.supervisor import Supervisor
            self.nfs_server = Supervisor(self.exports, state_dir, workers=workers, busy_poll=config.busy_poll,
                                         log_level=config.log_level, nfs4_lease_seconds=config.nfs4_lease_seconds)
        else:
            self.nfs_server = NfsServer(self.exports, state_dir, busy_poll=config.busy_poll)
            self.nfs_server.nfs4.state.configure(config.nfs4_lease_seconds)
        await self.nfs_server.start(host=config.bind, port=config.nfs_port,
                                    mount_port=config.mount_port,
                                    register_portmapper=config.register_portmapper)
        host = advertised_host(config.bind, config.advertise_host)
        self.service.nfs = NfsEndpoint(host, self.nfs_server.port, self.nfs_server.mount_port)

    async def _start_api(self) -> None:
        config = self.config
        nfs_stats = self.nfs_server.stats if self.nfs_server is not None else None
        app = create_app(self.service, nfs_stats=nfs_stats, metrics_auth=parse_metrics_auth(config.metrics_auth),
                         nfs_versions=served_nfs_versions(self.nfs_server))
        if hasattr(self.nfs_server, "worker_stats"):
            from acmenfs.workers.metrics import WorkerCollector
            app.state.metrics_registry.register(WorkerCollector(self.nfs_server.worker_stats))
        uvicorn_config = uvicorn.Config(
            app, host=config.bind, port=config.api_port, log_config=None,
            log_level=config.log_level, lifespan="off", loop="none",
            ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key,
            server_header=False, timeout_graceful_shutdown=10,
        )
        self.api_server = _UvicornServer(uvicorn_config)
        api_socket = _bind_api_socket(config.bind, config.api_port)
        self.api_port = api_socket.getsockname()[1]
        self._api_task = asyncio.create_task(self.api_server.serve(sockets=[api_socket]))
        await self._wait_for_api()

    async def _wait_for_api(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_START_TIMEOUT
        while not self.api_server.started:
            if self._api_task.done():
                self._api_task.result()  # raises what stopped it
                raise StartupError("the REST API server stopped during startup (see the log)")
            if loop.time() > deadline:
                raise StartupError("the REST API server did not start in time")
            await asyncio.sleep(0.02)

    async def wait_until_stopped(self) -> None:
        """Returns when the API server ends (after ``request_stop``, or if it crashes)."""
        if self._api_task is not None:
            await asyncio.shield(self._api_task)

    def request_stop(self) -> None:
        if self.api_server is not None:
            self.api_server.should_exit = True

    async def stop(self) -> None:
        """Stop the API, then NFS, then close the service; safe to call more than once."""
        if self._api_task is not None:
            self.request_stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._api_task
            self._api_task = None
        if self.nfs_server is not None:
            nfs_server, self.nfs_server = self.nfs_server, None
            await nfs_server.stop()
        if self.service is not None:
            service, self.service = self.service, None
            service.close()

    # -- what to tell the operator

    def api_url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        host = self.config.bind
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.api_port}"

    def ready_message(self) -> str:
        lines = [f"acmenfs ready: API {self.api_url()}/v1 (docs {self.api_url()}/docs, console {self.api_url()}/ui)"]
        if self.nfs_server is not None:
            nfs = self.service.nfs
            lines[0] += (f"; NFS {self.config.bind} port {nfs.port}, MOUNT port {nfs.mount_port}"
                         f" (clients use host {nfs.host})")
        else:
            lines[0] += "; NFS disabled"
        lines[0] += f"; data dir {self.config.data_dir}"
        token_path = self.config.data_dir / ADMIN_TOKEN_FILE
        if self.admin_token:
            lines.append(f"acmenfs admin token (shown only this once; saved to {token_path}): "
                         f"{self.admin_token}")
        else:
            lines.append(f"acmenfs admin token: created at the first start, saved to {token_path}")
        return "\n".join(lines)


async def serve_until_signalled(config: ServeConfig, announce: Callable[[str], None]) -> None:
    """Start the appliance, announce it, and run until SIGTERM/SIGINT."""
    runner = ApplianceRunner(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runner.request_stop)
    try:
        await runner.start()
        announce(runner.ready_message())
        await runner.wait_until_stopped()
        logger.info("stopping")
    finally:
        await runner.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_appliance(config: ServeConfig, stream: TextIO = sys.stderr) -> None:
    """Blocking: run the appliance on a fresh (uvloop if available) event loop."""

    def announce(message: str) -> None:
        print(message, file=stream, flush=True)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_until_signalled(config, announce))
