"""Benchmark: VM-disk I/O (issue #12) against NFS-Ganesha, same client, same file, alternating rounds.

Eight workloads over one 1 GiB file held in the page cache, each run by the libnfs async
load client ``nfsio`` (``../shared/tools/nfsio/nfsio.c``, built here with gcc on first use):

    4 KiB random read QD1 / QD32, 4 KiB random write QD1 / QD32,
    64 KiB random read / write QD16, 1 MiB sequential read / write QD4.

For every workload and round each server runs once; the order rotates from round to round and
the number of rounds is rounded up to a multiple of the number of servers, so each server takes
each place equally often.  Reported per server: IOPS, MB/s, p50/p99 latency (µs, from the
client) and server CPU µs per call (utime + stime of the server's process tree from /proc,
reaped children included, over the calls answered; the run's mount and final COMMIT are in it).
Ratios against Ganesha are per round (same round, neighbouring runs), then the median and the
min–max over rounds.  Writes end with one COMMIT (nfsio's fsync); every timed run starts after
``sync`` so no run meets another's dirty pages.

    python bench/bench_vmio.py [--rounds 2] [--seconds 5] [--only 4k-randread-qd1 ...]
        [--server-python /path/to/python] [--target nfsd|serve] [--connections K]
        [--acmenfs-args "--busy-poll-us 0"] [--variant w1=--workers 1 --variant w2=--workers 2]
        [--variant-python "w1=/path/to/python [args]"] [--no-ganesha] [--workdir DIR] [--nfs-version 3|4|3,4]

``--server-python``: the interpreter that runs ``acmenfs`` (it must have acmenfs installed, e.g.
a venv of Debian's /usr/bin/python3); default: this one.  ``--target serve`` runs ``acmenfs serve
--data-dir``, creates a share with a preallocated volume through the CLI (REST) and loads that
volume file; Ganesha then exports the share's directory, so both serve the same file.
``--connections K`` runs K nfsio processes at once (one connection each) and sums their IOPS.
``--acmenfs-args`` are appended to every acmenfs command line; ``--variant NAME=ARGS`` (repeatable)
runs several acmenfs configurations side by side, each with its ratio to Ganesha.  ``--nfs-version 4``
reaches every server over NFSv4.0 (libnfs ``?version=4``: no MOUNT, the pseudo-fs path; Ganesha
then serves ``PROTOCOLS="3, 4"`` at pseudo path /export); ``3,4`` runs each server over both
(names ``-v3`` / ``-v4``; ratios against Ganesha's v4), for v4 vs v3 of the same process.  Results go to
``bench/results/vmio-<time>.json``: every run (with its wall-clock ``started`` / ``ended``), the
summary, and the tail of each acmenfs server's INFO log (``server_logs``: busy-poll switches, inline
pauses, worker restarts; a count of each is printed) and, per run of an acmenfs server over one
connection, ``same_cpu_as_client``: the share of 20 ms samples in which the serving process's
event loop had last run on the client's CPU, to tell a slow round's cause from noise; and per run,
``page_cache``: how the file sat in the page cache just before it (``bench/page_cache.py``: the mean
size of the folio holding a random page).  On ext4 since Linux 6.16 a 4 KiB write into a 2 MiB folio
costs every server ~30 µs of kernel time more than one into a 4 KiB folio, so this one fact moves
4 KiB write results more than most changes to a server.
Needs root, nfs-ganesha + nfs-ganesha-vfs, libnfs-dev, gcc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from page_cache import folio_profile  # bench/page_cache.py
from procstop import stop_process  # bench/procstop.py (a bench script runs with bench/ on sys.path)
from rounds import rotated, whole_rotations  # bench/rounds.py

HERE = Path(__file__).resolve().parent

def _shared_dir() -> Path:
    """``$ACMENFS_SHARED``, else the first ``shared`` beside a parent of this checkout (main: ../shared,
    a worktree under /work/wt: ../../shared)."""
    if os.environ.get("ACMENFS_SHARED"):
        return Path(os.environ["ACMENFS_SHARED"])
    for parent in HERE.parents:
        if (parent / "shared" / "tools").is_dir():
            return parent / "shared"
    return HERE.parent.parent / "shared"


TOOLS = _shared_dir() / "tools"
FILE_NAME = "vm.img"
FILE_SIZE = 1 << 30
WORKLOADS = {  # name -> (nfsio mode, block size, queue depth)
    "4k-randread-qd1": ("randread", 4096, 1),
    "4k-randread-qd32": ("randread", 4096, 32),
    "4k-randwrite-qd1": ("randwrite", 4096, 1),
    "4k-randwrite-qd32": ("randwrite", 4096, 32),
    "64k-randread-qd16": ("randread", 65536, 16),
    "64k-randwrite-qd16": ("randwrite", 65536, 16),
    "1m-seqread-qd4": ("seqread", 1 << 20, 4),
    "1m-seqwrite-qd4": ("seqwrite", 1 << 20, 4),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nfsio_binary(workdir: Path) -> Path:
    source = TOOLS / "nfsio" / "nfsio.c"
    binary = workdir / "nfsio"
    if not binary.exists():
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source), "-lnfs"], check=True)
    return binary


# ----- CPU of a process tree, from /proc ----------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


class Placement(threading.Thread):
    """Every 20 ms, which CPU the main threads of an acmenfs server's processes (their event
    loops) and one client process last ran on (a few /proc reads: no load worth counting).

    ``same_cpu_share()``: of the samples, the share in which the busiest server process (the
    one whose CPU time grew most: the worker serving the connection) sat on the client's CPU.
    On a 2-core host a loop and its client that share a core take turns instead of running
    side by side; this tells such a round from a slow machine.  Not for Ganesha, whose work
    is spread over threads."""

    def __init__(self, server_pid: int, client_pid: int) -> None:
        super().__init__(daemon=True)
        self.client_pid = client_pid
        self.server_pids = tree_pids(server_pid)
        self.samples: list[tuple[int, dict[int, tuple[int, int]]]] = []  # (client cpu, {pid: (cpu, ticks)})
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            client = _stat_fields(self.client_pid)
            if client is None:
                continue
            servers = {}
            for pid in self.server_pids:
                fields = _stat_fields(pid)
                if fields is not None:  # processor is field 39, utime/stime 14/15 (1-based)
                    servers[pid] = (int(fields[36]), int(fields[11]) + int(fields[12]))
            self.samples.append((int(client[36]), servers))

    def same_cpu_share(self) -> float | None:
        self.halt.set()
        self.join()
        if len(self.samples) < 2:
            return None
        first, last = self.samples[0][1], self.samples[-1][1]
        busiest = max(last, key=lambda pid: last[pid][1] - first.get(pid, (0, 0))[1])
        together = [cpu == servers[busiest][0] for cpu, servers in self.samples if busiest in servers]
        return round(sum(together) / len(together), 3) if together else None


def tree_pids(root: int) -> list[int]:
    """``root`` and every live descendant."""
    found, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            found.append(pid)
            todo += _children(pid)
    return found


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of ``root`` and every live descendant, plus the children they reaped."""
    total = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields is not None:  # utime 14, stime 15, cutime 16, cstime 17 (1-based): here index - 3
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


# ----- servers ------------------------------------------------------------------------------
class Ganesha:
    def __init__(self, name: str, export_dir: Path, workdir: Path, file_path: str) -> None:
        self.name = name
        self.workdir = workdir
        self.port, self.mount_port = 12049, 12050
        result = subprocess.run([str(TOOLS / "ganesha-up.sh"), str(export_dir), str(self.port),
                                 str(self.mount_port), str(workdir)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"ganesha-up failed: {result.stdout}{result.stderr}")
        self.export_path = str(export_dir.resolve())
        self.file_path = file_path
        self.local_file = export_dir / file_path
        self.pid = int((workdir / "ganesha.bgpid").read_text())

    def url(self) -> str:
        return (f"nfs://127.0.0.1{self.export_path}/{self.file_path}?version=3"
                f"&nfsport={self.port}&mountport={self.mount_port}")

    def stop(self) -> None:
        subprocess.run([str(TOOLS / "ganesha-down.sh"), str(self.workdir)], capture_output=True, timeout=60)


class AcmenfsNfsd:
    def __init__(self, name: str, python: list[str], export_dir: Path, workdir: Path, args: list[str]) -> None:
        """``python``: the command that runs ``-m acmenfs ...`` (an interpreter, maybe with arguments)."""
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*python, "-m", "acmenfs", "nfsd", "--export", f"/bench={export_dir}", "--port", "0",
             "--mount-port", "0", "--state-dir", str(workdir / "state"), "--squash", "none",
             "--client", "127.0.0.1", "--log-level", "INFO", *args],
            stdout=subprocess.DEVNULL, stderr=self.log, cwd="/")
        self.pid = self.process.pid
        deadline = time.monotonic() + 60
        while not (match := re.search(rb"nfsport=(\d+)&mountport=(\d+)", self.log_path.read_bytes())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: acmenfs nfsd did not start: {self.log_path.read_text()}")
            time.sleep(0.05)
        self.port, self.mount_port = int(match.group(1)), int(match.group(2))
        self.file_path = FILE_NAME
        self.local_file = export_dir / FILE_NAME

    def url(self) -> str:
        return f"nfs://127.0.0.1/bench/{self.file_path}?version=3&nfsport={self.port}&mountport={self.mount_port}"

    def stop(self) -> None:
        stop_process(self.process, 60)
        self.log.close()


class AcmenfsServe(AcmenfsNfsd):
    """``acmenfs serve --data-dir``: the share and its volume are made through the CLI (REST)."""

    def __init__(self, name: str, python: list[str], data_dir: Path, workdir: Path, args: list[str]) -> None:
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.log = open(self.log_path, "wb")
        api_port = free_port()
        self.process = subprocess.Popen(
            [*python, "-m", "acmenfs", "serve", "--data-dir", str(data_dir), "--api-port", str(api_port),
             "--nfs-port", "0", "--mount-port", "0", "--log-level", "info", *args],
            stdout=subprocess.DEVNULL, stderr=self.log, cwd="/")
        self.pid = self.process.pid
        deadline = time.monotonic() + 60
        pattern = rb"NFS \S+ port (\d+), MOUNT port (\d+)"
        while not (match := re.search(pattern, self.log_path.read_bytes())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: acmenfs serve did not start: {self.log_path.read_text()}")
            time.sleep(0.05)
        self.port, self.mount_port = int(match.group(1)), int(match.group(2))
        self.cli = [*python, "-m", "acmenfs"]
        self.connection = ["--url", f"http://127.0.0.1:{api_port}", "--data-dir", str(data_dir)]
        self.data_dir = data_dir
        self.export = None
        self.local_file: Path | None = None  # (both set by create_share)
        self.file_path = FILE_NAME

    def create_share(self) -> Path:
        """Create the share and its volume; sets ``export`` (its NFS path) and ``local_file``; -> its directory."""
        subprocess.run([*self.cli, "share", "create", "vmbench", "--size", str(FILE_SIZE), "--volume", FILE_NAME,
                        "--preallocate", "--mode", "0666", "--access", "127.0.0.1:rw:none", *self.connection],
                       check=True, capture_output=True, timeout=120)
        shown = json.loads(subprocess.run([*self.cli, "share", "show", "vmbench", "--json", *self.connection], check=True,
                                          capture_output=True, timeout=60).stdout)
        self.export = f"/shares/{shown['id']}"
        directory = self.find_directory(shown["id"])
        self.local_file = directory / FILE_NAME
        return directory

    def find_directory(self, share_id: str) -> Path:
        for path in self.data_dir.rglob(FILE_NAME):
            if share_id in str(path):
                return path.parent
        raise RuntimeError(f"volume file of share {share_id} not found under {self.data_dir}")

    def url(self) -> str:
        return (f"nfs://127.0.0.1{self.export}/{self.file_path}?version=3"
                f"&nfsport={self.port}&mountport={self.mount_port}")


class OverVersion:
    """A running server reached over NFS ``version`` (3 or 4.0); the first view of a server stops it."""

    def __init__(self, server, version: int, owner: bool, suffix: bool) -> None:
        self.server, self.version, self.owner = server, version, owner
        self.name = f"{server.name}-v{version}" if suffix else server.name
        self.pid = server.pid

    @property
    def local_file(self) -> Path:
        return self.server.local_file

    def url(self) -> str:
        url = self.server.url()
        if self.version == 3:
            return url
        url = re.sub(r"&mountport=\d+", "", url.replace("?version=3", "?version=4"))
        if isinstance(self.server, Ganesha):   # its v4 pseudo path (ganesha-up.sh)
            url = url.replace(f"127.0.0.1{self.server.export_path}/", "127.0.0.1/export/")
        return url

    def stop(self) -> None:
        if self.owner:
            self.server.stop()


def over_versions(servers: list, versions: list[int]) -> list:
    return [OverVersion(server, version, index == 0, len(versions) > 1)
            for server in servers for index, version in enumerate(versions)]


# ----- running ------------------------------------------------------------------------------
def fill_and_cache(path: Path) -> None:
    """Write 1 GiB of non-zero data into the file (allocated, no holes) and read it into the page cache."""
    block = os.urandom(1 << 20)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        for offset in range(0, FILE_SIZE, len(block)):
            os.pwrite(fd, block, offset)
        os.fsync(fd)
        for offset in range(0, FILE_SIZE, 1 << 20):
            os.pread(fd, 1 << 20, offset)
    finally:
        os.close(fd)
    os.chmod(path, 0o666)


def connection_file(index: int) -> str:
    """The file connection ``index`` uses with --file-per-connection (0: the usual one)."""
    return FILE_NAME if index == 0 else f"vm{index}.img"


def run_nfsio(binary: Path, server, workload: str, seconds: float, connections: int,
              file_per_connection: bool = False) -> dict:
    mode, size, depth = WORKLOADS[workload]
    subprocess.run(["sync"], check=True)
    folios = folio_profile(server.local_file)
    cpu_before = tree_cpu_seconds(server.pid)
    started = time.time()
    urls = [server.url().replace(f"/{FILE_NAME}?", f"/{connection_file(index)}?") if file_per_connection
            else server.url() for index in range(connections)]
    processes = [subprocess.Popen([str(binary), url, mode, str(size), str(depth), str(seconds), str(FILE_SIZE)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for url in urls]
    placement = Placement(server.pid, processes[0].pid) if connections == 1 and acmenfs_behind(server) else None
    if placement is not None:
        placement.start()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=seconds + 120)
        if process.returncode != 0 or not out.strip():
            raise RuntimeError(f"{server.name} {workload}: nfsio failed ({process.returncode}): {err.strip()} {out}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    cpu = tree_cpu_seconds(server.pid) - cpu_before
    ended = time.time()
    ops = sum(r["ops"] for r in results)
    return {
        "iops": sum(r["iops"] for r in results),
        "MBps": sum(r["MBps"] for r in results),
        "p50_us": statistics.median(r["p50_us"] for r in results),
        "p99_us": max(r["p99_us"] for r in results),
        "cpu_us_per_call": cpu * 1e6 / ops if ops else float("nan"),
        "ops": ops,
        "commit_s": max(r["commit_s"] for r in results),
        "started": round(started, 3), "ended": round(ended, 3),  # wall clock, to place server log lines
        "same_cpu_as_client": placement.same_cpu_share() if placement is not None else None,
        "page_cache": folios,  # before the run: how the file sat in the page cache (bench/page_cache.py)
    }


# What an acmenfs server logs at INFO that changes how it serves calls, counted per server.
LOG_EVENTS = {"busy polling paused": "busy polling paused", "busy polling resumed": "busy polling resumed",
              "go to the thread pool for": "inline writes/changes paused", "restarting it": "worker restarts"}
LOG_LINES_KEPT = 400


def acmenfs_behind(view) -> "AcmenfsNfsd | None":
    """The acmenfs server a server or ``OverVersion`` view runs on; None for Ganesha."""
    server = getattr(view, "server", view)
    return server if isinstance(server, AcmenfsNfsd) else None


def collect_server_logs(servers: list) -> dict:
    """The last LOG_LINES_KEPT lines each acmenfs server logged (INFO: busy-poll switches, inline
    pauses, worker restarts, with their times to set against each run's ``started``/``ended``);
    prints how many of each event every server logged."""
    logs: dict[str, list[str]] = {}
    for view in servers:
        server = acmenfs_behind(view)
        if server is None or server.name in logs:
            continue
        try:
            lines = server.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        logs[server.name] = lines[-LOG_LINES_KEPT:]
        counts = {label: sum(needle in line for line in lines) for needle, label in LOG_EVENTS.items()}
        print(f"{server.name} logged: " + ", ".join(f"{n} {label}" for label, n in counts.items()), flush=True)
    return logs


def summarise(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), default=None,
                        help="run only this workload (repeatable)")
    parser.add_argument("--server-python", default=sys.executable,
                        help="interpreter that runs acmenfs (default: this one)")
    parser.add_argument("--target", choices=("nfsd", "serve"), default="nfsd")
    parser.add_argument("--connections", type=int, default=1, help="nfsio processes in parallel, one connection each")
    parser.add_argument("--file-per-connection", action="store_true",
                        help="with --connections K (target nfsd): each connection its own 1 GiB file, as K VM "
                             "disks; without it all K share one file (and its inode lock)")
    parser.add_argument("--acmenfs-args", default="", help="extra arguments for every acmenfs server")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="an acmenfs configuration to run as well (repeatable); without any, one 'acmenfs'")
    parser.add_argument("--variant-python", action="append", default=[], metavar="NAME=COMMAND",
                        help="the interpreter of variant NAME (default: --server-python), maybe with arguments "
                        "(split as a shell would) that go before '-m acmenfs ...'; e.g. a wrapper that sets "
                        "PYTHONPATH to another checkout, to compare code in one run, or "
                        "'PYTHON bench/qd1_floor.py canned' (a server with part of its work taken away)")
    parser.add_argument("--no-ganesha", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="on the disk to test (default: a temp dir)")
    parser.add_argument("--nfs-version", default="3", choices=("3", "4", "3,4"),
                        help="NFS version the client speaks: 3, 4 (libnfs: v4.0) or both")
    args = parser.parse_args()
    if args.file_per_connection and args.target != "nfsd":
        parser.error("--file-per-connection needs --target nfsd")
    args.server_python = os.path.abspath(args.server_python)  # not resolved: a venv's python is a symlink
    if os.geteuid() != 0:
        print("needs root (Ganesha, kernel file handles)", file=sys.stderr)
        return 2
    variants: list[tuple[str, list[str]]] = []
    for text in args.variant:
        name, sep, rest = text.partition("=")
        if not sep or not name:
            parser.error(f"--variant wants NAME=ARGS, got {text!r}")
        variants.append((name, shlex.split(rest)))
    if not variants:
        variants = [("acmenfs", [])]
    pythons = dict(text.partition("=")[::2] for text in args.variant_python)
    unknown = set(pythons) - {name for name, _ in variants}
    if unknown or not all(pythons.values()):
        parser.error(f"--variant-python wants NAME=COMMAND for a --variant NAME, got {args.variant_python}")
    commands = {name: shlex.split(text) for name, text in pythons.items()}
    common = shlex.split(args.acmenfs_args)
    workloads = args.only or list(WORKLOADS)

    workdir = Path(tempfile.mkdtemp(prefix="vmio-", dir=args.workdir))
    servers = []
    try:
        binary = nfsio_binary(workdir)
        if args.target == "nfsd":
            export_dir = workdir / "export"
            export_dir.mkdir()
            for index in range(args.connections if args.file_per_connection else 1):
                fill_and_cache(export_dir / connection_file(index))
            for name, extra in variants:
                servers.append(AcmenfsNfsd(name, commands.get(name, [args.server_python]), export_dir, workdir / name, common + extra))
        else:
            export_dir = None
            for index, (name, extra) in enumerate(variants):
                server = AcmenfsServe(name, commands.get(name, [args.server_python]), workdir / f"data-{name}", workdir / name,
                                      common + extra)
                servers.append(server)
                directory = server.create_share()
                fill_and_cache(server.local_file)
                if index == 0:
                    export_dir = directory
        versions = [int(v) for v in args.nfs_version.split(",")]
        if not args.no_ganesha:
            if 4 in versions:
                os.environ["PROTOCOLS"] = "3, 4"   # read by ganesha-up.sh
            servers.append(Ganesha("ganesha", export_dir, Path("/tmp/ganesha-dataplane"), FILE_NAME))
        servers = over_versions(servers, versions)
        names = [s.name for s in servers]
        rounds = whole_rotations(args.rounds, len(servers))
        python_version = subprocess.run([args.server_python, "-c", "import sys; print(sys.version.split()[0], sys.executable)"],
                                        capture_output=True, text=True).stdout.strip()
        print(f"servers: {', '.join(names)}; acmenfs on {python_version}; target {args.target}; "
              f"{rounds} rounds x {args.seconds:g} s; {args.connections} connection(s)", flush=True)
        results: dict[str, dict[str, list[dict]]] = {w: {n: [] for n in names} for w in workloads}
        for round_index in range(rounds):
            for workload in workloads:
                for server in rotated(servers, round_index):
                    result = run_nfsio(binary, server, workload, args.seconds, args.connections,
                                       args.file_per_connection)
                    result["round"] = round_index
                    results[workload][server.name].append(result)
                    print(f"  round {round_index + 1}/{rounds} {workload:20s} {server.name:10s} "
                          f"{result['iops']:9.0f} IOPS {result['MBps']:8.1f} MB/s p50 {result['p50_us']:6.0f} "
                          f"p99 {result['p99_us']:6.0f} us  cpu {result['cpu_us_per_call']:6.1f} us/call"
                          + (f"  on client's CPU {result['same_cpu_as_client']:.0%}"
                             if result["same_cpu_as_client"] is not None else "")
                          + (f"  folios {result['page_cache']['folio_kib']:.0f} KiB"
                             if result["page_cache"] else ""), flush=True)
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"stopping {server.name}: {exc}", file=sys.stderr)
        server_logs = collect_server_logs(servers)
        shutil.rmtree(workdir, ignore_errors=True)

    baseline = f"ganesha-v{versions[-1]}" if len(versions) > 1 else "ganesha"
    table = report(results, names, baseline if not args.no_ganesha else None)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("vmio-%Y%m%dT%H%M%SZ.json", time.gmtime())
    out.write_text(json.dumps({
        "argv": sys.argv[1:], "server_python": python_version, "variant_pythons": pythons, "target": args.target,
        "connections": args.connections, "file_per_connection": args.file_per_connection, "seconds": args.seconds, "rounds": rounds,
        "servers": names, "nfs_version": args.nfs_version, "runs": results, "summary": table,
        "server_logs": server_logs,
    }, indent=1))
    print(f"results: {out}")
    return 0


def report(results: dict, names: list[str], baseline: str | None) -> dict:
    summary: dict = {}
    print()
    header = f"{'workload':20s} {'server':10s} {'IOPS median [min-max]':>26s} {'MB/s':>8s} {'p50':>6s} {'p99':>6s} " \
             f"{'cpu us/call':>11s}  ratio to ganesha [min-max]  p99 ratio"
    print(header)
    for workload, per_server in results.items():
        summary[workload] = {}
        for name in names:
            runs = per_server[name]
            iops = summarise([r["iops"] for r in runs])
            entry = {
                "iops": iops, "MBps": summarise([r["MBps"] for r in runs]),
                "p50_us": summarise([r["p50_us"] for r in runs]), "p99_us": summarise([r["p99_us"] for r in runs]),
                "cpu_us_per_call": summarise([r["cpu_us_per_call"] for r in runs]),
            }
            ratio_text = ""
            if baseline and name != baseline:
                theirs = {r["round"]: r for r in per_server[baseline]}
                ratios = [r["iops"] / theirs[r["round"]]["iops"] for r in runs]
                p99s = [r["p99_us"] / max(1, theirs[r["round"]]["p99_us"]) for r in runs]
                entry["ratio"] = summarise(ratios)
                entry["p99_ratio"] = summarise(p99s)
                ratio_text = (f"  {entry['ratio'][0]:5.2f} [{entry['ratio'][1]:.2f}-{entry['ratio'][2]:.2f}]"
                              f"            {entry['p99_ratio'][0]:5.2f}")
            summary[workload][name] = entry
            print(f"{workload:20s} {name:10s} {iops[0]:9.0f} [{iops[1]:7.0f}-{iops[2]:7.0f}] "
                  f"{entry['MBps'][0]:8.1f} {entry['p50_us'][0]:6.0f} {entry['p99_us'][0]:6.0f} "
                  f"{entry['cpu_us_per_call'][0]:11.1f}{ratio_text}")
    return summary


if __name__ == "__main__":
    sys.exit(main())
