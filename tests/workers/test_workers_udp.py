"""``--udp`` with several workers: the supervisor binds the UDP sockets and worker 0 serves them
(MOUNT and NFS), also after worker 0 is restarted."""

from __future__ import annotations

import os
import signal

from acmenfs.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3, MountProc, NfsProc
from acmenfs.oncrpc.client import AuthSys, RpcClient
from acmenfs.oncrpc.xdr import Packer, Unpacker
from workers_helpers import pack_fh, wait_for


def mnt_and_getattr_over_udp(server) -> int:
    auth = AuthSys(uid=0, gid=0)
    with RpcClient("127.0.0.1", server.mount_port, transport="udp", auth=auth, timeout=20) as mount:
        packer = Packer()
        packer.pack_string("/e")
        reply = Unpacker(mount.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, packer.get_buffer()))
        assert reply.unpack_uint() == 0
        root = reply.unpack_opaque(64)
    with RpcClient("127.0.0.1", server.port, transport="udp", auth=auth, timeout=20) as nfs:
        assert nfs.call(NFS_PROGRAM, NFS_V3, NfsProc.NULL) == b""
        return Unpacker(nfs.call(NFS_PROGRAM, NFS_V3, NfsProc.GETATTR, pack_fh(root))).unpack_uint()


def test_udp_is_served_by_worker_0_across_its_restart(nfsd_workers):
    server = nfsd_workers(2, None, None, "--udp")
    assert mnt_and_getattr_over_udp(server) == 0
    first = server.worker_pids()[0]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: server.worker_pids().get(0) not in (None, first), 30, "worker 0 restarted")
    new_pid = server.worker_pids()[0]
    wait_for(lambda: f"worker 0 started (pid {new_pid})" in server.log_text(), 30, "worker 0 ready")
    assert mnt_and_getattr_over_udp(server) == 0
