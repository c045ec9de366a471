"""``acmenfs serve``: run the appliance (REST API + NFS/MOUNT server) in the foreground.

Owns the command's options and their defaults (data dir ``./acmenfs-data`` or
``$ACMENFS_DATA_DIR``, loopback, API 8080, NFS 2049, MOUNT 20048; 0 picks a free
port) and turns them into a ``ServeConfig`` for ``acmenfs.appliance.runner``.
It must not start anything itself beyond calling the runner, and never prints a
traceback for an operator mistake (bad option, port in use, missing TLS file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from acmenfs.appliance.errors import ApplianceError
from acmenfs.cli.options import add_busy_poll_option, add_nfs4_lease_option, add_workers_option

DEFAULT_DATA_DIR = "./acmenfs-data"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0 = any free port): {port}")
    return port


def _metrics_auth(text: str) -> str:
    from acmenfs.appliance.api_http import parse_metrics_auth

    try:
        parse_metrics_auth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the appliance: REST API and NFS server in one process",
        description="Run the acmenfs appliance in the foreground: the REST API "
        "(/v1, /docs, /metrics) and the NFSv3 + MOUNT server for its shares, with "
        "metadata in SQLite under the data dir. The first start creates an admin "
        "token, prints it once and saves it to <data-dir>/admin.token. "
        "SIGTERM or Ctrl-C stops it cleanly.",
    )
    parser.add_argument("--data-dir", default=os.environ.get("ACMENFS_DATA_DIR", DEFAULT_DATA_DIR),
                        help="where shares, snapshots and the database live "
                        "(default: $ACMENFS_DATA_DIR or %(default)s)")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address for the API and NFS listeners (default: %(default)s)")
    parser.add_argument("--api-port", type=_port, default=8080,
                        help="REST API port (default: %(default)s; 0 = any free port)")
    parser.add_argument("--nfs-port", type=_port, default=2049,
                        help="NFS port (default: %(default)s; 0 = any free port)")
    parser.add_argument("--mount-port", type=_port, default=20048,
                        help="MOUNT port (default: %(default)s; 0 = any free port)")
    parser.add_argument("--nfs-host", default=None,
                        help="host name or address NFS clients are told to use in share "
                        "locations (default: the --bind address, or this host's name "
                        "when binding a wildcard address)")
    parser.add_argument("--backend", choices=("auto", "reflink", "btrfs"), default="auto",
                        help="storage backend (default: auto-detect from the data dir)")
    parser.add_argument("--tls-cert", help="PEM certificate: serve the API over HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="log verbosity (default: %(default)s)")
    parser.add_argument("--rpcbind", action="store_true",
                        help="register NFS and MOUNT with the local portmapper (rpcbind); default off")
    parser.add_argument("--metrics-auth", type=_metrics_auth, default="none", metavar="none|token|CLIENTS",
                        help="who may read /metrics: anyone (none, the default), holders of an API token "
                        "(token), or a comma-separated list of client IPs/CIDRs; set it when --bind is "
                        "not a loopback address")
    add_busy_poll_option(parser)
    add_workers_option(parser)
    add_nfs4_lease_option(parser)
    parser.add_argument("--no-nfs", action="store_true",
                        help="run the REST API without the NFS server (testing only)")
    parser.set_defaults(func=run)


def _check_tls_options(args: argparse.Namespace) -> str | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not os.path.isfile(path):
            return f"{option}: no such file: {path}"
    return None


def run(args: argparse.Namespace) -> int:
    from acmenfs.appliance.runner import ServeConfig, StartupError, run_appliance

    problem = _check_tls_options(args)
    if problem:
        print(f"acmenfs serve: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from acmenfs.appliance.api_http import open_metrics_warning, parse_metrics_auth

    warning = open_metrics_warning(args.bind, parse_metrics_auth(args.metrics_auth))
    if warning:
        logging.getLogger("acmenfs.serve").warning("%s", warning)
    config = ServeConfig(
        data_dir=Path(args.data_dir).resolve(), bind=args.bind, api_port=args.api_port,
        nfs_port=args.nfs_port, mount_port=args.mount_port,
        backend=None if args.backend == "auto" else args.backend,
        tls_cert=args.tls_cert, tls_key=args.tls_key, log_level=args.log_level,
        nfs_enabled=not args.no_nfs, advertise_host=args.nfs_host,
        register_portmapper=args.rpcbind, busy_poll=args.busy_poll_us / 1e6, metrics_auth=args.metrics_auth,
        workers=args.workers, nfs4_lease_seconds=args.nfs4_lease_seconds,
    )
    try:
        run_appliance(config)
    except ApplianceError as exc:
        print(f"acmenfs serve: {exc.detail}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"acmenfs serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"acmenfs serve: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
