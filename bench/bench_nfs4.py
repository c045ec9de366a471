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
prints microseconds per call (median of ``--rounds``) and the ratio v4/v3.  The v4.1
calls run in an established session (EXCHANGE_ID, CREATE_SESSION, RECLAIM_COMPLETE) on
slot 0 with a fresh seqid per call, so SEQUENCE does its full work (the slot's reply
cache included); v4.0 runs without client state, with the anonymous stateid.

    python bench/bench_nfs4.py [--calls 20000] [--rounds 7] [--profile WORKLOAD]
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


def prepare(harness: Harness) -> dict[str, object]:
    """File handles (v3 and v4) and an established v4.1 session."""
    from acmenfs.nfs3 import client as nfs
    from acmenfs.nfs4.client import Nfs4Client, compound_args

    root = nfs.decode_mnt_result(harness.call(MOUNT_PROGRAM, 3, 1, nfs.encode_mnt_args("/e")))
    fh3 = nfs.decode_lookup_result(harness.call(NFS_PROGRAM, 3, 3, nfs.encode_lookup_args(root, "f")))[0]
    session = Nfs4Client(lambda args: harness.call(NFS_PROGRAM, 4, 1, args), minor=1)
    session.establish()
    fh4 = session.fh_of("/e/f")
    return {"fh3": fh3, "fh4": fh4, "session": session, "compound_args": compound_args}


def workloads(harness: Harness, setup: dict) -> dict[str, dict[str, callable]]:
    """workload -> version -> records(n): n call records, built before the clock starts."""
    from acmenfs.nfs3 import client as nfs
    from acmenfs.oncrpc.xdr import Packer

    Ops, u32 = _v4_ops()
    fh3, fh4, session, compound_args = setup["fh3"], setup["fh4"], setup["session"], setup["compound_args"]
    data = b"\xa5" * 4096

    def v3(proc: int, args: bytes):
        return lambda n: [harness.record(NFS_PROGRAM, 3, proc, args) for _ in range(n)]

    def v40(*ops: bytes):
        args = compound_args(list(ops), 0)
        return lambda n: [harness.record(NFS_PROGRAM, 4, 1, args) for _ in range(n)]

    def v41(*ops: bytes):
        def build(n: int) -> list[bytes]:
            records = []
            for _ in range(n):
                session.slot_seqid += 1
                sequence = Ops.sequence(session.sessionid, session.slot_seqid)
                records.append(harness.record(NFS_PROGRAM, 4, 1, compound_args([sequence, *ops], 1)))
            return records
        return build

    read3 = Packer()
    read3.pack_opaque(fh3); read3.pack_uhyper(0); read3.pack_uint(4096)
    write3 = Packer()
    write3.pack_opaque(fh3); write3.pack_uhyper(0); write3.pack_uint(4096); write3.pack_uint(UNSTABLE)
    write3.pack_opaque(data)
    putfh = Ops.putfh(fh4)
    read4 = Ops.read(ZERO_STATEID, 0, 4096)
    write4 = Ops.write(ZERO_STATEID, 0, data, stable=UNSTABLE)
    getattr4 = Ops.getattr(*LINUX_GETATTR)
    return {
        "GETATTR": {"v3": v3(1, nfs.encode_fh_args(fh3)), "v4.0": v40(putfh, getattr4),
                    "v4.1": v41(putfh, getattr4)},
        "READ 4k": {"v3": v3(6, read3.get_buffer()), "v4.0": v40(putfh, read4), "v4.1": v41(putfh, read4)},
        "WRITE 4k": {"v3": v3(7, write3.get_buffer()), "v4.0": v40(putfh, write4), "v4.1": v41(putfh, write4)},
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
    call_here = harness.dispatcher.call_here
    started = time.perf_counter()
    for record in records:
        call_here(record, CLIENT, "tcp")
    return (time.perf_counter() - started) / len(records) * 1e6


def measure(calls: int, rounds: int) -> dict[str, dict[str, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nfs4-"))
    harness = Harness(workdir)
    try:
        table = workloads(harness, prepare(harness))
        check_replies(harness, table)
        samples = {w: {v: [] for v in versions} for w, versions in table.items()}
        for round_index in range(rounds):
            for workload, versions in table.items():
                order = list(versions)
                shift = round_index % len(order)
                for version in order[shift:] + order[:shift]:
                    records = versions[version](calls)
                    samples[workload][version].append(time_calls(harness, records))
        return {w: {v: statistics.median(s) for v, s in versions.items()} for w, versions in samples.items()}
    finally:
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


def profile(workload: str, version: str, calls: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nfs4-"))
    harness = Harness(workdir)
    try:
        table = workloads(harness, prepare(harness))
        records = table[workload][version](calls)
        profiler = cProfile.Profile()
        profiler.enable()
        time_calls(harness, records)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    finally:
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", nargs=2, metavar=("WORKLOAD", "VERSION"),
                        help='cProfile one workload, e.g. --profile GETATTR v4.1')
    args = parser.parse_args()
    if args.profile:
        profile(args.profile[0], args.profile[1], args.calls)
        return 0
    results = measure(args.calls, args.rounds)
    print(f"python {sys.version.split()[0]} ({sys.executable}); us per call, median of {args.rounds} rounds "
          f"of {args.calls} calls")
    print(f"{'workload':<10}{'v3':>8}{'v4.0':>8}{'v4.1':>8}{'v4.0/v3':>9}{'v4.1/v3':>9}")
    for workload, values in results.items():
        print(f"{workload:<10}{values['v3']:>8.2f}{values['v4.0']:>8.2f}{values['v4.1']:>8.2f}"
              f"{values['v4.0'] / values['v3']:>9.2f}{values['v4.1'] / values['v3']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
