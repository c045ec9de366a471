"""``acmenfs nfsd``: run the user-space NFSv3 + MOUNT v3 server in the foreground.

Owns parsing ``--export /NAME=DIR`` options into an ``ExportTable``, choosing
the state directory, starting ``NfsServer`` on an event loop (uvloop when
installed), printing one "ready" line with the URL clients use, and stopping
cleanly on SIGTERM/SIGINT.  Logs go to stderr.  It contains no protocol logic.

State directory (``--state-dir``; default ``$ACMENFS_STATE_DIR``, else
``$XDG_STATE_HOME/acmenfs``, else ``~/.local/state/acmenfs``) holds the handle
MAC secret (and, when not root, the handle table): keep it to keep client
handles valid across restarts.

Not running as root: file handles come from a persistent path table (renames
made outside the server make handles stale) and every file operation runs as
the server's own user (AUTH_SYS identities are still used for permission checks
on reads/writes, but new files belong to the server's user).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from acmenfs.cli.options import add_busy_poll_option, add_nfs4_lease_option, add_workers_option
from acmenfs.nfs3.exports import ClientRule, Export, ExportTable

log = logging.getLogger("acmenfs.nfsd")


def default_state_dir() -> Path:
    if os.environ.get("ACMENFS_STATE_DIR"):
        return Path(os.environ["ACMENFS_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "acmenfs"


def parse_export(text: str, clients: list[str], squash: str, read_only: bool) -> Export:
    """``/NAME=DIR`` -> Export (every listed client gets the same rule)."""
    path, sep, directory = text.partition("=")
    if not sep or not path.startswith("/") or not directory:
        raise argparse.ArgumentTypeError(f"--export wants /NAME=DIR, got {text!r}")
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"--export {text!r}: {directory!r} is not a directory")
    access = "ro" if read_only else "rw"
    rules = tuple(ClientRule(client, access=access, squash=squash) for client in clients)
    return Export(path.rstrip("/") or "/", os.path.realpath(directory), rules=rules, read_only=read_only)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "nfsd",
        help="serve local directories over NFSv3 (user space, foreground)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--export", action="append", required=True, metavar="/NAME=DIR",
                        help="export DIR at MOUNT path /NAME (repeatable)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2049, help="NFS port (0 = any free port)")
    parser.add_argument("--mount-port", type=int, default=20048,
                        help="MOUNT port (0 = any free port, -1 = same port as NFS)")
    parser.add_argument("--udp", action="store_true", help="also serve UDP")
    parser.add_argument("--rpcbind", action="store_true",
                        help="register NFS and MOUNT with the local portmapper (rpcbind) on start, "
                             "unregister on stop (default: off; clients are told the ports)")
    parser.add_argument("--state-dir", type=Path, default=None, help="handle secret / state (see above)")
    parser.add_argument("--client", action="append", default=None, metavar="CIDR",
                        help="client allowed on every export (repeatable; default '*')")
    parser.add_argument("--squash", choices=("root", "all", "none"), default="root",
                        help="identity squashing (default root_squash)")
    parser.add_argument("--read-only", action="store_true", help="export read-only")
    add_nfs4_lease_option(parser)
    add_busy_poll_option(parser)
    add_workers_option(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clients = args.client or ["*"]
    try:
        exports = ExportTable(parse_export(text, clients, args.squash, args.read_only) for text in args.export)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"acmenfs nfsd: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or default_state_dir()
    from acmenfs.workers.policy import WorkersRefused, effective_workers
    try:
        args.workers = effective_workers(args.workers, state_dir)
    except WorkersRefused as exc:
        print(f"acmenfs nfsd: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    return runner(_serve(exports, state_dir, args))


async def _serve(exports: ExportTable, state_dir: Path, args: argparse.Namespace) -> int:
    if args.workers > 1:
        from acmenfs.workers.supervisor import Supervisor
        server = Supervisor(exports, state_dir, workers=args.workers, busy_poll=args.busy_poll_us / 1e6,
                            log_level=args.log_level, nfs4_lease_seconds=args.nfs4_lease_seconds)
    else:
        from acmenfs.nfs3.server import NfsServer
        server = NfsServer(exports, state_dir, busy_poll=args.busy_poll_us / 1e6)
        server.nfs4.state.configure(args.nfs4_lease_seconds)
    mount_port = None if args.mount_port == -1 else args.mount_port
    try:
        await server.start(args.bind, args.port, mount_port, udp=args.udp,
                           register_portmapper=args.rpcbind)
    except (OSError, RuntimeError) as exc:
        log.error("cannot listen on %s: %s", args.bind, exc)
        await server.stop()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    for export in exports.list():
        url = f"nfs://{host}{export.path}?version=3&nfsport={server.port}&mountport={server.mount_port}"
        log.info("export %s -> %s", export.path, export.directory)
        print(f"acmenfs nfsd ready: {url}", file=sys.stderr, flush=True)
    log.info("state directory %s; pid %d", state_dir, os.getpid())
    await stop.wait()
    log.info("stopping")
    if args.workers > 1:
        polled = {"window_seconds": args.busy_poll_us / 1e6, "windows": 0, "hits": 0, "misses": 0, "skipped": 0,
                  "seconds": 0.0, **server.stats()["busy_poll"]}  # summed over the workers, before they stop
        await server.stop()
        log.info("%d workers stopped, %d restarts", args.workers, server.restarts)
    else:
        await server.stop()
        polled = server.busy_poller.stats()
    log.info("busy polling (window %d us): %d windows, %d calls caught awake, %d misses, %d skipped, %.3f s awake",
             round(polled["window_seconds"] * 1e6), polled["windows"], polled["hits"], polled["misses"],
             polled["skipped"], polled["seconds"])
    log.info("stopped")
    return 0
