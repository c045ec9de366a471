"""Benchmark: Python cost of one NFSv4 COMPOUND against the NFSv3 call it replaces, sans-IO.

One ``NfsServer`` (one export, one backend, one file of 1 MiB in the page cache) serves
NFSv3 and NFSv4 behind one ``RpcDispatcher``; prebuilt call records are fed straight to
``call_here`` (inline handler first, then the fallback on the same thread, as the TCP
transport does without its thread hop).  Per workload it times, in this one process:

    v3    READ 4k | WRITE 4k (UNSTABLE) | GETATTR
    v4.0  PUTFH+READ | PUTFH+WRITE | PUTFH+GETATTR
    v4.1  SEQUENCE+PUTFH+READ | SEQUENCE+PUTFH+WRITE | SEQUENCE+PUTFH+GETATTR

(the COMPOUNDs a Linux client sends for the same calls; GETATTR asks for the mask Linux's
``nfs4_fattr_bitmap`` asks for), rotating the order of the versions every round, and
prints CPU microseconds per call (this thread's CPU time, so other processes on a busy
machine do not count; median of ``--rounds``) and the ratio v4/v3.  The v4.1
calls run in an established session (EXCHANGE_ID, CREATE_SESSION, RECLAIM_COMPLETE) on
slot 0 with a fresh seqid per call and sa_cachethis false, as Linux sends READ, WRITE and GETATTR
(the slot keeps the encoded reply but not READ data).  READ and WRITE carry, as Linux and libnfs
send them, the stateid of an OPEN of the file (read and write access, deny none) made before the
clock starts: v4.0 by its own client ID (SETCLIENTID, SETCLIENTID_CONFIRM, OPEN, OPEN_CONFIRM if
asked), v4.1 in the session; ``--stateid anonymous`` sends the anonymous stateid instead (the
figures before open stateids were measured, which never ran the stateid check).  READ and WRITE
go to a 4k block that changes on every call (one pseudo-random sequence over the file, the same
for every version), as a VM's random I/O does; ``--offsets zero`` sends them all to offset 0 (the
earlier figures: a COMPOUND repeated byte for byte, which the v4 fast path's parse remembers).

    python bench/bench_nfs4.py [--calls 20000] [--rounds 7] [--stateid open|anonymous]
                               [--offsets random|zero] [--profile WORKLOAD VERSION]

``--wire``: the same calls over TCP to an ``acmenfs nfsd`` process (``--server-python``, e.g. a
venv of Debian's python), from one load client in this process that keeps ``--depth`` calls in
flight on one connection (4.1: one session slot per call in flight, fresh seqid per call; the
same client shape for v3 and v4).  Reported per call: server CPU (utime + stime of the server
process from /proc over the timed calls) and the calls per second the client saw, medians of
alternating rounds (server CPU from /proc of the server's process tree, in clock ticks: use
enough calls).  There is no libnfs client for v4.1: this is how v4.1 is measured end to end.

    python bench/bench_nfs4.py --wire [--server-python PY] [--depth 8] [--calls 20000] [--rounds 5]
                               [--stateid open|anonymous]

(``--wire`` reads and writes at offset 0 only.)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from procstop import stop_process  # bench/procstop.py (a bench script runs with bench/ on sys.path)
from rounds import rotated  # bench/rounds.py

NFS_PROGRAM, MOUNT_PROGRAM = 100003, 100005
CLIENT = ("127.0.0.1", 800)
ZERO_STATEID = b"\0" * 16
UNSTABLE = 0
# Linux nfs4_fattr_bitmap: TYPE CHANGE SIZE FSID FILEID | MODE NUMLINKS OWNER OWNER_GROUP RAWDEV
# SPACE_USED TIME_ACCESS TIME_METADATA TIME_MODIFY MOUNTED_ON_FILEID
LINUX_GETATTR = (1, 3, 4, 8, 20, 33, 35, 36, 37, 41, 45, 47, 52, 53, 55)
_CRED = struct.pack(">II", 0, 5) + b"bench\0\0\0" + struct.pack(">III", 0, 0, 0)
_CALL = struct.Struct(">IIIIII")


def call_record(xid: int, program: int, version: int, proc: int, args: bytes) -> bytes:
    """An RPC call with AUTH_SYS uid 0, gid 0, machine name "bench"."""
    return (_CALL.pack(xid, 0, 2, program, version, proc) + struct.pack(">II", 1, len(_CRED)) + _CRED
            + struct.pack(">II", 0, 0) + args)


class Harness:
    """One NfsServer's v3, v4 and MOUNT programs behind one dispatcher."""

    def __init__(self, workdir: Path) -> None:
        from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
        from acmenfs.nfs3.server import NfsServer
        from acmenfs.oncrpc.dispatch import RpcDispatcher

        export_dir = workdir / "export"
        export_dir.mkdir()
        (export_dir / "f").write_bytes(b"\x5a" * (1 << 20))
        self.server = NfsServer(ExportTable([Export("/e", str(export_dir),
                                                    rules=(ClientRule("127.0.0.1", squash="none"),))]),
                                workdir / "state")
        self.dispatcher = RpcDispatcher(
            [self.server.nfs_program(), self.server.nfs4.program(), self.server.mount_program()],
            drc=self.server.drc)
        self.xid = 0

    def record(self, program: int, version: int, proc: int, args: bytes) -> bytes:
        self.xid += 1
        return call_record(self.xid, program, version, proc, args)

    def call(self, program: int, version: int, proc: int, args: bytes) -> bytes:
        parts = self.dispatcher.call_here(self.record(program, version, proc, args), CLIENT, "tcp")
        reply = b"".join(bytes(p) if not isinstance(p, bytes) else p for p in parts)
        return reply[24:]  # xid, REPLY, MSG_ACCEPTED, AUTH_NONE verifier, SUCCESS

    def close(self) -> None:
        self.server._executor.shutdown(wait=True)
        self.server.state.close()


def _v4_ops():
    from acmenfs.nfs4.client import Ops, u32
    return Ops, u32


def open_stateids(send, stateid: str):
    """(established v4.1 session client, v4.0 stateid, v4.1 stateid) over ``send(args) -> reply``:
    the stateids of an OPEN of /e/f (access read+write, deny none) by a v4.0 client ID and in the
    session, or the anonymous stateid for both when ``stateid`` is "anonymous"."""
    from acmenfs.nfs4.client import Nfs4Client

    session = Nfs4Client(send, minor=1)
    session.establish()
    if stateid == "anonymous":
        return session, ZERO_STATEID, ZERO_STATEID
    client40 = Nfs4Client(send, minor=0)
    client40.establish()
    _, stateid40 = client40.open("/e/f", access=3)
    _, stateid41 = session.open("/e/f", access=3)
    return session, stateid40, stateid41


def prepare(harness: Harness, stateid: str = "open") -> dict[str, object]:
    """File handles (v3 and v4), an established v4.1 session and the v4 stateids READ and WRITE send."""
    from acmenfs.nfs3 import client as nfs
    from acmenfs.nfs4.client import compound_args

    root = nfs.decode_mnt_result(harness.call(MOUNT_PROGRAM, 3, 1, nfs.encode_mnt_args("/e")))
    fh3 = nfs.decode_lookup_result(harness.call(NFS_PROGRAM, 3, 3, nfs.encode_lookup_args(root, "f")))[0]
    session, stateid40, stateid41 = open_stateids(lambda args: harness.call(NFS_PROGRAM, 4, 1, args), stateid)
    fh4 = session.fh_of("/e/f")
    return {"fh3": fh3, "fh4": fh4, "session": session, "compound_args": compound_args,
            "stateid40": stateid40, "stateid41": stateid41}


def workloads(harness: Harness, setup: dict, offsets: str = "random") -> dict[str, dict[str, callable]]:
    """workload -> version -> records(n): n call records, built before the clock starts."""
    from acmenfs.nfs3 import client as nfs
    from acmenfs.oncrpc.xdr import Packer

    Ops, u32 = _v4_ops()
    fh3, fh4, session, compound_args = setup["fh3"], setup["fh4"], setup["session"], setup["compound_args"]
    data = b"\xa5" * 4096

    # READ and WRITE go to a 4k block of the 1 MiB file that changes on every call (a fixed
    # pseudo-random sequence, the same for every version), as in a VM's random I/O; --offsets zero: all at 0
    blocks = [(index * 157) % 256 * 4096 if offsets == "random" else 0 for index in range(256)]

    def v3(proc: int, args_at):
        return lambda n: [harness.record(NFS_PROGRAM, 3, proc, args_at(blocks[i % 256])) for i in range(n)]

    def v40(*ops_at):
        return lambda n: [harness.record(NFS_PROGRAM, 4, 1, compound_args([op(blocks[i % 256]) for op in ops_at], 0))
                          for i in range(n)]

    def v41(*ops_at):
        def build(n: int) -> list[bytes]:
            records = []
            for i in range(n):
                session.slot_seqid += 1
                sequence = Ops.sequence(session.sessionid, session.slot_seqid, cache=False)
                ops = [sequence, *(op(blocks[i % 256]) for op in ops_at)]
                records.append(harness.record(NFS_PROGRAM, 4, 1, compound_args(ops, 1)))
            return records
        return build

    def read3(offset: int) -> bytes:
        packer = Packer()
        packer.pack_opaque(fh3); packer.pack_uhyper(offset); packer.pack_uint(4096)
        return packer.get_buffer()

    def write3(offset: int) -> bytes:
        packer = Packer()
        packer.pack_opaque(fh3); packer.pack_uhyper(offset); packer.pack_uint(4096); packer.pack_uint(UNSTABLE)
        packer.pack_opaque(data)
        return packer.get_buffer()

    def fixed(op: bytes):
        return lambda offset: op

    putfh = fixed(Ops.putfh(fh4))
    sid40, sid41 = setup["stateid40"], setup["stateid41"]
    getattr4 = fixed(Ops.getattr(*LINUX_GETATTR))
    getattr3 = nfs.encode_fh_args(fh3)
    return {
        "GETATTR": {"v3": v3(1, lambda offset: getattr3), "v4.0": v40(putfh, getattr4),
                    "v4.1": v41(putfh, getattr4)},
        "READ 4k": {"v3": v3(6, read3), "v4.0": v40(putfh, lambda offset: Ops.read(sid40, offset, 4096)),
                    "v4.1": v41(putfh, lambda offset: Ops.read(sid41, offset, 4096))},
        "WRITE 4k": {"v3": v3(7, write3),
                     "v4.0": v40(putfh, lambda offset: Ops.write(sid40, offset, data, stable=UNSTABLE)),
                     "v4.1": v41(putfh, lambda offset: Ops.write(sid41, offset, data, stable=UNSTABLE))},
    }


def check_replies(harness: Harness, table: dict) -> None:
    """Every benchmarked call must succeed (status 0), else the figures mean nothing."""
    for workload, versions in table.items():
        for version, build in versions.items():
            record = build(1)[0]
            parts = harness.dispatcher.call_here(record, CLIENT, "tcp")
            reply = b"".join(bytes(p) for p in parts)
            status = struct.unpack_from(">I", reply, 24)[0]
            if status != 0:
                raise SystemExit(f"{workload} {version}: status {status}")


def time_calls(harness: Harness, records: list[bytes]) -> float:
    """CPU microseconds of this thread per call (thread_time: other processes on a busy machine
    do not count, as they would in wall time)."""
    call_here = harness.dispatcher.call_here
    started = time.thread_time()
    for record in records:
        call_here(record, CLIENT, "tcp")
    return (time.thread_time() - started) / len(records) * 1e6


def measure(calls: int, rounds: int, stateid: str = "open", offsets: str = "random") -> dict[str, dict[str, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nfs4-"))
    harness = Harness(workdir)
    try:
        table = workloads(harness, prepare(harness, stateid), offsets)
        check_replies(harness, table)
        samples = {w: {v: [] for v in versions} for w, versions in table.items()}
        for round_index in range(rounds):
            for workload, versions in table.items():
                for version in rotated(versions, round_index):
                    records = versions[version](calls)
                    samples[workload][version].append(time_calls(harness, records))
        return {w: {v: statistics.median(s) for v, s in versions.items()} for w, versions in samples.items()}
    finally:
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


def profile(workload: str, version: str, calls: int, stateid: str = "open", offsets: str = "random") -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nfs4-"))
    harness = Harness(workdir)
    try:
        table = workloads(harness, prepare(harness, stateid), offsets)
        check_replies(harness, table)
        records = table[workload][version](calls)
        profiler = cProfile.Profile()
        profiler.enable()
        time_calls(harness, records)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    finally:
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


# ----- over TCP to a server process ----------------------------------------------------------
class Connection:
    """One TCP connection speaking record-marked RPC: blocking, calls pipelined by the caller."""

    def __init__(self, port: int) -> None:
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.xid = 0

    def send(self, record: bytes) -> None:
        self.sock.sendall(struct.pack(">I", 0x80000000 | len(record)) + record)

    def receive(self) -> bytes:
        """One reply record (single fragment, as our server sends)."""
        while True:
            if len(self.buffer) >= 4:
                length = struct.unpack_from(">I", self.buffer)[0] & 0x7FFFFFFF
                if len(self.buffer) >= 4 + length:
                    record = bytes(self.buffer[4:4 + length])
                    del self.buffer[:4 + length]
                    return record
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk

    def call(self, program: int, version: int, proc: int, args: bytes) -> bytes:
        self.xid += 1
        self.send(call_record(self.xid, program, version, proc, args))
        reply = self.receive()
        if struct.unpack_from(">I", reply)[0] != self.xid or struct.unpack_from(">I", reply, 20)[0] != 0:
            raise RuntimeError(f"call {program}/{version}/{proc} failed: {reply[:28].hex()}")
        return reply[24:]

    def close(self) -> None:
        self.sock.close()


def start_server(python: str, export_dir: Path, workdir: Path, extra: list[str]):
    import re
    import subprocess
    log_path = workdir / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [python, "-m", "acmenfs", "nfsd", "--export", f"/e={export_dir}", "--port", "0", "--mount-port", "0",
         "--state-dir", str(workdir / "state"), "--squash", "none", "--client", "127.0.0.1",
         "--log-level", "WARNING", *extra], stdout=subprocess.DEVNULL, stderr=log, cwd="/")
    deadline = time.monotonic() + 60
    while not (match := re.search(rb"nfsport=(\d+)&mountport=(\d+)", log_path.read_bytes())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"acmenfs nfsd did not start: {log_path.read_text()}")
        time.sleep(0.05)
    return process, log, int(match.group(1)), int(match.group(2))


def process_cpu_seconds(pid: int) -> float:
    """CPU of the server's process tree (``acmenfs nfsd`` runs worker processes)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_vmio import tree_cpu_seconds
    return tree_cpu_seconds(pid)


def wire_workloads(conn: Connection, mount_port: int, depth: int,
                   stateid: str = "open") -> dict[str, dict[str, callable]]:
    """workload -> version -> next_args(slot) -> (program, version, proc, args)."""
    from acmenfs.nfs3 import client as nfs
    from acmenfs.nfs4.client import Ops, compound_args
    from acmenfs.oncrpc.xdr import Packer

    mount = Connection(mount_port)
    root = nfs.decode_mnt_result(mount.call(MOUNT_PROGRAM, 3, 1, nfs.encode_mnt_args("/e")))
    mount.close()
    fh3 = nfs.decode_lookup_result(conn.call(NFS_PROGRAM, 3, 3, nfs.encode_lookup_args(root, "f")))[0]
    session, sid40, sid41 = open_stateids(lambda args: conn.call(NFS_PROGRAM, 4, 1, args), stateid)
    fh4 = session.fh_of("/e/f")
    seqids = [session.slot_seqid] + [0] * (depth - 1)   # slot 0 carried the setup calls
    data = b"\xa5" * 4096
    read3 = Packer(); read3.pack_opaque(fh3); read3.pack_uhyper(0); read3.pack_uint(4096)
    write3 = Packer(); write3.pack_opaque(fh3); write3.pack_uhyper(0); write3.pack_uint(4096)
    write3.pack_uint(UNSTABLE); write3.pack_opaque(data)
    putfh = Ops.putfh(fh4)
    v4ops = {minor: {"GETATTR": Ops.getattr(*LINUX_GETATTR), "READ 4k": Ops.read(sid, 0, 4096),
                     "WRITE 4k": Ops.write(sid, 0, data, stable=UNSTABLE)}
             for minor, sid in ((0, sid40), (1, sid41))}
    v3calls = {"GETATTR": (1, nfs.encode_fh_args(fh3)), "READ 4k": (6, read3.get_buffer()),
               "WRITE 4k": (7, write3.get_buffer())}

    def v41(op: bytes):
        def next_args(slot: int):
            seqids[slot] += 1
            return NFS_PROGRAM, 4, 1, compound_args([Ops.sequence(session.sessionid, seqids[slot], slot,
                                                                   depth - 1, cache=False), putfh, op], 1)
        return next_args

    def fixed(program: int, version: int, proc: int, args: bytes):
        return lambda slot: (program, version, proc, args)

    return {name: {"v3": fixed(NFS_PROGRAM, 3, *v3calls[name]),
                   "v4.0": fixed(NFS_PROGRAM, 4, 1, compound_args([putfh, v4ops[0][name]], 0)),
                   "v4.1": v41(v4ops[1][name])} for name in v3calls}


def run_wire(conn: Connection, next_args, calls: int, depth: int, server_pid: int) -> tuple[float, float]:
    """(server CPU us per call, calls per second) for ``calls`` calls, ``depth`` in flight."""
    slot_of: dict[int, int] = {}

    def submit(slot: int) -> None:
        conn.xid += 1
        slot_of[conn.xid] = slot
        conn.send(call_record(conn.xid, *next_args(slot)))

    cpu_before = process_cpu_seconds(server_pid)
    started = time.perf_counter()
    for slot in range(depth):
        submit(slot)
    sent, done = depth, 0
    while done < calls:
        reply = conn.receive()
        xid, accepted = struct.unpack_from(">I", reply)[0], struct.unpack_from(">I", reply, 20)[0]
        status = struct.unpack_from(">I", reply, 24)[0]
        if accepted != 0 or status != 0:
            raise RuntimeError(f"xid {xid}: accept {accepted} status {status}")
        done += 1
        slot = slot_of.pop(xid)
        if sent < calls:
            submit(slot)
            sent += 1
    elapsed = time.perf_counter() - started
    cpu = process_cpu_seconds(server_pid) - cpu_before
    return cpu / calls * 1e6, calls / elapsed


def measure_wire(python: str, calls: int, rounds: int, depth: int, server_args: list[str],
                 stateid: str = "open") -> dict[str, dict[str, tuple[float, float]]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nfs4-wire-"))
    export_dir = workdir / "export"
    export_dir.mkdir()
    (export_dir / "f").write_bytes(b"\x5a" * (1 << 20))
    process, log, port, mount_port = start_server(python, export_dir, workdir, server_args)
    try:
        conn = Connection(port)
        table = wire_workloads(conn, mount_port, depth, stateid)
        samples = {w: {v: [] for v in versions} for w, versions in table.items()}
        for round_index in range(rounds):
            for workload, versions in table.items():
                for version in rotated(versions, round_index):
                    samples[workload][version].append(run_wire(conn, versions[version], calls, depth, process.pid))
        conn.close()
        return {w: {v: (statistics.median(c for c, _ in s), statistics.median(r for _, r in s))
                    for v, s in versions.items()} for w, versions in samples.items()}
    finally:
        stop_process(process, 60)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", nargs=2, metavar=("WORKLOAD", "VERSION"),
                        help='cProfile one workload, e.g. --profile GETATTR v4.1')
    parser.add_argument("--stateid", choices=("open", "anonymous"), default="open",
                        help="v4 READ/WRITE stateid: an OPEN's, as Linux and libnfs send (default), or the "
                             "anonymous one (the figures measured before this option)")
    parser.add_argument("--offsets", choices=("random", "zero"), default="random",
                        help="READ/WRITE offsets: a 4k block that changes on every call (default), or 0 "
                             "(the figures measured before this option)")
    parser.add_argument("--wire", action="store_true", help="over TCP to an acmenfs nfsd process")
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--depth", type=int, default=8, help="--wire: calls in flight")
    parser.add_argument("--server-args", default="--workers 1 --busy-poll-us 0",
                        help="--wire: acmenfs nfsd arguments (default: one process, since the load client "
                             "speaks v3 and v4 on one connection and with several workers only worker 0 "
                             "serves v4; no busy polling, which would count the time the server waits for "
                             "this Python client as server CPU)")
    args = parser.parse_args()
    if args.wire:
        import shlex
        results = measure_wire(args.server_python, args.calls, args.rounds, args.depth, shlex.split(args.server_args),
                               args.stateid)
        print(f"server: {args.server_python} nfsd {args.server_args}; client: python {sys.version.split()[0]}; {args.depth} calls in "
              f"flight; medians of {args.rounds} rounds of {args.calls} calls; {args.stateid} stateid")
        print(f"{'workload':<10}{'server CPU us/call  v3':>24}{'v4.0':>8}{'v4.1':>8}{'v4.0/v3':>9}{'v4.1/v3':>9}"
              f"{'calls/s  v3':>14}{'v4.0':>8}{'v4.1':>8}")
        for workload, values in results.items():
            cpu = {v: values[v][0] for v in values}
            rate = {v: values[v][1] for v in values}
            print(f"{workload:<10}{cpu['v3']:>24.1f}{cpu['v4.0']:>8.1f}{cpu['v4.1']:>8.1f}"
                  f"{cpu['v4.0'] / max(cpu['v3'], 1e-9):>9.2f}{cpu['v4.1'] / max(cpu['v3'], 1e-9):>9.2f}"
                  f"{rate['v3']:>14.0f}{rate['v4.0']:>8.0f}{rate['v4.1']:>8.0f}")
        return 0
    if args.profile:
        profile(args.profile[0], args.profile[1], args.calls, args.stateid, args.offsets)
        return 0
    results = measure(args.calls, args.rounds, args.stateid, args.offsets)
    print(f"python {sys.version.split()[0]} ({sys.executable}); CPU us per call, median of {args.rounds} rounds "
          f"of {args.calls} calls; {args.stateid} stateid; {args.offsets} offsets")
    print(f"{'workload':<10}{'v3':>8}{'v4.0':>8}{'v4.1':>8}{'v4.0/v3':>9}{'v4.1/v3':>9}")
    for workload, values in results.items():
        print(f"{workload:<10}{values['v3']:>8.2f}{values['v4.0']:>8.2f}{values['v4.1']:>8.2f}"
              f"{values['v4.0'] / values['v3']:>9.2f}{values['v4.1'] / values['v3']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
