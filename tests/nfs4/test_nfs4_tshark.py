"""tshark decodes the NFSv4 traffic of `acmenfs nfsd` (raw COMPOUNDs over TCP: lookups,
attributes, READDIR, CREATE, WRITE, READ, COMMIT, RENAME, REMOVE, errors; with B's session
ops in the tree also a 4.2 session with SEEK/ALLOCATE/DEALLOCATE/SECINFO_NO_NAME and the 4.1/4.2
attributes, and libnfs 4.0) without one malformed frame, and sees the operations as NFSv4."""

from __future__ import annotations

import subprocess

import pytest
from tshark_capture import loopback_capture

from acmenfs.nfs4.const import Op
from acmenfs.nfs4.program import load_ops
from nfs4_core_helpers import (
    NfsdProcess4, TcpCompound, access, commit, create_dir, create_symlink, getattr_, getfh, lookup,
    putrootfh, read, readdir, readlink, remove, rename, require_tool, restorefh, savefh, secinfo,
    setattr_, u32, verify, write, U64, seek, allocate, deallocate,
)


LIBNFS_CAN_MOUNT = {Op.SETCLIENTID, Op.OPEN} <= set(load_ops())
SESSIONS = {Op.EXCHANGE_ID, Op.CREATE_SESSION, Op.SEQUENCE} <= set(load_ops())


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=timeout)


@pytest.fixture
def nfsd4(tmp_path):
    directory = tmp_path / "export"
    directory.mkdir()
    (directory / "f").write_bytes(b"hello tshark")
    (directory / "cat.txt").write_bytes(b"for libnfs\n")
    (directory / "img").write_bytes(b"i" * 4096)
    server = NfsdProcess4(directory, tmp_path / "state", tmp_path / "nfsd.log")
    yield server
    server.stop()


def test_tshark_decodes_nfs4_compounds_without_malformed_frames(nfsd4, tmp_path):
    tshark = require_tool("tshark")
    capture = tmp_path / "nfs4.pcapng"
    with loopback_capture(tshark, f"tcp port {nfsd4.port}", capture):
        client = TcpCompound(nfsd4.port)
        e = [putrootfh(), lookup("e")]
        client.call(b"", proc=0)
        assert client.compound([putrootfh(), getfh(), getattr_(0, 1, 3, 4, 8, 20, 33, 35, 36, 37, 55), readdir()],
                               tag=b"tshark").status == 0
        assert client.compound(e + [readdir(attrs=(1, 4, 19, 20, 33, 36, 53))]).status == 0
        assert client.compound(e + [create_dir("d"), getfh(), getattr_(1, 20)]).status == 0
        assert client.compound(e + [create_symlink("l", "f"), readlink()]).status == 0
        assert client.compound(e + [lookup("f"), access(0x3F), write(0, b"abc", stable=0), commit(), read(0, 100),
                                    setattr_({33: u32(0o600)}), verify({4: U64.pack(12)})]).status == 0
        assert client.compound(e + [savefh(), lookup("d"), restorefh(), rename("f", "g"), secinfo("g"),
                                    remove("g")]).status == 0
        assert client.compound(e + [lookup("missing")]).status == 2
        assert client.compound([putrootfh(), u32(99)]).status == 10044
        client.close()
        if SESSIONS:   # with B's EXCHANGE_ID/CREATE_SESSION/SEQUENCE: 4.2 ops and attributes too
            from acmenfs.nfs4.client import Nfs4Client, Ops
            transport = TcpCompound(nfsd4.port)
            session = Nfs4Client(transport.call, minor=2)
            session.establish()              # B's client for the session, our parser for our ops
            for ops in ([putrootfh(), lookup("e"), lookup("img"), seek(0, 0), allocate(0, 8192),
                         deallocate(4096, 4096), seek(0, 1), getattr_(0, 1, 4, 45, 55, 75, 77, 78, 79),
                         u32(52, 0)],
                        [putrootfh(), lookup("e"), readdir(attrs=(1, 11, 20, 55))]):
                session.slot_seqid += 1
                reply = transport.compound([Ops.sequence(session.sessionid, session.slot_seqid), *ops], minor=2)
                assert reply.status == 0, reply
            transport.close()
        if LIBNFS_CAN_MOUNT:   # with B's SETCLIENTID/OPEN in the tree: a real client's exchange too
            assert run("nfs-ls", nfsd4.url("/e")).returncode == 0
            assert run("nfs-cat", nfsd4.url("/e/cat.txt")).stdout == b"for libnfs\n"
    decode = ["-r", str(capture), "-d", f"tcp.port=={nfsd4.port},rpc"]
    malformed = run(tshark, *decode, "-Y", "_ws.malformed || _ws.expert.severity == error")
    assert malformed.returncode == 0 and malformed.stdout.strip() == b"", malformed.stdout.decode()[:3000]
    frames = run(tshark, *decode, "-Y", "nfs", "-T", "fields", "-e", "rpc.programversion", "-e", "nfs.opcode")
    text = frames.stdout.decode()
    opcodes = {int(op) for field in text.split() for op in field.split(",") if op.isdigit() and int(op) > 4}
    assert {9, 10, 15, 24, 26, 6, 38, 25, 5, 29, 28, 33, 34, 37} <= opcodes, text[:2000]
    if SESSIONS:
        assert {42, 43, 53, 52, 59, 62, 69} <= opcodes, text[:2000]
