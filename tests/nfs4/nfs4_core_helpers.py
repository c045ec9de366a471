"""Sans-IO helpers for the NFSv4 core tests: a NfsServer's v4 program behind a dispatcher, fed
call records as bytes, and a small COMPOUND builder / reply parser (raw XDR, independent of the
server's own encoders where it matters)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.server import NfsServer
from acmenfs.oncrpc import rpc
from acmenfs.oncrpc.dispatch import RpcDispatcher, materialize
from acmenfs.oncrpc.xdr import Unpacker

LOCAL = ("127.0.0.1", 800)
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


# one copy of the XDR builders and of the reply types; the parsers below decode op results
# into the shapes these tests assert on (attribute numbers, readdir entries)
from acmenfs.nfs4.client import (  # noqa: E402,F401 - re-exported to the test modules
    ZERO_STATEID, OpResult, Reply, bitmap, compound_args, opaque, u32)
SEQUENCE_STUB_BODY = b"\0" * 36   # a SEQUENCE4resok-shaped body for the tests' stand-in SEQUENCE

# op builders: each returns the nfs_argop4 bytes
def putrootfh(): return u32(24)
def putpubfh(): return u32(23)
def putfh(fh: bytes): return u32(22) + opaque(fh)
def getfh(): return u32(10)
def savefh(): return u32(32)
def restorefh(): return u32(31)
def lookup(name): return u32(15) + opaque(name)
def lookupp(): return u32(16)
def getattr_(*attrs): return u32(9) + bitmap(*attrs)
def access(bits): return u32(3, bits)
def readlink(): return u32(27)
def remove(name): return u32(28) + opaque(name)
def rename(old, new): return u32(29) + opaque(old) + opaque(new)
def link(name): return u32(11) + opaque(name)
def secinfo(name): return u32(33) + opaque(name)
def secinfo_no_name(style=0): return u32(52, style)
def read(offset, count, stateid=ZERO_STATEID): return u32(25) + stateid + U64.pack(offset) + u32(count)
def write(offset, data, stable=2, stateid=ZERO_STATEID):
    return u32(38) + stateid + U64.pack(offset) + u32(stable) + opaque(data)
def commit(offset=0, count=0): return u32(5) + U64.pack(offset) + u32(count)
def readdir(cookie=0, verf=b"\0" * 8, dircount=8192, maxcount=32768, attrs=(1, 20)):
    return u32(26) + U64.pack(cookie) + verf + u32(dircount, maxcount) + bitmap(*attrs)
def fattr(attrs: dict[int, bytes]) -> bytes:
    return bitmap(*attrs) + opaque(b"".join(attrs[a] for a in sorted(attrs)))
def setattr_(attrs: dict[int, bytes], stateid=ZERO_STATEID): return u32(34) + stateid + fattr(attrs)
def verify(attrs: dict[int, bytes]): return u32(37) + fattr(attrs)
def nverify(attrs: dict[int, bytes]): return u32(17) + fattr(attrs)
def create_dir(name, attrs=None): return u32(6, 2) + opaque(name) + fattr(attrs or {})
def create_symlink(name, target, attrs=None): return u32(6, 5) + opaque(target) + opaque(name) + fattr(attrs or {})
def create_dev(name, kind=4, major=1, minor=3, attrs=None):
    spec = u32(major, minor) if kind in (3, 4) else b""
    return u32(6, kind) + spec + opaque(name) + fattr(attrs or {})
def seek(offset, what, stateid=ZERO_STATEID): return u32(69) + stateid + U64.pack(offset) + u32(what)
def allocate(offset, length, stateid=ZERO_STATEID): return u32(59) + stateid + U64.pack(offset) + U64.pack(length)
def deallocate(offset, length, stateid=ZERO_STATEID): return u32(62) + stateid + U64.pack(offset) + U64.pack(length)
def clone(src_off, dst_off, count): return u32(71) + ZERO_STATEID + ZERO_STATEID + U64.pack(src_off) + U64.pack(dst_off) + U64.pack(count)
def sequence(): return u32(53) + b"\0" * 16 + u32(1, 0, 0, 0)


def _fattr(u: Unpacker):
    words = u.unpack_array(u.unpack_uint)
    attrs = {i * 32 + b for i, w in enumerate(words) for b in range(32) if w >> b & 1}
    return attrs, u.unpack_opaque()


def _readdir(u: Unpacker):
    verf = u.unpack_fopaque(8)
    entries = []
    while u.unpack_bool():
        cookie = u.unpack_uhyper()
        name = u.unpack_string()
        entries.append((cookie, name, _fattr(u)))
    return verf, entries, u.unpack_bool()


PARSERS = {
    3: lambda u: (u.unpack_uint(), u.unpack_uint()),
    5: lambda u: u.unpack_fopaque(8),
    6: lambda u: ((u.unpack_uint(), u.unpack_uhyper(), u.unpack_uhyper()), u.unpack_array(u.unpack_uint)),
    9: _fattr,
    10: lambda u: u.unpack_opaque(),
    11: lambda u: (u.unpack_uint(), u.unpack_uhyper(), u.unpack_uhyper()),
    25: lambda u: (u.unpack_bool(), u.unpack_opaque()),
    26: _readdir,
    27: lambda u: u.unpack_opaque(),
    28: lambda u: (u.unpack_uint(), u.unpack_uhyper(), u.unpack_uhyper()),
    29: lambda u: ((u.unpack_uint(), u.unpack_uhyper(), u.unpack_uhyper()),
                   (u.unpack_uint(), u.unpack_uhyper(), u.unpack_uhyper())),
    33: lambda u: [u.unpack_uint() for _ in range(u.unpack_uint())],
    52: lambda u: [u.unpack_uint() for _ in range(u.unpack_uint())],
    38: lambda u: (u.unpack_uint(), u.unpack_uint(), u.unpack_fopaque(8)),
    69: lambda u: (u.unpack_bool(), u.unpack_uhyper()),
    53: lambda u: (u.unpack_fopaque(16), [u.unpack_uint() for _ in range(5)]),   # SEQUENCE4resok
}


def parse_compound(body: bytes) -> Reply:
    u = Unpacker(body)
    status, tag = u.unpack_uint(), u.unpack_opaque()
    reply = Reply(status, tag)
    for _ in range(u.unpack_uint()):
        op, op_status = u.unpack_uint(), u.unpack_uint()
        value = None
        if op == 34:
            value = u.unpack_array(u.unpack_uint)   # SETATTR: attrsset even on failure
        elif op_status == 0 and op in PARSERS:
            value = PARSERS[op](u)
        reply.results.append(OpResult(op, op_status, value))
    u.done()
    return reply


class Sans4:
    """A NfsServer's NFSv3 and NFSv4 programs behind one dispatcher (with the DRC)."""

    def __init__(self, exports: ExportTable, state_dir: Path) -> None:
        self.server = NfsServer(exports, state_dir, threads=2)
        self.nfs4 = self.server.nfs4
        self.dispatcher = RpcDispatcher([self.server.nfs_program(), self.nfs4.program()], drc=self.server.drc)
        self.xid = 0

    def close(self) -> None:
        self.server._executor.shutdown(wait=True)
        self.server.state.close()

    def rpc(self, args: bytes, *, proc: int = 1, vers: int = 4, client=LOCAL, uid: int = 0, gid: int = 0,
            xid: int | None = None) -> bytes:
        """The whole reply record."""
        if xid is None:
            self.xid += 1
            xid = self.xid
        record = rpc.encode_call(xid, 100003, vers, proc, args, cred_flavor=1, cred_body=rpc.encode_auth_sys(uid, gid))
        parts = self.dispatcher.call_here(record, client, "tcp")
        return materialize(parts) if parts is not None else None

    def body(self, args: bytes, **kw) -> bytes:
        reply = self.rpc(args, **kw)
        assert struct.unpack_from(">IIIIII", reply)[1:] == (1, 0, 0, 0, 0), reply[:24]
        return reply[24:]

    def compound(self, ops: list[bytes], minor: int = 0, tag: bytes = b"", **kw) -> Reply:
        return parse_compound(self.body(compound_args(ops, minor, tag), **kw))

    def fh_of(self, path: str, **kw) -> bytes:
        """The handle of a pseudo-fs path (e.g. '/e/sub/file')."""
        ops = [putrootfh()] + [lookup(part) for part in path.split("/") if part] + [getfh()]
        reply = self.compound(ops, **kw)
        assert reply.status == 0, reply
        return reply.results[-1].value


# ----- fixtures (tests/nfs4/conftest.py makes them visible to every module here) ----------------

@pytest.fixture
def v4_exports(export_dir: Path, tmp_path: Path) -> ExportTable:
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret").write_text("x")
    return ExportTable([
        Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),)),
        Export("/shares/abc", str(export_dir), rules=(ClientRule("127.0.0.0/8", squash="none"),)),
        Export("/shares/only10", str(other), rules=(ClientRule("10.0.0.5", squash="none"),)),
        Export("/ro", str(other), read_only=True, rules=(ClientRule("*", squash="none"),)),
    ])


@pytest.fixture
def v4(v4_exports: ExportTable, tmp_path: Path):
    server = Sans4(v4_exports, tmp_path / "state")
    yield server
    server.close()


# ----- a real server and a TCP client ------------------------------------------------------------
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from procstop import stop_process  # noqa: E402 - tests/procstop.py


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: install the Debian package that provides it")
    return path


class NfsdProcess4:
    """``acmenfs nfsd`` in a subprocess on free ports, stopped by pid."""

    def __init__(self, export_dir: Path, state_dir: Path, log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "acmenfs", "nfsd", "--export", f"/e={export_dir}", "--port", "0",
             "--mount-port", "0", "--state-dir", str(state_dir), "--client", "127.0.0.1", "--squash", "none", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            match = re.search(rb"ready: nfs://\S+nfsport=(\d+)", log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"acmenfs nfsd did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"nfs://127.0.0.1{path}?version=4&nfsport={self.port}"

    def stop(self) -> None:
        stop_process(self.process, 30)
        self.log.close()


class TcpCompound:
    """Synchronous COMPOUNDs over one TCP connection (record marking, AUTH_SYS)."""

    def __init__(self, port: int, uid: int = 0, gid: int = 0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.uid, self.gid = uid, gid
        self.xid = 0x4000

    def close(self) -> None:
        self.sock.close()

    def _recv_exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        return data

    def call(self, args: bytes, proc: int = 1) -> bytes:
        self.xid += 1
        record = rpc.encode_call(self.xid, 100003, 4, proc, args, cred_flavor=1,
                                 cred_body=rpc.encode_auth_sys(self.uid, self.gid))
        self.sock.sendall(struct.pack(">I", 0x80000000 | len(record)) + record)
        reply = b""
        while True:
            mark = struct.unpack(">I", self._recv_exact(4))[0]
            reply += self._recv_exact(mark & 0x7FFFFFFF)
            if mark & 0x80000000:
                break
        assert struct.unpack_from(">IIIIII", reply)[1:] == (1, 0, 0, 0, 0), reply[:24]
        return reply[24:]

    def compound(self, ops: list[bytes], minor: int = 0, tag: bytes = b"") -> Reply:
        return parse_compound(self.call(compound_args(ops, minor, tag)))
