"""Helpers of the NFSv3 server tests: an in-process NfsServer on free 127.0.0.1 ports
(``RunningNfsServer``, on its own event loop in a background thread, stopped by the caller),
``acmenfs nfsd`` as a subprocess (``NfsdProcess``) and ``NfsCalls``, a raw NFS/MOUNT client
built on the project's ``RpcClient`` for what real clients rarely send.

A module of its own (not ``conftest``) so that test files import it by a name unique in
the repository: several test directories have a ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from acmenfs.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3, MountProc, NfsProc
from acmenfs.nfs3.exports import ExportTable
from acmenfs.nfs3.server import NfsServer
from acmenfs.oncrpc.client import AuthSys, RpcClient
from acmenfs.oncrpc.xdr import Packer, Unpacker
from procstop import stop_process  # tests/procstop.py


class RunningNfsServer:
    """An NfsServer serving on a private event loop in a daemon thread."""

    def __init__(self, exports: ExportTable, state_dir: Path, *, mount_port: int | None = 0, udp: bool = False,
                 **options) -> None:
        self.exports = exports
        self.state_dir = state_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nfs-test-loop", daemon=True)
        self.thread.start()
        self.server = NfsServer(exports, state_dir, **options)
        self._run(self.server.start("127.0.0.1", 0, mount_port, udp=udp))
        self.port, self.mount_port = self.server.port, self.server.mount_port

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def url(self, export_path: str = "/e", path: str = "", **query) -> str:
        extra = "".join(f"&{key}={value}" for key, value in query.items())
        return (f"nfs://127.0.0.1{export_path}{path}?version=3&nfsport={self.port}"
                f"&mountport={self.mount_port}{extra}")

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class NfsdProcess:
    """``acmenfs nfsd`` in a subprocess (needed by the libnfs bindings, which keep the GIL
    while they wait for replies), stopped with SIGTERM by pid."""

    def __init__(self, export_dir: Path, state_dir: Path, log_path: Path, *extra: str, ports=(0, 0),
                 prefix: tuple[str, ...] = ()) -> None:
        self.export_dir, self.state_dir, self.log_path = export_dir, state_dir, log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "acmenfs", "nfsd", "--export", f"/e={export_dir}", "--port", str(ports[0]),
             "--mount-port", str(ports[1]), "--state-dir", str(state_dir), "--client", "127.0.0.1",
             "--squash", "none", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            match = re.search(rb"ready: (nfs://\S+nfsport=(\d+)&mountport=(\d+))", log_path.read_bytes())
            if match:
                self.base_url, self.port, self.mount_port = match.group(1).decode(), int(match.group(2)), int(match.group(3))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"acmenfs nfsd did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def url(self, export_path: str = "/e", path: str = "", **query) -> str:
        extra = "".join(f"&{key}={value}" for key, value in query.items())
        return (f"nfs://127.0.0.1{export_path}{path}?version=3&nfsport={self.port}"
                f"&mountport={self.mount_port}{extra}")

    def stop(self) -> int:
        returncode = stop_process(self.process, 30)
        self.log.close()
        return returncode


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: install the Debian package that provides it")
    return path


class NfsReply:
    """Status and the rest of an NFS result body."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.args = Unpacker(body)
        self.status = self.args.unpack_uint()


class NfsCalls:
    """Raw NFSv3/MOUNT v3 calls for tests (encode arguments by hand, decode what is needed)."""

    def __init__(self, server: RunningNfsServer, uid: int = 0, gid: int = 0, gids=()) -> None:
        auth = AuthSys(uid=uid, gid=gid, gids=tuple(gids))
        self.nfs = RpcClient("127.0.0.1", server.port, auth=auth, timeout=15)
        self.mount = RpcClient("127.0.0.1", server.mount_port, auth=auth, timeout=15)

    def close(self) -> None:
        self.nfs.close()
        self.mount.close()

    def mnt(self, path: str) -> tuple[int, bytes]:
        packer = Packer()
        packer.pack_string(path)
        reply = Unpacker(self.mount.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, packer.get_buffer()))
        status = reply.unpack_uint()
        return status, (reply.unpack_opaque(64) if status == 0 else b"")

    def root(self, path: str = "/e") -> bytes:
        status, fh = self.mnt(path)
        assert status == 0, f"MNT {path} failed with {status}"
        return fh

    def call(self, proc: NfsProc, args: bytes, xid: int | None = None) -> NfsReply:
        return NfsReply(self.nfs.call(NFS_PROGRAM, NFS_V3, proc, args, xid=xid))


def pack_fh(fh: bytes) -> bytes:
    packer = Packer()
    packer.pack_opaque(fh)
    return packer.get_buffer()


def pack_diropargs(fh: bytes, name: str | bytes) -> bytes:
    packer = Packer()
    packer.pack_opaque(fh)
    packer.pack_string(name)
    return packer.get_buffer()


NO_SATTR = struct.pack(">IIIIII", 0, 0, 0, 0, 0, 0)


def skip_post_op_attr(reply: Unpacker) -> None:
    if reply.unpack_bool():
        reply.unpack_fopaque(84)


def skip_wcc(reply: Unpacker) -> None:
    if reply.unpack_bool():
        reply.unpack_fopaque(24)
    skip_post_op_attr(reply)


def lookup(calls: NfsCalls, directory: bytes, name: str) -> tuple[int, bytes]:
    reply = calls.call(NfsProc.LOOKUP, pack_diropargs(directory, name))
    return reply.status, (reply.args.unpack_opaque(64) if reply.status == 0 else b"")


def create(calls: NfsCalls, directory: bytes, name: str, mode: int = 0, xid: int | None = None) -> NfsReply:
    """CREATE UNCHECKED (mode 0) / GUARDED (1) with no attributes."""
    return calls.call(NfsProc.CREATE, pack_diropargs(directory, name) + struct.pack(">I", mode) + NO_SATTR, xid=xid)


def new_fh_of(reply: NfsReply) -> bytes:
    assert reply.status == 0, reply.status
    assert reply.args.unpack_bool()
    return reply.args.unpack_opaque(64)


def readdir(calls: NfsCalls, fh: bytes, cookie: int = 0, verifier: bytes = b"\0" * 8, count: int = 4096):
    """READDIR -> (status, verifier, [(name, cookie, fileid)], eof)."""
    reply = calls.call(NfsProc.READDIR, pack_fh(fh) + struct.pack(">Q", cookie) + verifier + struct.pack(">I", count))
    if reply.status != 0:
        return reply.status, None, [], False
    skip_post_op_attr(reply.args)
    verf = reply.args.unpack_fopaque(8)
    entries = []
    while reply.args.unpack_bool():
        fileid = reply.args.unpack_uhyper()
        name = reply.args.unpack_string()
        entries.append((name, reply.args.unpack_uhyper(), fileid))
    return reply.status, verf, entries, reply.args.unpack_bool()


def read_exact(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


os.environ.setdefault("LIBNFS_TIMEOUT", "30")
