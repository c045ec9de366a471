"""kill -9 of a worker in the middle of a write stream: every byte acknowledged as stable
(FILE_SYNC) or committed (UNSTABLE + COMMIT with the same verifier) is in the file after;
the worker is restarted and counted, the write verifier changed, and the other worker kept
serving throughout."""

from __future__ import annotations

import os
import signal
import threading
import time

from acmenfs.nfs3.const import NfsProc
from workers_helpers import PortClient, commit, lookup, pack_fh, ports_for_workers, wait_for, write

UNSTABLE, FILE_SYNC = 0, 2
CHUNK = 32 * 1024


def chunk_data(index: int) -> bytes:
    return (index.to_bytes(4, "big") * (CHUNK // 4))


def test_kill_9_worker_mid_stream_keeps_acknowledged_bytes(nfsd_workers, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "stream.bin").write_bytes(b"")
    server = nfsd_workers(2)
    ports = ports_for_workers(2, per_worker=1)
    victim, survivor = 1, 0
    with PortClient(server.mount_port, ports[survivor][0]) as mount:
        root = mount.mnt("/e")
    with PortClient(server.port, ports[survivor][0]) as client:
        fh = lookup(client, root, "stream.bin")

    durable: dict[int, bytes] = {}  # chunk index -> data acknowledged stable or committed
    verifiers: list[tuple[float, bytes]] = []
    progress = {"ops": 0, "errors": 0, "after_kill": 0}
    killed = threading.Event()
    done = threading.Event()
    observer_failures: list[str] = []

    def writer() -> None:
        index = 0
        client = PortClient(server.port, ports[victim][0], timeout=10)
        pending: dict[int, tuple[bytes, bytes]] = {}
        while not done.is_set():
            try:
                data = chunk_data(index)
                stable = FILE_SYNC if index % 3 == 0 else UNSTABLE
                status, committed, verifier = write(client, fh, index * CHUNK, data, stable)
                assert status == 0, status
                verifiers.append((time.monotonic(), verifier))
                if committed == FILE_SYNC:
                    durable[index] = data
                else:
                    pending[index] = (data, verifier)
                if len(pending) >= 4:
                    status, commit_verifier = commit(client, fh)
                    assert status == 0, status
                    for pending_index, (pending_data, write_verifier) in pending.items():
                        if write_verifier == commit_verifier:  # else a client resends: not acknowledged
                            durable[pending_index] = pending_data
                    pending.clear()
                index += 1
                progress["ops"] += 1
                if killed.is_set():
                    progress["after_kill"] += 1
            except Exception:  # noqa: BLE001 - the worker died under us: reconnect like a client
                progress["errors"] += 1
                pending.clear()
                client.close()
                while not done.is_set():
                    try:
                        client = PortClient(server.port, ports[victim][0], timeout=10)
                        break
                    except OSError:
                        time.sleep(0.05)
        client.close()

    def observer() -> None:
        with PortClient(server.port, ports[survivor][0], timeout=10) as client:
            while not done.is_set():
                try:
                    status = client.nfs(NfsProc.GETATTR, pack_fh(root)).status
                except Exception as exc:  # noqa: BLE001
                    observer_failures.append(repr(exc))
                    return
                if status != 0:
                    observer_failures.append(f"GETATTR status {status}")

    threads = [threading.Thread(target=writer), threading.Thread(target=observer)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: progress["ops"] >= 60, 60, "writes before the kill")
        pids = server.worker_pids()
        kill_time = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
        killed.set()
        wait_for(lambda: server.worker_pids().get(victim) not in (None, pids[victim]), 30, "worker restarted")
        new_pid = server.worker_pids()[victim]
        wait_for(lambda: f"worker {victim} started (pid {new_pid})" in server.log_text(), 30, "worker ready")
        restarted = len(verifiers)
        wait_for(lambda: len(verifiers) >= restarted + 60, 60, "writes after the restart")
    finally:
        done.set()
        for thread in threads:
            thread.join(60)

    assert not observer_failures, observer_failures
    assert progress["errors"] >= 1, "the kill did not break the writer's connection"
    assert server.worker_pids()[survivor] == pids[survivor]
    assert "restarting it (restart 1)" in server.log_text()
    before = {verifier for stamp, verifier in verifiers if stamp < kill_time}
    after = {verifier for stamp, verifier in verifiers[-10:]}  # all answered after the restart
    assert len(before) == 1 and len(after) == 1 and before != after, (before, after)
    assert server.stop() == 0
    content = (export / "stream.bin").read_bytes()
    assert len(durable) > 60
    for index, data in durable.items():
        assert content[index * CHUNK:(index + 1) * CHUNK] == data, f"acknowledged chunk {index} lost"
