"""``acmenfs serve`` as a real subprocess: ready line, admin token, NFS ports, TLS, clean stop.

Each test starts the command on free 127.0.0.1 ports with a temp data dir and
stops it by pid (SIGTERM), checking it exits 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from acmenfs.nfs3.client import NfsClient, NfsError
from acmenfs.oncrpc.client import RpcClient
from api_fixtures import ACMENFS, ServeProcess, nfs_server_available

NFS_PROGRAM, MOUNT_PROGRAM = 100003, 100005


def start(serve_processes, data_dir, *args, **kwargs) -> ServeProcess:
    process = ServeProcess(data_dir, *args, **kwargs)
    serve_processes.append(process)
    return process.start()


@pytest.mark.skipif(not nfs_server_available(), reason="acmenfs.nfs3.server is not there yet")
def test_serve_runs_api_and_nfs_and_stops_cleanly(serve_processes, tmp_path, rpcbind):
    data_dir = tmp_path / "data"
    # Debian 12's rpcinfo asks rpcbind for the program even with -n: register with it.
    serve = start(serve_processes, data_dir, "--rpcbind")
    assert serve.token, serve.stderr_text()
    token_file = data_dir / "admin.token"
    assert token_file.read_text().strip() == serve.token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert serve.nfs_port and serve.mount_port and serve.nfs_port != serve.mount_port

    for port, program in ((serve.nfs_port, NFS_PROGRAM), (serve.mount_port, MOUNT_PROGRAM)):
        with RpcClient("127.0.0.1", port, timeout=10) as rpc:
            assert rpc.call(program, 3, 0) == b""  # NULL answers an empty result
        result = subprocess.run(["rpcinfo", "-n", str(port), "-t", "127.0.0.1", str(program), "3"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr

    headers = {"Authorization": f"Bearer {serve.token}"}
    with httpx.Client(base_url=serve.url, headers=headers, timeout=30) as api:
        share = api.post("/v1/shares", json={"name": "vol-1", "size": 1 << 20, "volume": {"name": "volume-1"},
                                             "access": [{"client": "127.0.0.1"}]}).json()
        assert share["nfs"]["port"] == serve.nfs_port and share["nfs"]["mount_port"] == serve.mount_port
        assert share["nfs"]["url"].endswith(f"?version=3&nfsport={serve.nfs_port}&mountport={serve.mount_port}")
        assert api.get("/v1/pool").json()["nfs"] == {"host": "127.0.0.1", "port": serve.nfs_port,
                                                    "mount_port": serve.mount_port}
        # The share made over REST is mountable at once over NFS, in the same process.
        with NfsClient("127.0.0.1", serve.nfs_port, serve.mount_port, timeout=10) as nfs:
            root = nfs.mount(share["export_path"])
            assert nfs.getattr(nfs.lookup(root, "volume-1")).size == 1 << 20
            assert api.delete(f"/v1/shares/{share['id']}").status_code == 204
            with pytest.raises(NfsError):
                nfs.mount(share["export_path"])
        metrics = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    calls = {(s.labels["program"], s.labels["procedure"]): s.value for s in metrics["acmenfs_nfs_calls"].samples}
    # one NULL from our RpcClient and one from rpcinfo, per program
    assert calls[("NFS3", "NULL")] == 2 and calls[("MOUNT3", "NULL")] == 2
    assert calls[("MOUNT3", "MNT")] == 2 and calls[("NFS3", "LOOKUP")] == 1
    assert serve.stop() == 0
    assert "Traceback" not in serve.stderr_text()


def test_second_start_keeps_token_and_shares(serve_processes, tmp_path):
    data_dir = tmp_path / "data"
    first = start(serve_processes, data_dir, nfs=False)
    with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {first.token}"}) as api:
        share_id = api.post("/v1/shares", json={"name": "kept", "size": 1 << 20}).json()["id"]
    assert first.stop(signal.SIGINT) == 0  # Ctrl-C stops as cleanly as SIGTERM
    second = start(serve_processes, data_dir, nfs=False)
    assert second.token is None
    assert "created at the first start, saved to" in second.stderr_text()
    assert first.token not in second.stderr_text()
    with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {first.token}"}) as api:
        assert api.get(f"/v1/shares/{share_id}").json()["name"] == "kept"
    assert second.stop() == 0


def test_serve_over_tls(serve_processes, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    serve = start(serve_processes, tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key), nfs=False)
    assert serve.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=serve.url, verify=context, timeout=30) as api:
        assert api.get("/v1/version").json()["api_version"] == 1
        assert api.get("/v1/pool", headers={"Authorization": f"Bearer {serve.token}"}).status_code == 200
    with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
        httpx.get(serve.url + "/v1/version", timeout=30)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ACMENFS, "pool", "show", "--json", "--url", serve.url, f"--token={serve.token}",
                               *args], capture_output=True, text=True, timeout=60)

    assert cli("--cacert", str(cert)).returncode == 0
    assert cli("--insecure").returncode == 0
    untrusted = cli()
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr
    assert serve.stop() == 0


def run_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ACMENFS, "serve", *args], capture_output=True, text=True, timeout=60)


def test_serve_refuses_bad_options_without_traceback(tmp_path):
    half_tls = run_serve("--data-dir", str(tmp_path / "d1"), "--tls-cert", str(tmp_path / "missing.pem"))
    assert half_tls.returncode == 2 and "--tls-cert and --tls-key go together" in half_tls.stderr
    missing = run_serve("--data-dir", str(tmp_path / "d2"), "--tls-cert", str(tmp_path / "c.pem"),
                        "--tls-key", str(tmp_path / "k.pem"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad_port = run_serve("--data-dir", str(tmp_path / "d3"), "--api-port", "70000")
    assert bad_port.returncode == 2 and "port must be 0..65535" in bad_port.stderr
    for result in (half_tls, missing, bad_port):
        assert "Traceback" not in result.stderr


def test_serve_reports_a_busy_port_and_exits_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_serve("--data-dir", str(tmp_path / "data"), "--api-port", str(port), "--nfs-port", "0",
                           "--mount-port", "0", *([] if nfs_server_available() else ["--no-nfs"]))
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr and "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


class _GetattrPacer:
    """A thread doing NFS GETATTR calls back to back, keeping each reply's arrival time."""

    def __init__(self, nfs_port: int, mount_port: int, export_path: str) -> None:
        self.client = NfsClient("127.0.0.1", nfs_port, mount_port, timeout=60)
        self.root = self.client.mount(export_path)
        self.replies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="getattr-pacer", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.client.getattr(self.root)
            self.replies.append(time.monotonic())

    def __enter__(self) -> "_GetattrPacer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(60)
        self.client.close()


@pytest.mark.skipif(not nfs_server_available(), reason="acmenfs.nfs3.server is not there yet")
def test_a_long_copy_clone_never_stalls_nfs_in_the_same_process(serve_processes, make_data_dir):
    """``serve`` carries REST and NFS in one process: a clone that copies (ext4: no reflinks)
    runs in the API's thread pool, and NFS keeps answering meanwhile."""
    data_dir = make_data_dir("ext4")
    serve = start(serve_processes, data_dir)
    headers = {"Authorization": f"Bearer {serve.token}"}
    data = os.urandom(1 << 20)
    with httpx.Client(base_url=serve.url, headers=headers, timeout=600) as api:
        share = api.post("/v1/shares", json={"name": "big", "size": 1 << 30, "volume": {"name": "volume-1"},
                                             "access": [{"client": "127.0.0.1"}]}).json()
        volume = next(data_dir.rglob("volume-1"))
        with open(volume, "r+b") as out:
            for _ in range(384):
                out.write(data)
        snapshot = api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"}).json()
        with _GetattrPacer(serve.nfs_port, serve.mount_port, share["export_path"]) as pacer:
            time.sleep(0.5)
            started = time.monotonic()
            clone = api.post(f"/v1/snapshots/{snapshot['id']}/clone", json={"name": "copy"})
            finished = time.monotonic()
            time.sleep(0.2)
        assert clone.status_code == 201, clone.text
    during = [t for t in pacer.replies if started <= t <= finished]
    gaps = [b - a for a, b in zip([started, *during], [*during, finished])]
    copy_seconds = finished - started
    # A stalled loop answers nothing while the copy runs: one gap as long as the copy.
    assert copy_seconds > 0.2, f"the copy took only {copy_seconds:.3f} s: too short to tell"
    assert len(during) >= 10 and max(gaps) < copy_seconds / 2, (
        f"{len(during)} GETATTR replies during a {copy_seconds:.2f} s copy, longest gap {max(gaps):.2f} s")
