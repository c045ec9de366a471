"""Multi-process workers (``--workers N``): scaling, connection hand-off, control-channel costs.

Run it with the interpreter the server should use (Debian's PGO build):

    .venv-deb/bin/python bench/bench_workers.py                 # everything
    .venv-deb/bin/python bench/bench_workers.py --only scaling  # 1 vs 2 workers, 4 nfsio x QD32
    .venv-deb/bin/python bench/bench_workers.py --only handoff  # per-connection cost: hand-off vs SO_REUSEPORT
    .venv-deb/bin/python bench/bench_workers.py --only control  # stats() and export push round trips

* scaling: ``acmenfs nfsd --workers 1`` and ``--workers 2`` in alternating rounds; in each,
  4 ``nfsio`` processes (shared/tools/nfsio) at QD32 on one 1 GiB file, 4 KiB randread then
  randwrite; the sum of their IOPS; medians over rounds and the 2/1 ratio.  Also prints how the
  4 connections fell on the workers (client port hash), read from ``ss``.
* handoff: sequential connect + NULL call + close (reset) cycles against one process
  (``--workers 1``), 2 workers with the supervisor's hand-off, and 2 workers on SO_REUSEPORT
  listeners of their own (``Supervisor(reuse_port=True)``, measurement only); median and p99 of
  a cycle, and the supervisor's CPU time per connection.
* control: ``Supervisor.stats()`` and ``push_exports()`` round trips with 2 and 4 workers, vs
  ``NfsServer.stats()`` in process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from procstop import stop_process  # bench/procstop.py (a bench script runs with bench/ on sys.path)
from rounds import rotated  # bench/rounds.py

REPO = Path(__file__).resolve().parent.parent
NFSIO_SOURCE = Path(os.environ.get("ACMENFS_SHARED", REPO.parent.parent / "shared")) / "tools" / "nfsio" / "nfsio.c"
FILE_BYTES = 1 << 30


def build_nfsio(workdir: Path) -> str:
    binary = workdir / "nfsio"
    source = NFSIO_SOURCE if NFSIO_SOURCE.exists() else Path("/work/shared/tools/nfsio/nfsio.c")
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source), "-lnfs"], check=True)
    return str(binary)


class Nfsd:
    def __init__(self, python: str, export: Path, state: Path, log: Path, workers: int,
                 extra: tuple[str, ...] = (), argv: list[str] | None = None) -> None:
        self.log = open(log, "wb")
        self.process = subprocess.Popen(
            argv or [python, "-m", "acmenfs", "nfsd", "--export", f"/e={export}", "--port", "0", "--mount-port", "0",
                     "--state-dir", str(state), "--workers", str(workers), "--squash", "none", "--log-level", "WARNING",
                     *extra],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            match = re.search(rb"ready: nfs://\S+nfsport=(\d+)&mountport=(\d+)", log.read_bytes())
            if match:
                self.port, self.mount_port = int(match.group(1)), int(match.group(2))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.process, 60)
        self.log.close()


# ----- scaling ---------------------------------------------------------------------------------
def connections_per_worker(port: int, workers: int) -> list[int]:
    from acmenfs.workers.routing import home_worker
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    counts = [0] * workers
    for line in out.splitlines():
        local = line.split()[-2]
        address, _, client_port = local.rpartition(":")
        counts[home_worker(address.strip("[]"), int(client_port), workers)] += 1
    return counts


def run_nfsio(nfsio: str, url: str, mode: str, seconds: float, clients: int, workers: int, port: int):
    processes = [subprocess.Popen([nfsio, url, mode, "4096", "32", str(seconds), str(FILE_BYTES)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(clients)]
    time.sleep(min(1.0, seconds / 2))
    spread = connections_per_worker(port, workers)
    results = []
    for process in processes:
        out, err = process.communicate(seconds + 120)
        if process.returncode != 0:
            raise RuntimeError(f"nfsio failed: {err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return sum(result["iops"] for result in results), spread


def scaling(args, workdir: Path, nfsio: str) -> None:
    export = workdir / "export"
    export.mkdir(exist_ok=True)
    image = export / "vm.img"
    if not image.exists() or image.stat().st_size != FILE_BYTES:
        with open(image, "wb") as handle:
            block = b"\xa5" * (8 << 20)
            for _ in range(FILE_BYTES // len(block)):
                handle.write(block)
    figures: dict[tuple[int, str], list[float]] = {}
    spreads: dict[int, list] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for workers in rotated((1, 2), round_):
            server = Nfsd(args.python, export, workdir / "state", workdir / f"nfsd-{workers}.log", workers)
            try:
                url = f"nfs://127.0.0.1/e/vm.img?version=3&nfsport={server.port}&mountport={server.mount_port}"
                for mode in ("randread", "randwrite"):
                    iops, spread = run_nfsio(nfsio, url, mode, args.seconds, 4, workers, server.port)
                    figures.setdefault((workers, mode), []).append(iops)
                    spreads[workers].append(spread)
                    print(f"round {round_ + 1} workers={workers} {mode}: {iops:,.0f} IOPS "
                          f"(connections per worker {spread})", flush=True)
            finally:
                server.stop()
    print(f"\nscaling, 4 nfsio x QD32, 4 KiB, 1 GiB file, server {args.python} "
          f"({sys.version.split()[0] if args.python == sys.executable else 'see --python'}):")
    for mode in ("randread", "randwrite"):
        one, two = figures[(1, mode)], figures[(2, mode)]
        print(f"  {mode:9s} 1 worker {statistics.median(one):>9,.0f} IOPS (min {min(one):,.0f} max {max(one):,.0f})"
              f" | 2 workers {statistics.median(two):>9,.0f} IOPS (min {min(two):,.0f} max {max(two):,.0f})"
              f" | 2/1 = {statistics.median(two) / statistics.median(one):.2f}x")


# ----- hand-off vs SO_REUSEPORT ----------------------------------------------------------------
def null_call(xid: int) -> bytes:
    body = struct.pack(">IIIIIIIIII", xid, 0, 2, 100003, 3, 0, 0, 0, 0, 0)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def connection_cycles(port: int, count: int) -> list[float]:
    linger = struct.pack("ii", 1, 0)
    times = []
    for index in range(count):
        started = time.perf_counter()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(("127.0.0.1", port))
        sock.sendall(null_call(index))
        reply = b""
        while len(reply) < 28:
            chunk = sock.recv(64)
            if not chunk:
                raise RuntimeError("connection closed before the reply")
            reply += chunk
        sock.close()
        times.append(time.perf_counter() - started)
    return times


def serve_reuseport(argv: list[str]) -> None:
    """Child mode: a Supervisor whose workers accept on SO_REUSEPORT listeners of their own."""
    export, state, workers = argv
    from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
    from acmenfs.workers.supervisor import Supervisor

    async def main() -> None:
        table = ExportTable([Export("/e", export, rules=(ClientRule("*", squash="none"),))])
        supervisor = Supervisor(table, state, workers=int(workers), busy_poll=1e-4, log_level="WARNING",
                                reuse_port=True)
        await supervisor.start("127.0.0.1", 0, 0)
        print(f"ready: nfs://127.0.0.1/e?version=3&nfsport={supervisor.port}&mountport={supervisor.mount_port}",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await supervisor.stop()
    asyncio.run(main())


def handoff(args, workdir: Path) -> None:
    export = workdir / "export"
    export.mkdir(exist_ok=True)
    variants = {
        "1 process (direct accept)": dict(workers=1),
        "2 workers, hand-off": dict(workers=2),
        "2 workers, SO_REUSEPORT": dict(workers=2, argv=[args.python, __file__, "_serve_reuseport", str(export),
                                                          str(workdir / "state"), "2"]),
    }
    results: dict[str, list] = {name: [] for name in variants}
    cpu: dict[str, list] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in names:
            variant = variants[name]
            server = Nfsd(args.python, export, workdir / "state", workdir / "handoff.log", variant["workers"],
                          argv=variant.get("argv"))
            try:
                connection_cycles(server.port, 50)  # warm up
                before = server.cpu_seconds()
                times = connection_cycles(server.port, args.connections)
                cpu[name].append((server.cpu_seconds() - before) / args.connections)
                results[name].extend(times)
            finally:
                server.stop()
    print(f"\nconnection cycles (connect + NULL + close), {args.connections} x {args.rounds} rounds, "
          f"server {args.python}:")
    for name in variants:
        times = sorted(results[name])
        print(f"  {name:28s} median {statistics.median(times) * 1e6:7.0f} us  p99 "
              f"{times[int(len(times) * 0.99)] * 1e6:7.0f} us  listener-process CPU "
              f"{statistics.median(cpu[name]) * 1e6:6.0f} us/connection")
    reuseport_reshuffle()


def reuseport_reshuffle(workers: int = 4, clients: int = 400) -> None:
    """Kernel only: which of ``workers`` SO_REUSEPORT listeners takes each of ``clients`` fixed client
    ports, before, while one listener is closed (a worker restarting) and after it is open again."""
    def listener(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        sock.setblocking(False)
        return sock

    listeners = [listener(0)]
    port = listeners[0].getsockname()[1]
    listeners += [listener(port) for _ in range(workers - 1)]
    base = 42000 + os.getpid() % 2000 * 4
    linger = struct.pack("ii", 1, 0)

    client_ports = []
    for candidate in range(base, base + 4 * clients):
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", candidate))
            client_ports.append(candidate)
        except OSError:
            pass
        finally:
            probe.close()
        if len(client_ports) == clients:
            break

    def mapping() -> dict[int, int]:
        taken = {}
        for client_port in client_ports:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.bind(("127.0.0.1", client_port))
            sock.connect(("127.0.0.1", port))
            for index, server in enumerate(listeners):
                if server is None:
                    continue
                try:
                    accepted, _ = server.accept()
                except BlockingIOError:
                    continue
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                accepted.close()
                taken[client_port] = index
                break
            sock.close()
        return taken

    before = mapping()
    listeners[1].close()
    listeners[1] = None
    during = mapping()
    listeners[1] = listener(port)
    after = mapping()
    for server in listeners:
        server.close()
    moved_during = sum(during[p] != before[p] for p in before if before[p] != 1)
    moved_after = sum(after[p] != before[p] for p in before)
    others = sum(1 for p in before if before[p] != 1)
    print(f"\nSO_REUSEPORT, {workers} listeners, {clients} fixed client ports, listener 1 closed and reopened:")
    print(f"  while it is closed: {moved_during} of the {others} clients of the other listeners moved "
          f"({moved_during / others:.0%}); with the hand-off: 0")
    print(f"  after it is reopened: {moved_after} of {clients} clients land elsewhere than before "
          f"({moved_after / clients:.0%}); with the hand-off: 0")


# ----- control channel -------------------------------------------------------------------------
def control(args, workdir: Path) -> None:
    from acmenfs.nfs3.exports import ClientRule, Export, ExportTable
    from acmenfs.nfs3.server import NfsServer
    from acmenfs.workers.supervisor import Supervisor

    export = workdir / "export"
    export.mkdir(exist_ok=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(120)

    def timed(function, count: int) -> float:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    table = ExportTable([Export(f"/e{i}", str(export), rules=(ClientRule("*"),)) for i in range(100)])
    server = NfsServer(table, workdir / "state-inproc")
    print(f"\ncontrol channel (median of 200), {sys.executable}:")
    print(f"  NfsServer.stats() in process: {timed(server.stats, 200) * 1e6:8.0f} us")
    server._shutdown_blocking()
    for workers in (2, 4):
        table = ExportTable([Export(f"/e{i}", str(export), rules=(ClientRule("*"),)) for i in range(100)])
        supervisor = Supervisor(table, workdir / "state", workers=workers, busy_poll=1e-4, log_level="WARNING")
        run(supervisor.start("127.0.0.1", 0, 0))
        try:
            stats = timed(supervisor.stats, 200)
            push = timed(supervisor.push_exports, 50)
        finally:
            run(supervisor.stop())
        print(f"  {workers} workers: Supervisor.stats() {stats * 1e6:8.0f} us; push of a 100-export table "
              f"to all {push * 1e6:8.0f} us")
    loop.call_soon_threadsafe(loop.stop)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve_reuseport":
        serve_reuseport(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("scaling", "handoff", "control"))
    parser.add_argument("--python", default=sys.executable, help="interpreter of the servers (default: this one)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="nfsio run time per workload")
    parser.add_argument("--connections", type=int, default=1000, help="connection cycles per round (handoff)")
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-workers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.only in (None, "control"):
            control(args, workdir)
        if args.only in (None, "handoff"):
            handoff(args, workdir)
        if args.only in (None, "scaling"):
            scaling(args, workdir, build_nfsio(workdir))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
