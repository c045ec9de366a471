"""Audit of issue #13, tshark on the state traffic: the other tshark test captures lookups, I/O and
a 4.2 session; this one captures the client-state and locking operations of a 4.0 and a 4.1 client
against a real ``acmenfs nfsd`` (SETCLIENTID/_CONFIRM, RENEW, OPEN/OPEN_CONFIRM, OPEN_DOWNGRADE,
LOCK incl. a DENIED reply with its conflicting lock, LOCKT, LOCKU, RELEASE_LOCKOWNER, CLOSE,
EXCHANGE_ID, CREATE_SESSION, SEQUENCE, RECLAIM_COMPLETE, BIND_CONN_TO_SESSION, TEST_STATEID,
FREE_STATEID, DESTROY_SESSION, DESTROY_CLIENTID) and requires no malformed frame and every one
of these opcodes decoded as NFSv4."""

from __future__ import annotations

import subprocess

import pytest
from tshark_capture import loopback_capture
from nfs4_core_helpers import NfsdProcess4, require_tool

from acmenfs.nfs4.client import ALL_ONES, Nfs4Client, Nfs4Failed, Ops
from acmenfs.nfs4.const import Nfs4Stat as S

STATE_OPS = {4, 12, 13, 14, 18, 20, 21, 30, 35, 36, 39,            # 4.0
             41, 42, 43, 44, 45, 53, 55, 57, 58}                     # 4.1


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=timeout)


@pytest.fixture
def nfsd(tmp_path):
    directory = tmp_path / "export"
    directory.mkdir()
    server = NfsdProcess4(directory, tmp_path / "state", tmp_path / "nfsd.log")
    yield server
    server.stop()


def state_traffic(port: int) -> None:
    old = Nfs4Client.connect("127.0.0.1", port, minor=0, owner=b"tshark-40")
    new = Nfs4Client.connect("127.0.0.1", port, minor=1, owner=b"tshark-41")
    try:
        old.establish()                                          # SETCLIENTID, SETCLIENTID_CONFIRM
        new.establish()                                          # EXCHANGE_ID, CREATE_SESSION, RECLAIM_COMPLETE
        old.renew()
        old.open("/e/img", create="unchecked", access=1)
        fh, sid = old.open("/e/img", access=3)                   # OPEN (+ OPEN_CONFIRM the first time)
        lock = old.lock(fh, sid, 100, 1)
        _, sid_new = new.open("/e/img")
        with pytest.raises(Nfs4Failed) as info:                  # LOCK4denied on the wire
            new.lock(fh, sid_new, 0, ALL_ONES, owner=b"qemu")
        assert info.value.status == S.DENIED
        assert new.test_lock(fh, 100, 1, owner=b"qemu").last.status == S.DENIED
        lock = old.unlock(fh, lock, 0, ALL_ONES)
        assert old.raw([Ops.release_lockowner(old.clientid, b"lock-owner-1")]).status == S.OK
        sid = old._seq_call(Ops.putfh(fh), Ops.open_downgrade(sid, old.open_seqid, 1, 0)).last.value
        old.close_file(fh, sid)
        lock_new = new.lock(fh, sid_new, 0, 1, owner=b"qemu")
        assert new.call(Ops.test_stateid(sid_new, lock_new)).last.value == [S.OK, S.OK]
        lock_new = new.unlock(fh, lock_new, 0, 1)
        new.call(Ops.free_stateid(lock_new))
        new.close_file(fh, sid_new)
        assert new.raw([Ops.bind_conn(new.sessionid)]).status == S.OK
        assert new.raw([Ops.destroy_session(new.sessionid)]).status == S.OK
        assert new.raw([Ops.destroy_clientid(new.clientid)]).status == S.OK
    finally:
        old.close()
        new.close()


def test_tshark_decodes_state_and_lock_traffic_without_malformed_frames(nfsd, tmp_path):
    tshark = require_tool("tshark")
    capture = tmp_path / "state.pcapng"
    with loopback_capture(tshark, f"tcp port {nfsd.port}", capture):
        state_traffic(nfsd.port)
    decode = ["-r", str(capture), "-d", f"tcp.port=={nfsd.port},rpc"]
    malformed = run(tshark, *decode, "-Y", "_ws.malformed || _ws.expert.severity == error")
    assert malformed.returncode == 0 and malformed.stdout.strip() == b"", malformed.stdout.decode()[:3000]
    frames = run(tshark, *decode, "-Y", "nfs", "-T", "fields", "-e", "nfs.opcode")
    opcodes = {int(op) for field in frames.stdout.decode().split() for op in field.split(",") if op.isdigit()}
    assert STATE_OPS <= opcodes, sorted(STATE_OPS - opcodes)
    denied = run(tshark, *decode, "-Y", "nfs.nfsstat4 == 10010", "-T", "fields", "-e", "nfs.offset4")
    assert denied.stdout.strip(), "no NFS4ERR_DENIED reply decoded"
