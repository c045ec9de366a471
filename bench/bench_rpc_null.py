"""RPC NULL calls/s over one TCP connection with 64 calls in flight: acmenfs vs NFS-Ganesha.

Runs our RPC server (NULL only, uvloop and stdlib asyncio) and Ganesha 4.3 (NFS
program 100003 v3, started with shared/tools/ganesha-up.sh) in the same run,
with the same pipelined client process (bench/rpc_null_load.py), alternating
rounds, and reports medians and ratios against Ganesha.

Usage: python bench/bench_rpc_null.py [--rounds 5] [--seconds 3] [--depth 64] [--no-ganesha]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from procstop import stop_process  # bench/procstop.py (a bench script runs with bench/ on sys.path)

HERE = Path(__file__).resolve().parent
TOOLS = Path(os.environ.get("ACMENFS_SHARED", HERE.parent.parent / "shared")) / "tools"
NFS_PROGRAM, NFS_V3 = 100003, 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ours(loop_kind: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "rpc_null_server.py"), "0", str(NFS_PROGRAM),
                             str(NFS_V3), loop_kind], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    return proc, int(line[1])


def load(port: int, seconds: float, depth: int) -> float:
    out = subprocess.run([sys.executable, str(HERE / "rpc_null_load.py"), "127.0.0.1", str(port),
                          str(NFS_PROGRAM), str(NFS_V3), str(seconds), str(depth)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--no-ganesha", action="store_true")
    args = parser.parse_args()

    servers = {}
    for kind in ("uvloop", "asyncio"):
        servers[f"acmenfs ({kind})"] = start_ours(kind)
    workdir = tempfile.mkdtemp(prefix="ganesha-null-")
    if not args.no_ganesha:
        gport, mport = free_port(), free_port()
        subprocess.run(["bash", str(TOOLS / "ganesha-up.sh"), os.path.join(workdir, "export"),
                        str(gport), str(mport), workdir], check=True, capture_output=True)
        servers["ganesha 4.3"] = (None, gport)
    results: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _ in range(args.rounds):
            for name, (_, port) in servers.items():  # alternate servers within each round
                results[name].append(load(port, args.seconds, args.depth))
    finally:
        for name, (proc, _) in servers.items():
            if proc is not None:
                stop_process(proc, 10)
        if not args.no_ganesha:
            subprocess.run(["bash", str(TOOLS / "ganesha-down.sh"), workdir], capture_output=True)

    baseline = statistics.median(results["ganesha 4.3"]) if "ganesha 4.3" in results else None
    print(f"RPC NULL over one TCP connection, {args.depth} in flight, {args.rounds} rounds x {args.seconds:.0f} s")
    print(f"{'server':<22}{'median calls/s':>16}{'min':>10}{'max':>10}{'vs ganesha':>12}")
    for name, values in results.items():
        median = statistics.median(values)
        ratio = f"{median / baseline:.2f}x" if baseline else "-"
        print(f"{name:<22}{median:>16.0f}{min(values):>10.0f}{max(values):>10.0f}{ratio:>12}")


if __name__ == "__main__":
    main()
