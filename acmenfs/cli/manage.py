"""``acmenfs share|snapshot|pool|token ...``: manage an appliance over its REST API.

Owns the management commands: their options, the parsing of human input (sizes
such as ``10G``, access rules such as ``10.0.0.0/24:ro:all``, shares and snapshots
named by id or by name), and the rendering of answers (aligned tables with human
sizes, or ``--json``). Every command is one or two ``ApplianceClient`` calls; a
refused call prints the problem's detail and exits 1, never a traceback. It must
not touch the data dir beyond reading ``admin.token``, nor talk to the service
directly, with one exception: ``token reset``, the offline recovery of a locked
out appliance (root only, appliance stopped), calls
``acmenfs.appliance.tokens.reset_admin_token`` on the data dir.

Split by concern: this module registers the sub-commands and their options and
runs them (exit codes, error messages); manage_input.py parses input,
manage_output.py renders answers, manage_commands.py holds the commands.  The
names other code imports from here (``parse_size``, ``format_table``, ...) are
re-exported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from acmenfs.appliance.client import ApiError
from acmenfs.cli.manage_commands import (
    Context,
    cmd_pool_show,
    cmd_share_access_add,
    cmd_share_access_remove,
    cmd_share_create,
    cmd_share_delete,
    cmd_share_extend,
    cmd_share_list,
    cmd_share_revert,
    cmd_share_show,
    cmd_share_volume,
    cmd_snapshot_clone,
    cmd_snapshot_create,
    cmd_snapshot_delete,
    cmd_snapshot_list,
    cmd_snapshot_show,
    cmd_token_create,
    cmd_token_list,
    cmd_token_reset,
    cmd_token_revoke,
)
from acmenfs.cli.manage_input import (
    ACCESS_LEVELS,
    ADMIN_TOKEN_FILE,
    DEFAULT_URL,
    SQUASH_KINDS,
    UsageError,
    parse_access,
    parse_mode,
    parse_owner,
    parse_size,
)
from acmenfs.cli.manage_output import ElapsedIndicator, format_fields, format_size, format_table

__all__ = [  # re-exported for the code that imports them from here (console forms, tests)
    "ACCESS_LEVELS", "ADMIN_TOKEN_FILE", "DEFAULT_URL", "SQUASH_KINDS", "Context", "ElapsedIndicator",
    "UsageError", "format_fields", "format_size", "format_table", "parse_access", "parse_mode", "parse_owner",
    "parse_size", "register",
]


# --------------------------------------------------------------------------- parsers


def _connection_options() -> argparse.ArgumentParser:
    """Options accepted at every level (``acmenfs share --json list`` or ``share list --json``).

    Defaults are SUPPRESSed so a sub-level never overwrites a value given higher up;
    ``Context`` applies the real defaults.
    """
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("appliance connection and output")
    group.add_argument("--url", default=argparse.SUPPRESS,
                       help=f"appliance API URL (default: $ACMENFS_URL or {DEFAULT_URL})")
    group.add_argument("--token", default=argparse.SUPPRESS,
                       help="API token (default: $ACMENFS_TOKEN, else <data-dir>/admin.token)")
    group.add_argument("--data-dir", default=argparse.SUPPRESS,
                       help="appliance data dir whose admin.token to use (default: $ACMENFS_DATA_DIR)")
    group.add_argument("--cacert", default=argparse.SUPPRESS,
                       help="CA bundle to verify an HTTPS API (default: $ACMENFS_CACERT or system)")
    group.add_argument("--insecure", action="store_true", default=argparse.SUPPRESS,
                       help="do not verify the API's TLS certificate")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the API's JSON answer instead of a table")
    return options


def _leaf(subparsers, name: str, command: Callable, help_text: str, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=parents)
    parser.set_defaults(func=_runner(command))
    return parser


def _group(subparsers, name: str, help_text: str, parents) -> argparse._SubParsersAction:
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=parents)
    parser.set_defaults(func=lambda args: _usage(parser))
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_share_commands(subparsers, parents) -> None:
    share = _group(subparsers, "share", "manage shares (NFS exports with an optional volume file)", parents)
    p = _leaf(share, "create", cmd_share_create, "create a share", parents)
    p.add_argument("name", help="share name")
    p.add_argument("--size", type=parse_size, required=True, help="quota and volume size: 10G, 512M or bytes")
    p.add_argument("--volume", metavar="NAME", help="create a volume file of --size bytes in the share")
    p.add_argument("--preallocate", action="store_true", help="allocate the volume file (default: sparse)")
    p.add_argument("--mode", type=parse_mode, default="0660", help="volume file mode, 0660 or 0666")
    p.add_argument("--owner", type=parse_owner, metavar="UID:GID",
                   help="numeric owner of the new volume file (default 0:0), e.g. qemu's 64055:64055")
    p.add_argument("--access", type=parse_access, action="append", metavar="CLIENT[:rw|ro[:SQUASH]]",
                   help="allow a client (host IP, CIDR or *); repeatable; SQUASH is root, all or none")
    p = _leaf(share, "list", cmd_share_list, "list shares", parents)
    p.add_argument("--name", help="only the share with this name")
    p = _leaf(share, "show", cmd_share_show, "show a share", parents)
    p.add_argument("share", help="share id or name")
    p = _leaf(share, "delete", cmd_share_delete, "delete a share", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("--cascade", action="store_true", help="also delete its snapshots")
    p = _leaf(share, "extend", cmd_share_extend, "grow a share and its volume file", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("--size", type=parse_size, required=True, help="new size: 20G, 512M or bytes")
    p = _leaf(share, "volume", cmd_share_volume, "create, rename or grow the share's volume file", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("name", help="volume file name")
    p.add_argument("--size", type=parse_size, help="grow the volume file to this size")
    p.add_argument("--preallocate", action="store_true", help="allocate a new volume file (default: sparse)")
    p.add_argument("--mode", type=parse_mode, default="0660", help="volume file mode, 0660 or 0666")
    p.add_argument("--owner", type=parse_owner, metavar="UID:GID",
                   help="chown the volume file (a new one defaults to 0:0; an existing one keeps its owner)")
    p = _leaf(share, "revert", cmd_share_revert, "bring a share back to a snapshot", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("--snapshot", required=True, help="snapshot id or name (of this share)")
    access = _group(share, "access", "manage which clients may mount a share", parents)
    p = _leaf(access, "add", cmd_share_access_add, "add or replace a client's access rule", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("rule", type=parse_access, metavar="CLIENT[:rw|ro[:SQUASH]]",
                   help="host IP, CIDR or *, optionally :rw or :ro and :root, :all or :none")
    p = _leaf(access, "remove", cmd_share_access_remove, "remove a client's access rule", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("client", help="the rule's client, exactly as listed")


def _add_snapshot_commands(subparsers, parents) -> None:
    snapshot = _group(subparsers, "snapshot", "manage snapshots and clones", parents)
    p = _leaf(snapshot, "create", cmd_snapshot_create, "snapshot a share", parents)
    p.add_argument("share", help="share id or name")
    p.add_argument("name", help="snapshot name")
    p = _leaf(snapshot, "list", cmd_snapshot_list, "list a share's snapshots", parents)
    p.add_argument("share", help="share id or name")
    p = _leaf(snapshot, "show", cmd_snapshot_show, "show a snapshot", parents)
    p.add_argument("snapshot", help="snapshot id or SHARE@SNAPSHOT")
    p = _leaf(snapshot, "delete", cmd_snapshot_delete, "delete a snapshot", parents)
    p.add_argument("snapshot", help="snapshot id or SHARE@SNAPSHOT")
    p = _leaf(snapshot, "clone", cmd_snapshot_clone, "make a new share from a snapshot", parents)
    p.add_argument("snapshot", help="snapshot id or SHARE@SNAPSHOT")
    p.add_argument("name", help="name of the new share")
    p.add_argument("--size", type=parse_size, help="grow the clone (and its volume file) to this size")
    p.add_argument("--volume-name", help="rename the clone's volume file")
    p.add_argument("--owner", type=parse_owner, metavar="UID:GID",
                   help="chown the clone's volume file (default: keep the snapshot's owner)")
    p.add_argument("--access", type=parse_access, action="append", metavar="CLIENT[:rw|ro[:SQUASH]]",
                   help="access rules of the clone (repeatable)")


def _add_pool_and_token_commands(subparsers, parents) -> None:
    pool = _group(subparsers, "pool", "show the storage pool", parents)
    _leaf(pool, "show", cmd_pool_show, "show capacity, provisioning and counts", parents)
    token = _group(subparsers, "token", "manage API tokens", parents)
    p = _leaf(token, "create", cmd_token_create, "create a token (its secret is shown once)", parents)
    p.add_argument("name", help="token name, e.g. cinder")
    _leaf(token, "list", cmd_token_list, "list tokens", parents)
    p = _leaf(token, "revoke", cmd_token_revoke, "revoke a token", parents)
    p.add_argument("token_ref", metavar="TOKEN", help="token id or name")
    reset_help = ("offline recovery: write a new admin token into a stopped appliance's --data-dir "
                  "and print it (root only)")
    p = token.add_parser("reset", help=reset_help, description=reset_help, parents=parents)
    p.set_defaults(func=cmd_token_reset)


def register(subparsers) -> None:
    parents = [_connection_options()]
    _add_share_commands(subparsers, parents)
    _add_snapshot_commands(subparsers, parents)
    _add_pool_and_token_commands(subparsers, parents)


def _runner(command: Callable[[Context, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            command(Context(args), args)
        except UsageError as exc:
            print(f"acmenfs: {exc}", file=sys.stderr)
            return 2
        except ApiError as exc:
            print(f"acmenfs: error: {exc}", file=sys.stderr)
            if exc.status == 401:
                print("acmenfs: pass --token, set ACMENFS_TOKEN, or point --data-dir / "
                      "ACMENFS_DATA_DIR at the appliance's data dir", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("acmenfs: interrupted (the appliance may still finish the request)", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 1
        return 0

    return run

