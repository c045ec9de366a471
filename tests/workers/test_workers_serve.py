"""``acmenfs serve --workers 2``: access-rule changes reach every worker before the API
answers, a share's quota holds across workers, /metrics adds up all workers, SIGTERM
stops everything."""

from __future__ import annotations

import os
import signal
import threading

from prometheus_client.parser import text_string_to_metric_families

from acmenfs.nfs3.const import NfsProc
from acmenfs.fs.quota import scan_usage
from workers_helpers import PortClient, create_file, pack_fh, pid_gone, ports_for_workers, wait_for, write

NFS3ERR_ACCES = 13
NFS3ERR_NOSPC, NFS3ERR_DQUOT = 28, 69
FILE_SYNC = 2


def create_share(api, name: str, size: int, access=({"client": "127.0.0.1", "squash": "none"},)) -> dict:
    response = api.post("/v1/shares", json={"name": name, "size": size, "access": list(access)})
    assert response.status_code == 201, response.text
    return response.json()


def test_removed_access_rule_denies_on_every_worker(serve_workers):
    serve = serve_workers(2)
    with serve.api() as api:
        share = create_share(api, "acl", 1 << 20)
        ports = ports_for_workers(2, per_worker=2)
        with PortClient(serve.mount_port, ports[0][0]) as mount:
            root = mount.mnt(share["export_path"])
        # connections kept open on both workers, two per worker
        clients = [PortClient(serve.port, port) for local_ports in ports.values() for port in local_ports]
        try:
            for client in clients:
                assert client.nfs(NfsProc.GETATTR, pack_fh(root)).status == 0
            response = api.delete(f"/v1/shares/{share['id']}/access", params={"client": "127.0.0.1"})
            assert response.status_code == 200, response.text
            # the API has answered: every worker denies, on open connections and on new ones
            for client in clients:
                assert client.nfs(NfsProc.GETATTR, pack_fh(root)).status == NFS3ERR_ACCES
        finally:
            for client in clients:
                client.close()
        for local_ports in ports.values():
            with PortClient(serve.port, local_ports[0]) as client:
                assert client.nfs(NfsProc.GETATTR, pack_fh(root)).status == NFS3ERR_ACCES


def test_quota_holds_across_workers(serve_workers):
    quota, chunk = 4 << 20, 64 << 10
    serve = serve_workers(2)
    with serve.api() as api:
        share = create_share(api, "quota", quota)
    ports = ports_for_workers(2, per_worker=1)
    with PortClient(serve.mount_port, ports[0][0]) as mount:
        root = mount.mnt(share["export_path"])
    accepted = {0: 0, 1: 0}
    refused = {}

    both_wrote_once = threading.Barrier(2, timeout=60)

    def writer(worker: int) -> None:
        with PortClient(serve.port, ports[worker][0]) as client:
            fh = create_file(client, root, f"fill-{worker}")
            offset = 0
            while offset < 2 * quota:  # each alone would happily fill twice the quota
                if offset == chunk:  # on a busy machine one writer could fill it before the other starts
                    both_wrote_once.wait()
                status, _committed, _verifier = write(client, fh, offset, b"q" * chunk, FILE_SYNC)
                if status != 0:
                    refused[worker] = status
                    return
                accepted[worker] += chunk
                offset += chunk

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert set(refused.values()) <= {NFS3ERR_NOSPC, NFS3ERR_DQUOT} and len(refused) == 2, refused
    assert accepted[0] > 0 and accepted[1] > 0, accepted  # both workers wrote
    share_dir = serve.data_dir / "shares" / share["id"]
    in_flight = 2 * chunk  # one call in flight per writer
    assert sum(accepted.values()) <= quota + in_flight, accepted
    assert scan_usage(str(share_dir)) <= quota + in_flight


def _samples(text: str) -> dict:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_sum_workers_and_sigterm_stops_all(serve_workers):
    serve = serve_workers(2)
    with serve.api() as api:
        share = create_share(api, "metrics", 1 << 20)
        ports = ports_for_workers(2, per_worker=1)
        with PortClient(serve.mount_port, ports[0][0]) as mount:
            root = mount.mnt(share["export_path"])
        before = _samples(api.get("/metrics").text)
        calls = {0: 7, 1: 11}
        for worker, count in calls.items():
            with PortClient(serve.port, ports[worker][0]) as client:
                for _ in range(count):
                    assert client.nfs(NfsProc.GETATTR, pack_fh(root)).status == 0
        after = _samples(api.get("/metrics").text)
    key = ("acmenfs_nfs_calls_total", (("procedure", "GETATTR"), ("program", "NFS3")))
    assert after[key] - before.get(key, 0) == sum(calls.values())
    assert after[("acmenfs_nfs_workers", ())] == 2
    assert after[("acmenfs_nfs_workers_up", ())] == 2
    assert after[("acmenfs_nfs_worker_restarts_total", ())] == 0

    # a worker killed: restarted, counted, and the sums go on from the live workers
    victim = serve.worker_pids()[1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: serve.worker_pids().get(1) not in (None, victim), 30, "worker 1 restarted")
    with serve.api() as api:
        def restarted() -> dict | None:
            samples = _samples(api.get("/metrics").text)
            return samples if samples[("acmenfs_nfs_workers_up", ())] == 2 else None
        samples = wait_for(restarted, 30, "both workers up again")
    assert samples[("acmenfs_nfs_worker_restarts_total", ())] == 1
    assert samples[key] >= after[key]  # the dead worker's counts, as last read, are kept: no reset
    pids = list(serve.worker_pids().values())
    assert len(pids) == 2
    assert serve.stop() == 0
    for pid in pids:
        wait_for(lambda: pid_gone(pid), 10, f"worker {pid} gone")


def test_sigterm_to_the_whole_process_group_stops_without_restarts(serve_workers):
    """systemd (KillMode=control-group), `timeout` and a shell's job control signal every process
    of the service at once: the workers see SIGTERM as early as their supervisor.  A worker that
    stops then must not be taken for a crash and restarted into a supervisor that is stopping."""
    serve = serve_workers(2)
    pids = list(serve.worker_pids().values())
    assert len(pids) == 2
    start = len(serve.log_text())
    os.killpg(serve.process.pid, signal.SIGTERM)
    assert serve.process.wait(60) == 0
    for pid in pids:
        wait_for(lambda: pid_gone(pid), 10, f"worker {pid} gone")
    log = serve.log_text()[start:]
    assert "restarting" not in log and "Traceback" not in log, log
