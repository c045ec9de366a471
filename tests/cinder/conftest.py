"""Fixtures for the Cinder driver tests: a live appliance, real Cinder configuration.

Owns: starting ``acmenfs serve`` (from ``$ACMENFS_BIN`` or ``acmenfs`` on PATH)
on 127.0.0.1 free ports in a temporary data dir and stopping it by pid; one
process-wide oslo.config setup for Cinder (sqlite database, ``fake:/``
transport, file coordination backend, lock and image dirs under tmp); building
drivers for a backend section; ``mount_base``, a per-test ``nfs_mount_point_base``
for the kernel-mount data path. Must not mock the appliance.

These tests run in the Cinder venv (``scripts/cinder-venv.sh``), not the main
one: ``/work/venv-cinder/bin/pytest tests/cinder``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OS_CINDER_DISABLE_EVENTLET_PATCHING", "true")

import importlib  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

try:
    from cinder import monkey_patch  # noqa: E402
except ImportError:
    monkey_patch = None

if monkey_patch is None:
    # Another interpreter (the main dev venv) collecting the whole tree: these
    # tests need Cinder, which lives only in its own venv. Say so, loudly.
    collect_ignore_glob = ["test_cinder_*.py"]
    CINDER_TESTS_NOTICE = ("tests/cinder NOT RUN: Cinder is not installed in this interpreter; run "
                           "scripts/cinder-venv.sh /work/venv-cinder && /work/venv-cinder/bin/pytest tests/cinder")

    def pytest_report_header(config):
        return CINDER_TESTS_NOTICE

    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(CINDER_TESTS_NOTICE, yellow=True, bold=True)
else:
    # What cinder-volume does first: pick the service backend (threading, as the
    # environment variable above asks) before any other Cinder module loads.
    monkey_patch.patch()
    from cinder import objects  # noqa: E402

    objects.register_all()

BACKEND = "acme"
CINDER_HOST = "testhost"
READY_TIMEOUT = 30.0
READY_PATTERN = re.compile(r"acmenfs ready: API (?P<url>https?://\S+)/v1")
NFS_PATTERN = re.compile(r"NFS \S+ port (?P<nfs>\d+), MOUNT port (?P<mount>\d+)")


def appliance_binary() -> str:
    """``$ACMENFS_BIN``, else an ``acmenfs`` on PATH that is not this (Cinder) venv's
    (installed there with --no-deps, it cannot serve), else this checkout's ``.venv``'s,
    else the main dev venv's.
    Never a silent skip: no binary is a failure that says what to set."""
    explicit = os.environ.get("ACMENFS_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"ACMENFS_BIN={explicit!r} is not an executable", pytrace=False)
        return explicit
    this_venv = os.path.realpath(sys.prefix)
    checkout_venv = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "acmenfs")
    for candidate in (shutil.which("acmenfs"), checkout_venv, "/work/venv/bin/acmenfs"):
        if (candidate and os.access(candidate, os.X_OK)
                and not os.path.realpath(candidate).startswith(this_venv + os.sep)):
            return candidate
    pytest.fail("no appliance binary: set ACMENFS_BIN to the acmenfs executable of the main "
                "venv (the one with fastapi/uvicorn), e.g. ACMENFS_BIN=/work/venv/bin/acmenfs",
                pytrace=False)


@dataclass
class Appliance:
    url: str
    token: str
    data_dir: Path
    nfs_port: int | None
    mount_port: int | None
    process: subprocess.Popen

    @property
    def nfs_available(self) -> bool:
        return self.nfs_port is not None


def _start_appliance(binary: str, data_dir: Path, log_path: Path, nfs: bool,
                     extra_args: list[str]) -> subprocess.Popen:
    command = [binary, "serve", "--data-dir", str(data_dir), "--bind", "127.0.0.1",
               "--api-port", "0", "--nfs-port", "0", "--mount-port", "0", "--log-level", "warning",
               *extra_args]
    if not nfs:
        command.append("--no-nfs")
    log = open(log_path, "wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_ready(process: subprocess.Popen, log_path: Path) -> str | None:
    """The ready line, or None when the process exited first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if READY_PATTERN.search(line):
                return line
        if process.poll() is not None:
            return None
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"acmenfs serve did not become ready in {READY_TIMEOUT}s; log:\n{log_path.read_text()}",
                pytrace=False)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_appliance(base: Path, extra_args: list[str] = ()) -> Appliance:
    """Run ``acmenfs serve`` in ``base`` on free loopback ports (NFS when the tree has it)."""
    binary = appliance_binary()
    data_dir = base / "data"
    log_path = base / "serve.log"
    process = _start_appliance(binary, data_dir, log_path, nfs=True, extra_args=list(extra_args))
    ready = _wait_ready(process, log_path)
    if ready is None and "acmenfs.nfs3.server" in log_path.read_text():
        # The NFS server is not written yet: serve the API alone; NFS tests say so.
        process = _start_appliance(binary, data_dir, log_path, nfs=False, extra_args=list(extra_args))
        ready = _wait_ready(process, log_path)
    if ready is None:
        pytest.fail(f"acmenfs serve exited with {process.returncode}; log:\n{log_path.read_text()}",
                    pytrace=False)
    url = READY_PATTERN.search(ready)["url"]
    ports = NFS_PATTERN.search(ready)
    token = (data_dir / "admin.token").read_text().strip()
    return Appliance(url, token, data_dir, int(ports["nfs"]) if ports else None,
                     int(ports["mount"]) if ports else None, process)


def stop_appliance(appliance: Appliance) -> None:
    _stop(appliance.process)


@pytest.fixture(scope="session")
def appliance(tmp_path_factory) -> Appliance:
    """One live appliance for the session."""
    found = start_appliance(tmp_path_factory.mktemp("appliance"))
    yield found
    stop_appliance(found)


def require_nfs(appliance: Appliance) -> None:
    if not appliance.nfs_available:
        pytest.skip("the appliance's NFS server (acmenfs.nfs3.server) is not in this tree yet: "
                    "acmenfs serve runs with --no-nfs, so NFS data-path tests cannot run")


def configure_cinder(base: Path, appliance: Appliance) -> Path:
    """Write and parse a real cinder.conf (sqlite DB, fake transport, file locks and
    coordination under ``base``), create the schema, start the coordinator."""
    conf_path = base / "cinder.conf"
    conf_path.write_text(f"""
[DEFAULT]
transport_url = fake:/
state_path = {base}
host = {CINDER_HOST}
enabled_backends = {BACKEND}
image_conversion_dir = {base}/conversion
rootwrap_config = /nonexistent/rootwrap.conf
auth_strategy = noauth

[database]
connection = sqlite:///{base}/cinder.sqlite

[oslo_concurrency]
lock_path = {base}/locks

[coordination]
backend_url = file://{base}/coordination

[cinder_sys_admin]
# Cinder's privsep daemon (format inspection) without sudo: the tests run as root.
helper_command = {Path(sys.executable).parent / "privsep-helper"} --config-file {conf_path}

[{BACKEND}]
volume_driver = acmenfs.cinder.driver.AcmeNfsDriver
volume_backend_name = {BACKEND}
acmenfs_api_url = {appliance.url}
acmenfs_api_token = {appliance.token}
acmenfs_data_path = userspace
nfs_mount_point_base = {base}/mnt
""")
    from oslo_config import cfg

    importlib.import_module("cinder.common.config")   # registers Cinder's global options
    from cinder import coordination

    cfg.CONF([f"--config-file={conf_path}"], project="cinder", default_config_files=[])
    from cinder.db import migration

    migration.db_sync()
    coordination.COORDINATOR.start()
    return conf_path


@pytest.fixture(scope="session")
def cinder_conf(tmp_path_factory, appliance):
    """Cinder configured once per process against the session's appliance."""
    from cinder import coordination

    base = tmp_path_factory.mktemp("cinder")
    configure_cinder(base, appliance)
    yield base
    coordination.COORDINATOR.stop()


@pytest.fixture
def context():
    from cinder import context as cinder_context

    return cinder_context.get_admin_context()


def make_driver(group: str = BACKEND, setup: bool = True, execute=None, **overrides):
    """A driver for backend section ``group`` with option ``overrides`` applied."""
    from oslo_config import cfg

    from cinder import context as cinder_context
    from cinder.volume import configuration as cinder_configuration
    from cinder.volume import driver as cinder_driver
    from acmenfs.cinder import options
    from acmenfs.cinder.driver import AcmeNfsDriver

    configuration = cinder_configuration.Configuration(cinder_driver.volume_opts, config_group=group)
    configuration.append_config_values(options.acmenfs_opts)
    configuration.append_config_values(options.reused_cinder_opts)
    for name, value in overrides.items():
        cfg.CONF.set_override(name, value, group=group)
    kwargs = {"configuration": configuration, "host": f"{CINDER_HOST}@{group}"}
    if execute is not None:
        kwargs["execute"] = execute
    driver = AcmeNfsDriver(**kwargs)
    if setup:
        driver.do_setup(cinder_context.get_admin_context())
    return driver


def fresh_group() -> str:
    """A backend section name no other test used (overrides are process-wide)."""
    return f"acme_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def driver(cinder_conf):
    return make_driver(BACKEND)


@pytest.fixture
def rest(appliance):
    """A REST client on the same appliance for checking what the driver did."""
    from acmenfs.cinder.appliance_client import ApplianceClient

    client = ApplianceClient(appliance.url, appliance.token)
    yield client
    client.close()


@pytest.fixture
def mount_base(tmp_path):
    """A per-test ``nfs_mount_point_base`` for drivers with ``acmenfs_data_path=mount``."""
    return str(tmp_path / "mnt")


def backend_section(group: str, appliance: Appliance, **overrides) -> str:
    """Register and fill a backend section ``[group]`` (what cinder.conf would hold) that
    points at ``appliance``; returns the group. For a second backend beside [acme]."""
    from oslo_config import cfg

    from cinder.volume import driver as cinder_driver
    from cinder.volume import manager as volume_manager
    from acmenfs.cinder import options

    for opts in (volume_manager.volume_backend_opts, cinder_driver.volume_opts, options.acmenfs_opts,
                 options.reused_cinder_opts):
        cfg.CONF.register_opts(opts, group=group)
    values = {"volume_driver": "acmenfs.cinder.driver.AcmeNfsDriver", "volume_backend_name": group,
              "acmenfs_api_url": appliance.url, "acmenfs_api_token": appliance.token,
              "acmenfs_data_path": "userspace", **overrides}
    for name, value in values.items():
        cfg.CONF.set_override(name, value, group=group)
    return group


class VolumeService:
    """A VolumeManager for one backend, optionally reachable over (fake-transport) RPC
    under the same two topics cinder.service.Service.start listens on."""

    def __init__(self, backend: str = BACKEND, rpc_servers: bool = False) -> None:
        import oslo_messaging as messaging
        from oslo_config import cfg

        from cinder import context as cinder_context
        from cinder import objects
        from cinder import rpc
        from cinder.objects import base as objects_base
        from cinder.volume import manager as volume_manager
        from cinder.volume import rpcapi as volume_rpcapi
        from cinder.volume import volume_utils

        if not rpc.initialized():
            rpc.init(cfg.CONF)
        self.host = f"{CINDER_HOST}@{backend}"
        ctxt = cinder_context.get_admin_context()
        service = objects.Service(ctxt, host=self.host, binary="cinder-volume", topic="cinder-volume",
                                  report_count=0, disabled=False,
                                  rpc_current_version=volume_rpcapi.VolumeAPI.RPC_API_VERSION,
                                  object_current_version=objects_base.OBJ_VERSIONS.get_current())
        service.create()
        self.manager = volume_manager.VolumeManager(host=self.host, service_name=backend)
        self.manager.init_host(added_to_cluster=None, service_id=service.id)
        if not self.manager.driver.initialized:
            raise RuntimeError("the driver did not initialise in the VolumeManager (see the log)")
        self._servers = []
        if rpc_servers:
            serializer = objects_base.CinderObjectSerializer(objects.Service.get_minimum_obj_version(ctxt))
            for target in (messaging.Target(topic="cinder-volume", server=self.host),
                           messaging.Target(topic=f"cinder-volume.{self.host}",
                                            server=volume_utils.extract_host(self.host, "host"))):
                server = rpc.get_server(target, [self.manager], serializer)
                server.start()
                self._servers.append(server)

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.wait()


def start_volume_manager():
    """Cinder's real VolumeManager for the configured backend, initialised (driver set up)."""
    return VolumeService(BACKEND).manager


def volume_file_io(appliance: Appliance, rest, share_id: str, name: str, *, data: bytes | None = None,
                   length: int = 0) -> tuple[bytes, tuple[int, int]]:
    """Write ``data`` into the volume file ``name`` of a share and/or read its first
    ``length`` bytes, over NFS as root under this host's own no-squash rule (removed
    after). Returns the bytes read and the file's (uid, gid)."""
    import io

    from acmenfs.nfs3.client import NfsClient

    share = rest.add_access(share_id, "127.0.0.1", squash="none")
    try:
        with NfsClient("127.0.0.1", appliance.nfs_port, appliance.mount_port) as client:
            fh = client.lookup(client.mount(share["export_path"]), name)
            if data is not None:
                client.upload(fh, io.BytesIO(data), len(data))
            out = io.BytesIO()
            if length:
                client.download(fh, out, length)
            attributes = client.getattr(fh)
            return out.getvalue(), (attributes.uid, attributes.gid)
    finally:
        rest.remove_access(share_id, "127.0.0.1")


def db_volume(ctxt, size=1, backend=BACKEND, **fields_):
    """A volume row as the API would leave it for the manager's create_volume."""
    from cinder import objects
    from cinder.objects import fields
    from cinder.volume import volume_types

    volume_type = volume_types.get_default_volume_type(ctxt)
    fields_.setdefault("volume_type_id", volume_type["id"])
    fields_.setdefault("status", "creating")
    volume = objects.Volume(context=ctxt, size=size, host=f"{CINDER_HOST}@{backend}#{backend}",
                            attach_status=fields.VolumeAttachStatus.DETACHED, project_id=ctxt.project_id,
                            user_id=ctxt.user_id, availability_zone="nova", **fields_)
    volume.create()
    return volume


def db_snapshot(ctxt, volume):
    """A snapshot row as the API would leave it for the manager's create_snapshot."""
    from cinder import objects
    from cinder.objects import fields

    snapshot = objects.Snapshot(context=ctxt, volume_id=volume.id, status=fields.SnapshotStatus.CREATING,
                                volume_size=volume.size, project_id=ctxt.project_id, user_id=ctxt.user_id,
                                volume_type_id=volume.volume_type_id, progress="0%")
    snapshot.create()
    return snapshot
