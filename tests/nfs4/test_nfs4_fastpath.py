"""The COMPOUND fast path (``acmenfs.nfs4.fastpath``) against the general op loop, on twin servers.

Two real ``NfsServer``s with identical exports: twin A runs with the fast path, twin B with
``fast_path = None`` (the general loop only).  Random sequences of the hot COMPOUNDs and their
near misses (replayed / misordered seqids, wrong slot or session, stale / bad / directory
handles, attribute masks, stable_how4 values, tags, cachethis, other ops, and stateids:
anonymous, bypass, bogus, "current", and real ones as clients send them: 4.1 and 4.0 open
stateids and a lock stateid with their current seqid, an old one, one from the future, seqid 0,
the stateid of another file (opened read-only, so WRITE with it on its own file is OPENMODE), a
closed one, and a 4.0 client's whose lease ran out) go to both; every reply must be
byte-identical and the observable state the same after every call: each slot's seqid, cached
reply and in-progress flag; bytes read and written; the files' data; parked COMPOUNDs; and the
open state (each client's lease renewal time on the twins' shared fake clock, which moves between
calls, and whether it lives; each stateid's seqid and access; the expired stateids).

The two export files are different inodes, so B's backend answers ``stat`` with A's file's
attributes (the kernel's identity of a file is not what is compared; everything computed from
it is).  Handles and stateids differ between the twins; the session id of B is re-keyed to A's.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
from acmenfs.nfs3.server import NfsServer
from acmenfs.nfs4.client import Nfs4Client, Ops, bitmap, compound_args, opaque, u32
from acmenfs.nfs4.fastpath import run_fast
from acmenfs.oncrpc.dispatch import RpcDispatcher, materialize
from acmenfs.oncrpc.rpc import Credential

LOCAL = ("127.0.0.1", 800)
_CRED = struct.pack(">II", 0, 5) + b"twin\0\0\0\0" + struct.pack(">III", 0, 0, 0)
FILE_SIZE = 64 * 1024
SLOTS = 4
LINUX_GETATTR = (1, 3, 4, 8, 20, 33, 35, 36, 37, 41, 45, 47, 52, 53, 55)
# attributes whose values do not depend on the file system's free space (both twins share it) nor
# on the handle (FILEHANDLE: the twins' handles differ)
MASK_ATTRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 18, 20, 24, 26, 27, 29, 30, 31, 33,
              35, 36, 37, 41, 45, 47, 51, 52, 53, 55, 75, 77, 90)
ANONYMOUS, BYPASS = b"\0" * 16, b"\xff" * 16
CURRENT = u32(1) + b"\0" * 12
BOGUS = u32(1) + b"\x42" * 12
CRED = Credential(1, 0, 0, (0,), "twin")


class Clock:
    """The twins' shared state clock: moved by the test between calls, so that every lease renewal
    (or its absence) shows in ``Client.last_renew``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


def record(xid: int, args: bytes) -> bytes:
    return (struct.pack(">IIIIII", xid, 0, 2, 100003, 4, 1) + struct.pack(">II", 1, len(_CRED)) + _CRED
            + struct.pack(">II", 0, 0) + args)


class Twin:
    """One server with an export of a file ``f``, a directory ``d`` and a removed file (stale handle)."""

    def __init__(self, root: Path, fast: bool) -> None:
        export_dir = root / "export"
        export_dir.mkdir(parents=True)
        (export_dir / "f").write_bytes(bytes(range(256)) * (FILE_SIZE // 256))
        (export_dir / "d").mkdir()
        (export_dir / "gone").write_bytes(b"x")
        for name in ("g", "h"):
            (export_dir / name).write_bytes(bytes(range(256)) * 16)
        self.export_dir = export_dir
        self.export = Export("/e", str(export_dir), rules=(ClientRule("127.0.0.1", squash="none"),))
        self.server = NfsServer(ExportTable([self.export]), root / "state")
        self.server.nfs4.fast_path = run_fast if fast else None
        self.server.nfs4.state.clock = CLOCK
        self.server.nfs4._next_sweep = float("inf")   # no lease sweep at a real-time moment of its own
        self.dispatcher = RpcDispatcher([self.server.nfs4.program()], drc=self.server.drc)
        self.xid = 0
        self.client = Nfs4Client(self.send, minor=1, owner=b"twin-client", verifier=b"v" * 8)
        self.client40: Nfs4Client | None = None

    def send(self, args: bytes) -> bytes:
        self.xid += 1
        parts = self.dispatcher.call_here(record(self.xid, args), LOCAL, "tcp")
        return materialize(parts)[24:]

    def setup(self) -> None:
        client = self.client
        client.establish(reclaim_complete=False)

    def finish_setup(self) -> None:
        client = self.client
        client.call(Ops.reclaim_complete())
        self.fh = {name: client.fh_of(f"/e/{name}") for name in ("f", "g", "d", "gone")}
        self.fh["garbage"] = b"\x01" * 40
        client.open("/e/f", access=1)
        _, self.open_stateid = client.open("/e/f", access=3)   # an upgrade: seqid 2, and 1 is OLD
        self.lock_stateid = client.lock(self.fh["f"], self.open_stateid, 0, 100)
        _, self.g_stateid = client.open("/e/g", access=1)      # read-only: WRITE with it is OPENMODE
        self.g_lock_stateid = client.lock(self.fh["g"], self.g_stateid, 0, 100, write=False, owner=b"lock-owner-2")
        fh, stateid = client.open("/e/h", access=3)
        client.close_file(fh, stateid)
        self.closed_stateid = stateid
        self.open40()
        os.unlink(self.export_dir / "gone")
        client.call()   # slot 0 keeps a reply without the twin's own handles and stateids

    def open40(self) -> None:
        """A (new) 4.0 client ID with file f open (confirmed open owner: seqid 2)."""
        self.client40 = Nfs4Client(self.send, minor=0, owner=b"twin-client-40", verifier=b"w" * 8)
        self.client40.establish()
        _, self.open40_stateid = self.client40.open("/e/f", access=3)

    def stateid(self, name: str) -> bytes:
        """The stateid a call names: ``kind`` or ``kind:seqid change`` (``kind:0``: seqid 0)."""
        kind, _, change = name.partition(":")
        sid = {"anonymous": ANONYMOUS, "bypass": BYPASS, "bogus": BOGUS, "current": CURRENT,
               "open": self.open_stateid, "lock": self.lock_stateid, "open40": self.open40_stateid,
               "g": self.g_stateid, "glock": self.g_lock_stateid, "closed": self.closed_stateid}[kind]
        if not change:
            return sid
        seqid = 0 if change == "0" else struct.unpack_from(">I", sid)[0] + int(change)
        return u32(seqid) + sid[4:]

    def age40(self) -> None:
        """The 4.0 client has been silent for longer than a lease (its stateids are EXPIRED on use)."""
        state = self.server.nfs4.state
        client = state.clients.get(self.client40.clientid)
        if client is not None:
            client.last_renew = CLOCK.now - state.lease_seconds - 1

    def reopen40(self) -> None:
        """After its lease ran out, the 4.0 client comes back with a new client ID and open."""
        state = self.server.nfs4.state
        if state.clients.get(self.client40.clientid) is None:
            self.open40()

    def open_state(self) -> tuple:
        """The StateManager's state, without what differs between twins by design (boot ids)."""
        state = self.server.nfs4.state
        clients = tuple(sorted((c.clientid & 0xFFFFFFFF, c.minorversion, c.last_renew, c.states_held)
                               for c in state.clients.values()))
        states = tuple(sorted((other[4:], type(s).__name__, s.seqid, getattr(s, "access", None))
                              for other, s in state.states.items()))
        return (clients, states, tuple(other[4:] for other in state.expired_others),
                tuple(clientid & 0xFFFFFFFF for clientid in state.expired_clientids))

    def state(self) -> tuple:
        sessions = self.server.nfs4.state.sessions
        slots = tuple((s.seqid, s.reply, s.in_progress) for session in sessions.by_id.values()
                      for s in session.slots)
        return (slots, self.server.bytes_read, self.server.bytes_written, dict(self.server.nfs4._parked) == {},
                (self.export_dir / "f").read_bytes(), (self.export_dir / "g").read_bytes(), self.open_state())

    def close(self) -> None:
        self.server._executor.shutdown(wait=True)
        self.server.state.close()


def make_twins(tmp_path: Path) -> tuple[Twin, Twin]:
    CLOCK.now = 1000.0
    a, b = Twin(tmp_path / "a", fast=True), Twin(tmp_path / "b", fast=False)
    for twin in (a, b):
        twin.setup()
    # B's session takes A's id, so that SEQUENCE's echo is the same bytes
    sessions = b.server.nfs4.state.sessions
    session = sessions.by_id.pop(b.client.sessionid)
    session.client.sessions.pop(b.client.sessionid)
    session.sessionid = a.client.sessionid
    sessions.by_id[session.sessionid] = session
    session.client.sessions[session.sessionid] = session
    b.client.sessionid = a.client.sessionid
    for twin in (a, b):
        twin.finish_setup()
    b.server.state.committer.verifier = a.server.state.committer.verifier   # WRITE's reply carries it
    # B's backend answers each stat with what A's answered for the same call: the files are
    # different inodes with their own times; the values computed from them are compared
    replay_stats(a.server.state.backend(a.export), b.server.state.backend(b.export))
    return a, b


STATS: deque = deque()


def replay_stats(a_backend, b_backend) -> None:
    """A's stat results are queued; B's stat (after its own, which may fail the same way) takes
    the oldest, so both paths must call stat equally often, in the same order."""
    a_stat, b_stat = a_backend.stat, b_backend.stat

    def recording(node):
        st = a_stat(node)
        STATS.append(st)
        return st

    def replaying(node):
        b_stat(node)
        return STATS.popleft()
    a_backend.stat, b_backend.stat = recording, replaying


# ----- the calls -------------------------------------------------------------------------------
masks = st.one_of(st.just(LINUX_GETATTR), st.lists(st.sampled_from(MASK_ATTRS), max_size=8).map(tuple))
# real stateids (see ``Twin.stateid``) as often as the special and broken ones
stateids = st.sampled_from(["anonymous", "bypass", "bogus", "current", "open", "open", "open", "lock",
                            "open40", "open40", "open:-1", "open:1", "open:0", "lock:0", "lock:1",
                            "open40:-1", "open40:0", "open40:0", "open40:1", "g", "g", "glock", "glock",
                            "closed"])
getattr_ops = st.tuples(st.just("getattr"), masks)
read_ops = st.tuples(st.just("read"), stateids, st.sampled_from([0, 4096, FILE_SIZE - 100, FILE_SIZE + 8, 2**63]),
                     st.sampled_from([0, 1, 4096, 70000, 2 * 1024 * 1024]))
write_ops = st.tuples(st.just("write"), stateids, st.sampled_from([0, 4096, FILE_SIZE - 3, 2**64 - 2]),
                      st.sampled_from([1, 7, 4096]), st.sampled_from([0, 0, 0, 1, 2, 3]))
other_ops = st.sampled_from([("access",), ("savefh",)])   # not fast ops (and no handle in their reply)
hot_op = st.one_of(getattr_ops, read_ops, write_ops)
calls = st.fixed_dictionaries({
    "minor": st.sampled_from([1, 1, 1, 0, 0, 2]),
    "slot": st.sampled_from([0, 0, 0, 1, 2, SLOTS]),
    "seqid_step": st.sampled_from([1, 1, 1, 1, 0, 2, -1]),
    "session": st.sampled_from(["ours", "ours", "ours", "ours", "unknown"]),
    "cachethis": st.sampled_from([0, 0, 1, 2]),
    "tag": st.sampled_from([b"", b"", b"", b"t"]),
    "fh": st.sampled_from(["f", "f", "f", "f", "g", "g", "d", "gone", "garbage"]),
    "ops": st.lists(st.one_of(hot_op, hot_op, hot_op, other_ops), min_size=1, max_size=2),
    "no_putfh": st.sampled_from([False] * 9 + [True]),
    "tick": st.sampled_from([0, 0, 0.5, 3]),                            # seconds on the shared clock
    "lease": st.sampled_from([None] * 24 + ["age40"] + ["reopen40"] * 3),   # the 4.0 client's lease
})


def render(twin: Twin, call: dict, seqids: dict[int, int]) -> bytes:
    """The COMPOUND4args of an abstract call for one twin (its handles and stateids)."""
    ops = []
    if call["minor"]:
        slot = call["slot"]
        sessionid = twin.client.sessionid if call["session"] == "ours" else b"\x07" * 16
        seqid = (seqids.get(slot, 0) + call["seqid_step"]) & 0xFFFFFFFF
        ops.append(u32(53) + sessionid + u32(seqid, slot, SLOTS - 1, call["cachethis"]))
    if not call["no_putfh"]:
        ops.append(u32(22) + opaque(twin.fh[call["fh"]]))
    for op in call["ops"]:
        if op[0] == "getattr":
            ops.append(u32(9) + bitmap(*op[1]))
        elif op[0] == "read":
            ops.append(u32(25) + twin.stateid(op[1]) + struct.pack(">Q", op[2]) + u32(op[3]))
        elif op[0] == "write":
            data = bytes((op[3] * 7 + i) & 0xFF for i in range(op[3]))
            ops.append(u32(38) + twin.stateid(op[1]) + struct.pack(">Q", op[2]) + u32(op[4]) + opaque(data))
        else:
            ops.append(u32(3, 0x1F) if op[0] == "access" else u32(32))
    return compound_args(ops, call["minor"], call["tag"])


def track_seqid(call: dict, reply: bytes, seqids: dict[int, int]) -> None:
    """A SEQUENCE that succeeded moved its slot's seqid on."""
    if not call["minor"] or call["session"] != "ours":
        return
    tag_length = struct.unpack_from(">I", reply, 4)[0]
    position = 8 + ((tag_length + 3) & ~3)
    if struct.unpack_from(">I", reply, position)[0] and struct.unpack_from(">II", reply, position + 4) == (53, 0):
        seqids[call["slot"]] = (seqids.get(call["slot"], 0) + call["seqid_step"]) & 0xFFFFFFFF


def state_difference(state_a: tuple, state_b: tuple) -> list:
    """What differs between two twins' ``state()``, for the assertion message."""
    slots = [(index, x[0], y[0], x[2], y[2], x[1] == y[1]) for index, (x, y) in
             enumerate(zip(state_a[0], state_b[0])) if x != y]
    return [slots, state_a[1:4], state_b[1:4], state_a[4:6] == state_b[4:6], state_a[6], state_b[6]]


def test_fast_path_gives_the_general_paths_replies_and_state(tmp_path):
    a, b = make_twins(tmp_path)
    STATS.clear()
    assert a.client.slot_seqid == b.client.slot_seqid
    seqids = {0: a.client.slot_seqid}
    taken = []
    fast = a.server.nfs4.fast_path

    def counting(*args):
        reply = fast(*args)
        taken.append(reply is not None)
        return reply
    a.server.nfs4.fast_path = counting
    try:
        @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(calls, min_size=1, max_size=10))
        def run(sequence):
            for call in sequence:
                CLOCK.now += call["tick"]
                if call["lease"]:
                    for twin in (a, b):
                        getattr(twin, call["lease"])()
                    assert a.state() == b.state()
                reply_a = a.send(render(a, call, seqids))
                reply_b = b.send(render(b, call, seqids))
                assert reply_a == reply_b, call
                state_a, state_b = a.state(), b.state()
                assert state_a == state_b, (call, state_difference(state_a, state_b))
                assert not STATS, call   # B called stat as often as A
                track_seqid(call, reply_a, seqids)
        run()
    finally:
        a.close()
        b.close()
    assert sum(taken) > 50 and not all(taken)   # both paths were exercised


def test_linux_shapes_take_the_fast_path_and_near_misses_do_not(tmp_path):
    a, b = make_twins(tmp_path)
    try:
        client = a.client
        fh = a.fh["f"]
        shapes = [
            [Ops.putfh(fh), Ops.getattr(*LINUX_GETATTR)],
            [Ops.putfh(fh), Ops.read(ANONYMOUS, 0, 4096)],
            [Ops.putfh(fh), Ops.write(a.open_stateid, 0, b"z" * 4096, stable=0), Ops.getattr(*LINUX_GETATTR)],
        ]
        for ops in shapes:
            for minor in (0, 1):
                args = compound_args(([Ops.sequence(client.sessionid, client.slot_seqid + 1)] if minor else [])
                                     + ops, minor)
                assert _answered_fast(a, args), (minor, ops)
                if minor:
                    client.slot_seqid += 1
        # a live open stateid of the file, as Linux and libnfs send it (4.1: also with seqid 0), and a
        # 4.0 client's: passed by the state manager's check_io_fast, not its general check_io
        general_checks = []
        state = a.server.nfs4.state
        check_io = state.check_io
        state.check_io = lambda *args: general_checks.append(args) or check_io(*args)
        zero_seqid = u32(0) + a.open_stateid[4:]
        for minor, stateid in ((1, a.open_stateid), (1, zero_seqid), (1, a.lock_stateid), (0, a.open40_stateid)):
            for op in (Ops.read(stateid, 4096, 4096), Ops.write(stateid, 8, b"w" * 512, stable=0)):
                head = [Ops.sequence(client.sessionid, client.slot_seqid + 1)] if minor else []
                assert _answered_fast(a, compound_args(head + [Ops.putfh(fh), op], minor)), (minor, stateid)
                client.slot_seqid += bool(minor)
        assert general_checks == []
        del state.check_io
        pseudo_root = client.fh_of("/")
        misses = [
            compound_args([Ops.sequence(client.sessionid, client.slot_seqid)] + shapes[0], 1),   # replay
            compound_args([Ops.sequence(client.sessionid, client.slot_seqid + 2)] + shapes[0], 1),  # misordered
            compound_args(shapes[0], 0, tag=b"tag"),
            compound_args([Ops.putfh(a.fh["garbage"]), Ops.getattr(1)], 0),                     # BADHANDLE
            compound_args([Ops.putfh(pseudo_root), Ops.getattr(1)], 0),                         # pseudo fs
            compound_args([Ops.putfh(a.fh["d"]), Ops.read(ANONYMOUS, 0, 1)], 0),
            compound_args([Ops.putfh(fh), Ops.getfh()], 0),
            compound_args([Ops.putfh(fh), Ops.write(ANONYMOUS, 0, b"z", stable=4)], 0),
        ]
        for index, args in enumerate(misses):
            before = a.state()
            assert not _answered_fast(a, args), index
            assert a.state() == before
    finally:
        a.close()
        b.close()


def test_a_write_that_would_wait_is_parked_by_the_fast_path_and_resumed_in_the_pool(tmp_path, monkeypatch):
    """FILE_SYNC WRITE cannot run on the event loop: the fast path has taken the slot, parks the
    COMPOUND at WRITE and the pool finishes it, with the general path's reply and state."""
    import acmenfs.nfs4.fastpath as fastpath
    handed_over = []
    hand_over = fastpath._hand_over
    monkeypatch.setattr(fastpath, "_hand_over", lambda *args: handed_over.append(1) or hand_over(*args))
    a, b = make_twins(tmp_path)
    STATS.clear()
    try:
        for stable in (2, 1):
            replies, states = [], []
            for twin in (a, b):
                client = twin.client
                client.slot_seqid += 1
                ops = [Ops.sequence(client.sessionid, client.slot_seqid, cache=False), Ops.putfh(twin.fh["f"]),
                       Ops.write(twin.open_stateid, 100, b"sync" * 100, stable=stable), Ops.getattr(*LINUX_GETATTR)]
                replies.append(twin.send(compound_args(ops, 1)))
                states.append(twin.state())
            assert replies[0] == replies[1]
            assert struct.unpack_from(">I", replies[0])[0] == 0
            assert states[0] == states[1]
            assert not STATS
        assert len(handed_over) == 2
        assert (a.export_dir / "f").read_bytes()[100:500] == b"sync" * 100
    finally:
        a.close()
        b.close()


def _answered_fast(twin: Twin, args: bytes) -> bool:
    """Whether ``run_fast`` answers these COMPOUND4args on the twin's server, on the event loop."""
    from acmenfs.fs.nonblocking import inline
    from acmenfs.oncrpc.xdr import Unpacker

    ctx = type("Ctx", (), {"client": LOCAL, "drc_token": None, "cred": CRED})()
    with inline():
        return run_fast(twin.server.nfs4, ctx, Unpacker(args), twin.server.nfs4.ops, True) is not None


def test_parse_remembers_tails_and_answers_as_parse_tail():
    """``parse`` remembers a PUTFH + GETATTR tail by its bytes and a PUTFH + READ tail by its bytes
    but READ's offset and count (random reads): every answer, first or remembered, is
    ``parse_tail``'s, also for a handle whose bytes look like a READ where one would end."""
    from acmenfs.nfs4.fastpath import parse, parse_tail
    sid = u32(3) + b"\x42" * 12
    looks_like_read = b"\x01" * 20 + u32(25) + b"\x02" * 12   # GETATTR(2 words) after it: u32(25) at end - 32
    seqid_25 = u32(25) + b"\x42" * 12   # READ with this stateid and 4 bytes after it: u32(25) at end - 32
    for fh in (b"\x01" * 36, b"\x07" * 5, looks_like_read):
        for minor in (0, 1):
            head = [Ops.sequence(b"s" * 16, 1)] if minor else []
            tails = [[Ops.putfh(fh), Ops.getattr(1, 33)], [Ops.putfh(fh), Ops.getattr(*LINUX_GETATTR)],
                     [Ops.putfh(fh), Ops.getattr(1), Ops.read(sid, 7, 9)]]
            tails += [[Ops.putfh(fh), Ops.read(sid, offset, count)]
                      for offset in (0, 4096, 2**63 + 5, 4096) for count in (4096, 1, 2**31)]
            tails += [[Ops.putfh(fh), Ops.read(seqid_25, offset, 4096) + b"more"] for offset in (0, 8192)]
            for ops in tails * 2:
                args = compound_args(head + ops, minor)
                parsed = parse(memoryview(args), 0, len(args))
                position = 12 + 36 * bool(minor)
                assert parsed[2] == position
                assert parsed[3] == parse_tail(memoryview(args)[position:], minor, len(ops)), (fh, ops)
