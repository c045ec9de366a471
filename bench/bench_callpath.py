"""Benchmark: Python cost of one NFS call through the sans-IO path, no sockets.

Feeds call records straight to the NFS server's ``RpcDispatcher`` (``begin`` then
the procedure, inline first as the TCP transport does) and reports microseconds
per call for NULL, GETATTR, LOOKUP, READ 4k (page cache, copied inline), WRITE 4k
UNSTABLE (inline), COMMIT after each 4k UNSTABLE WRITE (the pair, per call) and the
metadata loop of ``bench_nfs.py`` (LOOKUP dir, CREATE, LOOKUP file, SETATTR, GETATTR,
LOOKUP dir, REMOVE per file).  READ and WRITE go to page-aligned offsets cycling over
a 1 MiB file, as a random 4k workload at QD1 does.
This is the part of a call's latency our own code decides; the wire adds the
transport and the wake-ups.  Median of ``--rounds`` rounds.

    python bench/bench_callpath.py [--calls 20000] [--rounds 7] [--compare-tree DIR]

``--compare-tree DIR`` runs the same measurement in a subprocess importing
``acmenfs`` from DIR (e.g. a copy of the package before a change), alternating
rounds, and prints the ratio ours/reference (lower is better).  The reference must
have ``RpcDispatcher.call_here`` (any tree from the busy-polling change on).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NFS_PROGRAM, NFS_V3, MOUNT_PROGRAM, MOUNT_V3 = 100003, 3, 100005, 3
CLIENT = ("127.0.0.1", 800)


def call_record(xid: int, program: int, version: int, proc: int, args: bytes) -> bytes:
    """An RPC call with AUTH_SYS uid 0, gid 0, machine name "bench"."""
    machine = b"bench\0\0\0"
    cred = struct.pack(">II", 0, 5) + machine + struct.pack(">III", 0, 0, 0)
    return (struct.pack(">IIIIII", xid, 0, 2, program, version, proc)
            + struct.pack(">II", 1, len(cred)) + cred + struct.pack(">II", 0, 0) + args)


def write_args(fh_opaque: bytes, offset: int, data: bytes, stable: int) -> bytes:
    """WRITE3args after the file handle (already XDR opaque): offset, count, stable, data."""
    pad = b"\0" * (-len(data) % 4)
    return fh_opaque + struct.pack(">QIII", offset, len(data), stable, len(data)) + data + pad


class Harness:
    """An NfsServer's programs behind one dispatcher, driven call by call."""

    def __init__(self, workdir: Path) -> None:
        from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
        from acmenfs.nfs3.server import NfsServer
        from acmenfs.oncrpc.dispatch import RpcDispatcher

        export_dir = workdir / "export"
        export_dir.mkdir()
        self.server = NfsServer(ExportTable([Export("/e", str(export_dir),
                                                    rules=(ClientRule("127.0.0.1", squash="none"),))]),
                                workdir / "state")
        programs = [self.server.nfs_program(), self.server.mount_program()]
        if hasattr(self.server, "nfs_dispatcher"):  # with the v3 fast path when the server has one
            self.dispatcher = self.server.nfs_dispatcher(programs)
        else:  # an older tree (--compare-tree)
            self.dispatcher = RpcDispatcher(programs, drc=self.server.drc)
        self.xid = 0
        self.loop = asyncio.new_event_loop()

    def call(self, program: int, proc: int, args: bytes) -> bytes:
        self.xid += 1
        record = call_record(self.xid, program, 3, proc, args)
        if proc == 21 and program == NFS_PROGRAM:  # COMMIT is async: begin + run_async, as the transport does
            parts = self.loop.run_until_complete(self.dispatcher.run_async(self.dispatcher.begin(record, CLIENT, "tcp")))
        else:
            parts = self.dispatcher.call_here(record, CLIENT, "tcp")
        reply = b"".join(bytes(p) if not isinstance(p, bytes) else p for p in parts)
        return reply[24:]  # xid, REPLY, MSG_ACCEPTED, AUTH_NONE verifier, SUCCESS

    def close(self) -> None:
        self.loop.close()
        self.server._executor.shutdown(wait=True)
        self.server.state.close()


def measure(calls: int, rounds: int) -> dict[str, float]:
    from acmenfs.nfs3 import client as nfs

    workdir = Path(tempfile.mkdtemp(prefix="bench-callpath-"))
    harness = Harness(workdir)
    try:
        root = nfs.decode_mnt_result(harness.call(MOUNT_PROGRAM, 1, nfs.encode_mnt_args("/e")))
        from acmenfs.oncrpc.xdr import Packer

        packer = Packer()
        packer.pack_opaque(root)
        packer.pack_string("d")
        packer.pack_uint(1); packer.pack_uint(0o755)  # sattr3: mode set
        for _ in range(5):
            packer.pack_uint(0)
        harness.call(NFS_PROGRAM, 9, packer.get_buffer())  # MKDIR d
        directory = nfs.decode_lookup_result(harness.call(NFS_PROGRAM, 3, nfs.encode_lookup_args(root, "d")))[0]
        nfs.decode_create_result(harness.call(NFS_PROGRAM, 8, nfs.encode_create_args(directory, "f", 0o644)))
        file_fh = nfs.decode_lookup_result(harness.call(NFS_PROGRAM, 3, nfs.encode_lookup_args(directory, "f")))[0]
        file_fh_opaque = nfs.encode_fh_args(file_fh)

        simple = {
            "NULL": (NFS_PROGRAM, 0, b""),
            "GETATTR": (NFS_PROGRAM, 1, nfs.encode_fh_args(file_fh)),
            "LOOKUP": (NFS_PROGRAM, 3, nfs.encode_lookup_args(directory, "f")),
        }
        file_size, block = 1024 * 1024, 4096
        harness.call(NFS_PROGRAM, 7, write_args(file_fh_opaque, 0, b"\xa5" * file_size, 2))  # FILE_SYNC fill
        offsets = [(i * 97 % (file_size // block)) * block for i in range(file_size // block)]
        data = b"\x5a" * block
        io = {
            "READ 4k": [(NFS_PROGRAM, 6, file_fh_opaque + struct.pack(">QI", o, block)) for o in offsets],
            "WRITE 4k UNSTABLE": [(NFS_PROGRAM, 7, write_args(file_fh_opaque, o, data, 0)) for o in offsets],
        }
        commit = (NFS_PROGRAM, 21, file_fh_opaque + struct.pack(">QI", 0, 0))
        names = (*simple, *io, "WRITE+COMMIT (per call)", "metadata loop (per call)")
        results: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name, (program, proc, args) in simple.items():
                started = time.perf_counter()
                for _ in range(calls):
                    harness.call(program, proc, args)
                results[name].append((time.perf_counter() - started) / calls * 1e6)
            for name, cycle in io.items():
                started = time.perf_counter()
                for program, proc, args in itertools.islice(itertools.cycle(cycle), calls):
                    assert harness.call(program, proc, args)[:4] == b"\0\0\0\0", name
                results[name].append((time.perf_counter() - started) / calls * 1e6)
            pairs = max(1, calls // 10)
            started = time.perf_counter()
            for program, proc, args in itertools.islice(itertools.cycle(io["WRITE 4k UNSTABLE"]), pairs):
                harness.call(program, proc, args)
                harness.call(*commit)
            results["WRITE+COMMIT (per call)"].append((time.perf_counter() - started) / (pairs * 2) * 1e6)
            files = max(1, calls // 7)
            started = time.perf_counter()
            for i in range(files):
                name = f"m{i:06d}"
                harness.call(NFS_PROGRAM, 3, nfs.encode_lookup_args(root, "d"))
                fh = nfs.decode_create_result(harness.call(NFS_PROGRAM, 8, nfs.encode_create_args(
                    directory, name, 0o644, nfs.CreateMode.UNCHECKED)))
                harness.call(NFS_PROGRAM, 3, nfs.encode_lookup_args(directory, name))
                harness.call(NFS_PROGRAM, 2, nfs.encode_setattr_size_args(fh, 0))
                harness.call(NFS_PROGRAM, 1, nfs.encode_fh_args(fh))
                harness.call(NFS_PROGRAM, 3, nfs.encode_lookup_args(root, "d"))
                harness.call(NFS_PROGRAM, 12, nfs.encode_lookup_args(directory, name))  # REMOVE: diropargs3
            results["metadata loop (per call)"].append((time.perf_counter() - started) / (files * 7) * 1e6)
        return {name: statistics.median(values) for name, values in results.items()}
    finally:
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compare-tree", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.calls, args.rounds)))
        return 0
    if args.compare_tree is None:
        for name, value in measure(args.calls, args.rounds).items():
            print(f"{name:<28}{value:>8.2f} us/call")
        return 0
    trees = {"acmenfs": None, "reference": str(args.compare_tree.resolve())}
    samples: dict[str, list[dict[str, float]]] = {who: [] for who in trees}
    for round_index in range(args.rounds):
        order = list(trees.items()) if round_index % 2 == 0 else list(trees.items())[::-1]
        for who, path in order:
            env = dict(os.environ)
            if path is not None:
                env["PYTHONPATH"] = path
            output = subprocess.run([sys.executable, __file__, "--json", "--calls", str(args.calls), "--rounds", "1"],
                                    check=True, capture_output=True, text=True, env=env).stdout
            samples[who].append(json.loads(output.strip().splitlines()[-1]))
    print(f"{'us per call (median of ' + str(args.rounds) + ')':<28}{'acmenfs':>10}{'reference':>11}{'ratio':>8}")
    for name in samples["acmenfs"][0]:
        ours = statistics.median(s[name] for s in samples["acmenfs"])
        theirs = statistics.median(s[name] for s in samples["reference"])
        print(f"{name:<28}{ours:>10.2f}{theirs:>11.2f}{ours / theirs:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
