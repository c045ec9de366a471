"""Entry point of the ``acmenfs`` command: builds the argument parser and runs a subcommand.

Each subcommand lives in its own module under ``acmenfs.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning an exit code). This module
only assembles them; it does no work of its own beyond ``acmenfs version``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from acmenfs import __version__

# Subcommand modules, in the order they appear in --help.
SUBCOMMAND_MODULES = (
    "acmenfs.cli.serve",
    "acmenfs.cli.nfsd",
    "acmenfs.cli.manage",
)


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"acmenfs {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acmenfs",
        description="acmenfs: an NFS storage appliance (NFSv3 shares with snapshots "
        "and clones, a REST API) and its OpenStack Cinder driver.",
    )
    parser.add_argument("--version", action="version", version=f"acmenfs {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = subparsers.add_parser("version", help="print the acmenfs version")
    version.set_defaults(func=_cmd_version)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet; any other missing import is a real error
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
