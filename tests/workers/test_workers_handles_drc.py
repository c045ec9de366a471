"""Several workers behind one port: any worker answers any handle, handles outlive restarts
(of one worker and of the whole server), and the duplicate request cache answers a
retransmitted non-idempotent call on the same connection and on a new connection from the
same client address and port, whichever worker the client's port routes to."""

from __future__ import annotations

import os
import signal

import pytest

from acmenfs.nfs3.const import NfsProc
from workers_helpers import (
    PortClient, lookup, pack_diropargs, pack_fh, ports_for_workers, wait_for,
)

NFS3_OK, NFS3ERR_NOENT = 0, 2


def getattr_status(port: int, local_port: int, fh: bytes) -> int:
    with PortClient(port, local_port) as client:
        return client.nfs(NfsProc.GETATTR, pack_fh(fh)).status


def test_any_worker_answers_any_handle_and_handles_outlive_restarts(nfsd_workers, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "sub").mkdir()
    (export / "sub" / "f").write_bytes(b"x" * 100)
    server = nfsd_workers(2)
    ports = ports_for_workers(2, per_worker=1)
    with PortClient(server.mount_port, ports[0][0]) as mount:
        root = mount.mnt("/e")
    with PortClient(server.port, ports[0][0]) as client:  # handles made by worker 0
        fh = lookup(client, lookup(client, root, "sub"), "f")
    for worker in (0, 1):
        assert getattr_status(server.port, ports[worker][0], fh) == NFS3_OK, worker
        assert getattr_status(server.port, ports[worker][0], root) == NFS3_OK, worker

    # one worker restarted (kill -9): the new process answers the old handles
    before = server.worker_pids()
    server_pid_1 = before[1]
    os.kill(server_pid_1, signal.SIGKILL)
    wait_for(lambda: server.worker_pids().get(1) not in (None, server_pid_1), what="worker 1 restarted")
    wait_for(lambda: "worker 1 started" in server.log_text().split("exited with status")[-1], what="worker 1 ready")
    assert getattr_status(server.port, ports[1][0], fh) == NFS3_OK
    assert server.worker_pids()[0] == before[0], "the other worker kept running"

    # the whole server restarted on the same state dir: same handles, any worker
    assert server.stop() == 0
    again = nfsd_workers(2)
    for worker in (0, 1):
        assert getattr_status(again.port, ports[worker][0], fh) == NFS3_OK, worker


@pytest.mark.parametrize("workers", [2, 4])
def test_retransmitted_remove_gets_the_cached_reply(nfsd_workers, tmp_path, workers):
    export = tmp_path / "export"
    export.mkdir()
    ports = ports_for_workers(workers, per_worker=2)
    names = {}
    for worker, local_ports in ports.items():
        for local_port in local_ports:
            names[local_port] = f"victim-{worker}-{local_port}"
            (export / names[local_port]).write_bytes(b"v")
    server = nfsd_workers(workers)
    with PortClient(server.mount_port, ports[0][0]) as mount:
        root = mount.mnt("/e")
    for worker, local_ports in ports.items():
        for local_port in local_ports:
            name = names[local_port]
            args = pack_diropargs(root, name)
            xid = 0x5000_0000 + local_port
            with PortClient(server.port, local_port) as client:
                first = client.call(100003, 3, NfsProc.REMOVE, args, xid=xid)
                assert first[:4] == b"\0\0\0\0", f"REMOVE {name} failed"
                assert not (export / name).exists()
                # the same call again on the same connection: the stored reply, not NOENT
                assert client.call(100003, 3, NfsProc.REMOVE, args, xid=xid) == first
            # a new connection from the same address and port (what Linux does on reconnect)
            with PortClient(server.port, local_port) as client:
                assert client.call(100003, 3, NfsProc.REMOVE, args, xid=xid) == first, \
                    f"worker {worker}: retransmission on a new connection was executed again"
                # a genuinely new call (another xid) is executed: NOENT
                again = client.nfs(NfsProc.REMOVE, args, xid=xid + 1)
                assert again.status == NFS3ERR_NOENT


def test_one_worker_serves_in_process(nfsd_workers, tmp_path):
    server = nfsd_workers(1)
    assert server.worker_pids() == {}  # no supervisor, no children: today's in-process server
    ports = ports_for_workers(1, per_worker=1)
    with PortClient(server.mount_port, ports[0][0]) as mount:
        root = mount.mnt("/e")
    assert getattr_status(server.port, ports[0][0], root) == NFS3_OK
    assert server.stop() == 0
    assert "busy polling (window" in server.log_text() and "workers stopped" not in server.log_text()
