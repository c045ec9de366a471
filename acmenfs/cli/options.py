"""Command-line options shared by ``acmenfs nfsd`` and ``acmenfs serve``.

Owns their parsing and help text only; what an option does lives in the server.
"""

from __future__ import annotations

import argparse

from acmenfs.oncrpc.busypoll import DEFAULT_WINDOW

MAX_BUSY_POLL_US = 10_000


def busy_poll_microseconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of microseconds: {text!r}") from None
    if not 0 <= value <= MAX_BUSY_POLL_US:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_BUSY_POLL_US} microseconds (0 = off): {value}")
    return value


def add_busy_poll_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--busy-poll-us", type=busy_poll_microseconds, default=round(DEFAULT_WINDOW * 1e6), metavar="US",
        help="after NFS work, keep polling for the next call this many microseconds instead of sleeping "
             "(saves a process wake-up per call for clients that wait for each reply; adaptive: backs off "
             "when nothing comes; 0 = off; default %(default)s)")


def lease_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text}")
    return value


def add_nfs4_lease_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nfs4-lease-seconds", type=lease_seconds, default=90, metavar="SECONDS",
        help="NFSv4 lease: a client that renews nothing for this long loses its opens and locks; "
             "also the grace period after a start (default %(default)s)")


def worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of workers: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {value}")
    return value


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=worker_count, default=None, metavar="N",
        help="NFS worker processes (default: the number of CPUs; 1 = one process, no supervisor). "
             "With N >= 2 this process accepts connections and hands each to a worker; "
             "needs kernel file handles (root)")
