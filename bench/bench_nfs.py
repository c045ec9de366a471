"""Benchmark: acmenfs nfsd against NFS-Ganesha, same client, same disk, alternating runs.

Measures, for each server, the median of several runs of
  * 256 MiB sequential write with ``nfs-cp`` (MB/s, includes its final COMMIT),
  * 256 MiB sequential read with ``nfs-cat`` (MB/s, output to /dev/null),
  * small-file metadata: create + getattr + remove of 2,000 files through the
    libnfs Python bindings (operations/s),
and prints acmenfs/Ganesha ratios.  Both servers export a directory on the same
file system; runs rotate which server goes first, and the number of runs is rounded up
to a multiple of the number of servers so each takes each place equally often.  Every
timed write and metadata run starts after ``sync``: otherwise the second 256 MiB write
of a run meets the first one's dirty pages being written back and runs at half speed,
whichever server it is (seen here: 520-730 MB/s first, 240-300 MB/s second).  Needs
root, nfs-ganesha + nfs-ganesha-vfs, libnfs-utils and the libnfs bindings.

    python bench/bench_nfs.py [--runs 15] [--size-mib 256] [--files 2000]
                              [--only metadata] [--no-poll] [--compare-tree DIR]
                              [--server-python PATH]

``--only`` limits the run to some metrics (repeatable: write, read, metadata).
``--no-poll`` also runs acmenfs with busy polling off (``--busy-poll-us 0``), as
"acmenfs-nopoll".  ``--compare-tree DIR`` also runs, alternating with the others, an ``acmenfs nfsd``
imported from DIR (a copy of another version's ``acmenfs`` package, e.g. before a
change), reported as "acmenfs-ref" with its own ratio to Ganesha.  ``--server-python PATH`` also
runs ``acmenfs nfsd`` under another interpreter that has acmenfs installed (e.g. a venv of
Debian's /usr/bin/python3, built with PGO and LTO), reported as "acmenfs-otherpy".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libnfs

from procstop import stop_process  # bench/procstop.py (a bench script runs with bench/ on sys.path)
from rounds import rotated, whole_rotations  # bench/rounds.py

TOOLS = Path(os.environ.get("ACMENFS_SHARED", Path(__file__).resolve().parent.parent.parent / "shared")) / "tools"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Ganesha:
    name = "ganesha"

    def __init__(self, export_dir: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.mount_port = free_port(), free_port()
        result = subprocess.run([str(TOOLS / "ganesha-up.sh"), str(export_dir), str(self.port), str(self.mount_port),
                                 str(workdir)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"ganesha-up failed: {result.stdout}{result.stderr}")
        self.export_path = str(export_dir.resolve())

    def url(self, path: str = "") -> str:
        return f"nfs://127.0.0.1{self.export_path}{path}?version=3&nfsport={self.port}&mountport={self.mount_port}"

    def stop(self) -> None:
        subprocess.run([str(TOOLS / "ganesha-down.sh"), str(self.workdir)], capture_output=True, timeout=60)


class Acmenfs:
    name = "acmenfs"
    python_path: str | None = None  # import acmenfs from here instead of the installed package
    interpreter: str = sys.executable
    extra_args: tuple[str, ...] = ()

    def __init__(self, export_dir: Path, workdir: Path) -> None:
        self.log_path = workdir / "nfsd.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        if self.python_path:
            env["PYTHONPATH"] = self.python_path
        self.process = subprocess.Popen(
            [self.interpreter, "-m", "acmenfs", "nfsd", "--export", f"/bench={export_dir}", "--port", "0",
             "--mount-port", "0", "--state-dir", str(workdir / "state"), "--squash", "none",
             "--client", "127.0.0.1", "--log-level", "WARNING", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env,
            cwd=self.python_path)  # "-m" puts the working directory first on sys.path
        deadline = time.monotonic() + 30
        while not (match := re.search(rb"nfsport=(\d+)&mountport=(\d+)", self.log_path.read_bytes())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"acmenfs nfsd did not start: {self.log_path.read_text()}")
            time.sleep(0.05)
        self.port, self.mount_port = int(match.group(1)), int(match.group(2))

    def url(self, path: str = "") -> str:
        return f"nfs://127.0.0.1/bench{path}?version=3&nfsport={self.port}&mountport={self.mount_port}"

    def stop(self) -> None:
        stop_process(self.process, 60)
        self.log.close()


class AcmenfsNoPoll(Acmenfs):
    """acmenfs with busy polling off: every call pays the server's wake-up, as Ganesha's do."""
    name = "acmenfs-nopoll"
    extra_args = ("--busy-poll-us", "0")


def other_interpreter_server(interpreter: Path) -> type:
    """An Acmenfs variant run by another Python (one with acmenfs installed), e.g. the
    distribution's PGO+LTO build against a self-built one."""
    return type("AcmenfsOtherPython", (Acmenfs,), {"name": "acmenfs-otherpy", "interpreter": str(interpreter)})


def reference_server(tree: Path) -> type:
    """An Acmenfs variant importing the package from ``tree``."""
    return type("AcmenfsReference", (Acmenfs,), {"name": "acmenfs-ref", "python_path": str(tree.resolve())})


def timed(argv: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, timeout=600, **kwargs)
    return time.perf_counter() - started


def write_run(server, source: Path, name: str) -> float:
    os.sync()  # start from no dirty pages: see the module docstring
    return source.stat().st_size / timed(["nfs-cp", str(source), server.url(f"/{name}")], stdout=subprocess.DEVNULL) / 1e6


def read_run(server, name: str, size: int) -> float:
    return size / timed(["nfs-cat", server.url(f"/{name}")], stdout=subprocess.DEVNULL) / 1e6


def metadata_run(server, files: int, run: int) -> float:
    os.sync()
    client = libnfs.NFS(server.url())
    directory = f"/meta{run}"
    client.mkdir(directory)
    started = time.perf_counter()
    for i in range(files):
        path = f"{directory}/f{i:05d}"
        client.open(path, "w").close()
        client.stat(path)
        client.unlink(path)
    elapsed = time.perf_counter() - started
    client.rmdir(directory)
    return 3 * files / elapsed


def round_ratios(ours: list[float], theirs: list[float], servers: int) -> list[float]:
    """Per round of ``servers`` consecutive runs (each server once in each place): the geometric
    mean of ours/theirs over the round's runs.  A place that runs faster (e.g. the first write of
    a run) multiplies one run's ratio and divides another's: the round's mean is free of it."""
    ratios = [mine / other for mine, other in zip(ours, theirs)]
    return [statistics.geometric_mean(ratios[start:start + servers]) for start in range(0, len(ratios), servers)]


def remove_remote(server, name: str) -> None:
    libnfs.NFS(server.url()).unlink(f"/{name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None, help="on the disk to test (default: a temp dir)")
    parser.add_argument("--only", action="append", choices=("write", "read", "metadata"), default=None,
                        help="measure only this (repeatable; default all three)")
    parser.add_argument("--no-poll", action="store_true",
                        help="also run acmenfs with --busy-poll-us 0 (reported as acmenfs-nopoll)")
    parser.add_argument("--server-python", type=Path, default=None,
                        help="also run acmenfs under this interpreter (reported as acmenfs-otherpy)")
    parser.add_argument("--compare-tree", type=Path, default=None,
                        help="also run acmenfs imported from this directory (holding an acmenfs package)")
    args = parser.parse_args()
    wanted = set(args.only or ("write", "read", "metadata"))
    if "read" in wanted:
        wanted.add("write")  # the read runs read the files the write runs made
    for tool in ("nfs-cp", "nfs-cat", "ganesha.nfsd"):
        if shutil.which(tool) is None:
            print(f"missing {tool}", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-nfs-", dir=args.workdir))
    size = args.size_mib * 1024 * 1024
    source = workdir / "source.bin"
    with open(source, "wb") as out:
        for _ in range(args.size_mib if "write" in wanted else 0):
            out.write(os.urandom(1024 * 1024))
    kinds = [Acmenfs, Ganesha] + ([AcmenfsNoPoll] if args.no_poll else []) + (
        [reference_server(args.compare_tree)] if args.compare_tree else []) + (
        [other_interpreter_server(args.server_python)] if args.server_python else [])
    servers = []
    try:
        for kind in kinds:
            export = workdir / f"export-{kind.name}"
            export.mkdir()
            export.chmod(0o777)
            (workdir / f"work-{kind.name}").mkdir()
            servers.append(kind(export, workdir / f"work-{kind.name}"))
        results: dict[tuple[str, str], list[float]] = {}
        runs = whole_rotations(args.runs, len(servers))  # each server takes each place equally often
        for run in range(runs):
            order = rotated(servers, run)  # each takes each place in turn
            if "write" in wanted:
                for server in order:
                    name = f"seq{run}.bin"
                    results.setdefault((server.name, "write MB/s"), []).append(write_run(server, source, name))
            if "read" in wanted:
                for server in order:
                    results.setdefault((server.name, "read MB/s"), []).append(read_run(server, f"seq{run}.bin", size))
            if "write" in wanted:
                for server in order:
                    remove_remote(server, f"seq{run}.bin")
            if "metadata" in wanted:
                for server in order:
                    results.setdefault((server.name, "metadata ops/s"), []).append(
                        metadata_run(server, args.files, run))
            print(f"run {run + 1}/{runs}: " + ", ".join(
                f"{who} {what} {values[-1]:.0f}" for (who, what), values in sorted(results.items())), flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'metric':<16}{'server':<15}{'median':>8}{'ganesha':>9}{'ratio':>7}{'rounds':>8}   (medians of {runs} "
          f"runs in {runs // len(servers)} rounds; {args.size_mib} MiB, {args.files} files; min-max in brackets)")
    for metric in ("write MB/s", "read MB/s", "metadata ops/s"):
        if ("ganesha", metric) not in results:
            continue
        theirs = results[("ganesha", metric)]
        for server in servers:
            if server.name == "ganesha":
                continue
            ours = results[(server.name, metric)]
            rounds = round_ratios(ours, theirs, len(servers))
            print(f"{metric:<16}{server.name:<15}{statistics.median(ours):>8.0f}{statistics.median(theirs):>9.0f}"
                  f"{statistics.median(rounds):>7.2f}   [{min(rounds):.2f}-{max(rounds):.2f}]"
                  f"   [{min(ours):.0f}-{max(ours):.0f}] vs [{min(theirs):.0f}-{max(theirs):.0f}]")
    print("ratio: median over rounds of the round's ratio (geometric mean of its runs' ours/ganesha; in a "
          "round each server runs once in each place, so a place's advantage cancels); [min-max] over rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
