"""End to end against a real ``acmenfs nfsd`` (short NFSv4 lease) with B's test client over TCP:
slot replay bytes, two clients locking one range (DENIED until unlock, or until the holder's
lease runs out), and a restart: the previous client reclaims in grace, a new one cannot, new
opens and locks wait for grace to end."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acmenfs.nfs4.client import ALL_ONES, Nfs4Client, Nfs4Failed, Ops, compound_args, parse_compound
from acmenfs.nfs4.const import Nfs4Stat as S
from procstop import stop_process  # tests/procstop.py

LEASE = 3


class Nfsd:
    """``acmenfs nfsd`` in a subprocess on a free port, stopped by pid."""

    def __init__(self, export: Path, state: Path, log: Path, lease: float = LEASE) -> None:
        self.log = log
        start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "acmenfs", "nfsd", "--export", f"/e={export}", "--port", "0",
                 "--mount-port", "0", "--state-dir", str(state), "--client", "127.0.0.1",
                 "--squash", "none", "--nfs4-lease-seconds", str(lease)],
                stdout=subprocess.DEVNULL, stderr=sink)
        deadline = time.monotonic() + 60
        while True:
            found = re.findall(rb"ready: nfs://\S+nfsport=(\d+)", log.read_bytes()[start:])
            if found:
                self.port = int(found[-1])
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nfsd did not start:\n" + log.read_text())
            time.sleep(0.1)

    def client(self, **kw) -> Nfs4Client:
        return Nfs4Client.connect("127.0.0.1", self.port, **kw)

    def stop(self) -> None:
        stop_process(self.process, 30)


@pytest.fixture
def dirs(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    return export, tmp_path / "state", tmp_path / "nfsd.log"


@pytest.fixture
def nfsd(dirs):
    server = Nfsd(*dirs)
    yield server
    server.stop()


def poll(call, until, deadline_seconds: float = 60, every: float = 0.25):
    """Retry ``call`` until ``until(result)``; generous deadline, no timing asserted."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        result = call()
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(every)


def attempt(fn):
    try:
        return fn(), S.OK
    except Nfs4Failed as exc:
        return exc.value, exc.status


def test_slot_replay_over_tcp(nfsd):
    c = nfsd.client()
    try:
        c.establish()
        fh, sid = c.open("/e/replay", create="unchecked")
        args = compound_args([Ops.sequence(c.sessionid, c.slot_seqid + 1), Ops.putfh(fh),
                              Ops.write(sid, 0, b"once")], 1)
        first, second = c.send(args), c.send(args)
        assert first == second and parse_compound(first).status == S.OK
        c.slot_seqid += 1
        skipped = compound_args([Ops.sequence(c.sessionid, c.slot_seqid + 2), Ops.putrootfh()], 1)
        assert parse_compound(c.send(skipped)).status == S.SEQ_MISORDERED
        assert c.read(fh, sid, 0, 10) == b"once"
    finally:
        c.close()


def test_two_clients_same_range_unlock_then_lease_expiry(nfsd):
    a, b = nfsd.client(owner=b"host-a"), nfsd.client(owner=b"host-b")
    try:
        a.establish()
        b.establish()
        fh, sid_a = a.open("/e/vm.img", create="unchecked")
        _, sid_b = b.open("/e/vm.img")
        lock_a = a.lock(fh, sid_a, 100, 1)
        denied, status = attempt(lambda: b.lock(fh, sid_b, 100, 1, owner=b"qemu-b"))
        assert status == S.DENIED
        assert (denied["offset"], denied["length"], denied["locktype"]) == (100, 1, 2)
        assert (denied["clientid"], denied["owner"]) == (a.clientid, b"lock-owner-1")
        a.unlock(fh, lock_a, 100, 1)
        lock_b = b.lock(fh, sid_b, 100, 1, owner=b"qemu-b")
        assert lock_b[:4] == b"\0\0\0\1"
        # b goes silent; a keeps asking (each COMPOUND renews a's lease) until b's lease runs out
        _, status = attempt(lambda: a.lock(fh, sid_a, 0, ALL_ONES, owner=b"qemu-a"))
        assert status == S.DENIED
        result = poll(lambda: attempt(lambda: a.lock(fh, sid_a, 0, ALL_ONES, owner=b"qemu-a")),
                      lambda r: r[1] != S.DENIED)
        assert result[1] == S.OK
        assert b.call(check=False).status == S.BADSESSION          # b's client was expired
    finally:
        a.close()
        b.close()


def test_restart_reclaim_in_grace(dirs):
    export, state, log = dirs
    server = Nfsd(export, state, log, lease=4)
    try:
        a = server.client(owner=b"host-a", verifier=b"boot-one")
        a.establish()
        fh, sid = a.open("/e/disk", create="unchecked")
        a.lock(fh, sid, 0, 10)
        a.close()
    finally:
        server.stop()
    assert list((state / "nfs4").glob("*.client"))                         # the durable client record
    server = Nfsd(export, state, log, lease=4)
    a = server.client(owner=b"host-a", verifier=b"boot-one")
    n = server.client(owner=b"host-new")
    try:
        a.establish(reclaim_complete=False)
        n.establish(reclaim_complete=False)
        _, status = attempt(lambda: n.open("/e/disk", reclaim=True))
        assert status == S.NO_GRACE                                  # held nothing before
        n.call(Ops.reclaim_complete())
        _, status = attempt(lambda: n.open("/e/disk"))
        assert status == S.GRACE                                     # new opens wait for grace
        fh, sid = a.open("/e/disk", reclaim=True)
        a.lock(fh, sid, 0, 10, reclaim=True)

        def new_open():
            a.renew()
            return attempt(lambda: n.open("/e/disk"))
        (fh_n, sid_n), status = poll(new_open, lambda r: r[1] != S.GRACE)
        assert status == S.OK                                        # grace ran out
        denied, status = attempt(lambda: n.lock(fh_n, sid_n, 5, 1, owner=b"n"))
        assert status == S.DENIED and denied["clientid"] == a.clientid
        _, status = attempt(lambda: a.open("/e/disk", reclaim=True))
        assert status == S.NO_GRACE                                  # after grace: no reclaim
    finally:
        a.close()
        n.close()
        server.stop()


def test_40_and_41_clients_lock_and_40_reclaims_after_restart(dirs):
    export, state, log = dirs
    server = Nfsd(export, state, log, lease=4)
    try:
        old = server.client(minor=0, owner=b"host-40", verifier=b"boot-one")
        new = server.client(minor=1, owner=b"host-41")
        old.establish()
        new.establish()
        fh, sid = old.open("/e/mixed", create="unchecked")
        assert sid[:4] == b"\0\0\0\2"                                # OPEN + OPEN_CONFIRM
        old.write(fh, sid, 0, b"4.0 data")
        lock_old = old.lock(fh, sid, 0, ALL_ONES)
        _, sid_new = new.open("/e/mixed", access=1)
        assert new.read(fh, sid_new, 0, 20) == b"4.0 data"
        denied, status = attempt(lambda: new.lock(fh, sid_new, 4, 1, write=False, owner=b"r"))
        assert status == S.DENIED and denied["length"] == ALL_ONES and denied["clientid"] == old.clientid
        lock_old = old.unlock(fh, lock_old, 0, ALL_ONES)
        new.lock(fh, sid_new, 4, 1, write=False, owner=b"r")
        lock_old = old.lock(fh, sid, 0, 2, lock_sid=lock_old)
        old.close()
        new.close()
    finally:
        server.stop()
    server = Nfsd(export, state, log, lease=4)
    old = server.client(minor=0, owner=b"host-40", verifier=b"boot-one")
    try:
        assert old.raw([Ops.renew(old.clientid)]).status == S.STALE_CLIENTID
        old.open_seqid = 0
        old.establish()
        fh, sid = old.open("/e/mixed", reclaim=True)
        old.lock(fh, sid, 0, 2, reclaim=True)
        _, status = attempt(lambda: old.lock(fh, sid, 10, 1, owner=b"other"))
        assert status == S.GRACE
        done = poll(lambda: attempt(lambda: old.lock(fh, sid, 10, 1, owner=b"other")), lambda r: r[1] != S.GRACE)
        assert done[1] == S.OK
    finally:
        old.close()
        server.stop()
