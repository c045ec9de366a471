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
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from acmenfs.appliance.client import ApiError, ApplianceClient

DEFAULT_URL = "http://127.0.0.1:8080"
ADMIN_TOKEN_FILE = "admin.token"
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:I?B?)\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
ACCESS_LEVELS = ("rw", "ro")
SQUASH_KINDS = ("root", "all", "none")


class UsageError(Exception):
    """A command line the CLI can refuse before calling the appliance."""


# --------------------------------------------------------------------------- input parsing


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5GiB``, ``4096`` -> bytes (binary units)."""
    match = SIZE_PATTERN.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (use bytes or a number with K, M, G, T or P, e.g. 10G)")
    number, unit = match.groups()
    size = int(float(number) * SIZE_UNITS[unit.upper()]) if "." in number else int(number) * SIZE_UNITS[unit.upper()]
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be more than 0 bytes: {text!r}")
    return size


def parse_access(text: str) -> dict[str, str]:
    """``CLIENT[:rw|ro[:root|all|none]]`` -> an access rule (IPv6 clients keep their colons)."""
    parts = text.split(":")
    access, squash = "rw", "root"
    if len(parts) >= 3 and parts[-1] in SQUASH_KINDS and parts[-2] in ACCESS_LEVELS:
        access, squash = parts[-2], parts[-1]
        parts = parts[:-2]
    elif len(parts) >= 2 and parts[-1] in ACCESS_LEVELS:
        access = parts[-1]
        parts = parts[:-1]
    client = ":".join(parts)
    if not client:
        raise argparse.ArgumentTypeError(
            f"not an access rule: {text!r} (use CLIENT[:rw|ro[:root|all|none]], e.g. 10.0.0.0/24:ro)")
    return {"client": client, "access": access, "squash": squash}


OWNER_ID_LIMIT = (1 << 32) - 2  # the appliance's limit too (2^32-1 means "unchanged" to chown)


def parse_owner(text: str) -> tuple[int, int]:
    """'UID:GID' (decimal numbers, 0 .. 2^32-2) -> (uid, gid)."""
    match = re.fullmatch(r"(\d{1,10}):(\d{1,10})", text.strip())
    if not match or max(int(match[1]), int(match[2])) > OWNER_ID_LIMIT:
        raise argparse.ArgumentTypeError(
            f"not an owner: {text!r} (use UID:GID, numbers 0..{OWNER_ID_LIMIT}, e.g. 64055:64055)")
    return int(match[1]), int(match[2])


def parse_mode(text: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r} (e.g. 0660)")
    return text if len(text) == 4 else "0" + text


# --------------------------------------------------------------------------- output


def format_size(size: int | None) -> str:
    """Bytes -> ``10 GiB``, ``1.5 MiB``, ``512 B``."""
    if size is None:
        return "-"
    for unit, factor in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                         ("KiB", 1 << 10)):
        value = size / factor
        if round(abs(value), 1) >= 1:  # 1023.96 KiB reads better as 1.0 MiB than 1024.0 KiB
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell; numbers-as-text stay left-aligned for simplicity."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def format_fields(fields: Sequence[tuple[str, Any]]) -> str:
    """``label:  value`` lines; a list value continues on indented lines."""
    width = max(len(label) for label, _ in fields) + 1
    lines = []
    for label, value in fields:
        values = value if isinstance(value, list) else [value]
        values = values or ["-"]
        lines.append(f"{(label + ':').ljust(width)}  {values[0]}")
        lines += [f"{' ' * width}  {more}" for more in values[1:]]
    return "\n".join(lines)


def _rule_text(rule: dict) -> str:
    return f"{rule['client']} {rule['access']} squash={rule['squash']}"


def _volume_text(volume: dict | None) -> str:
    if not volume:
        return "-"
    kind = "sparse" if volume["sparse"] else "preallocated"
    owner = f", owner {volume['uid']}:{volume['gid']}" if "uid" in volume else ""
    return (f"{volume['name']} ({format_size(volume['size'])}, {kind}, mode {volume['mode']}{owner}, "
            f"{format_size(volume['allocated_bytes'])} allocated)")


def render_share(share: dict) -> str:
    return format_fields([
        ("name", share["name"]),
        ("id", share["id"]),
        ("state", share["state"]),
        ("size", f"{format_size(share['size'])} ({share['size']} bytes)"),
        ("used", format_size(share["used_bytes"])),
        ("volume", _volume_text(share.get("volume"))),
        ("export", share["nfs"]["location"]),
        ("nfs url", share["nfs"]["url"]),
        ("origin snapshot", share.get("origin_snapshot_id") or "-"),
        ("created", share["created_at"]),
        ("access", [_rule_text(rule) for rule in share["access"]]),
    ])


def render_shares(shares: list[dict]) -> str:
    rows = [(s["name"], s["id"], format_size(s["size"]), format_size(s["used_bytes"]), s["state"],
             (s.get("volume") or {}).get("name", "-"), s["nfs"]["location"]) for s in shares]
    return format_table(("NAME", "ID", "SIZE", "USED", "STATE", "VOLUME", "EXPORT"), rows)


def render_snapshot(snapshot: dict) -> str:
    return format_fields([
        ("name", snapshot["name"]),
        ("id", snapshot["id"]),
        ("share id", snapshot["share_id"]),
        ("size", f"{format_size(snapshot['size'])} ({snapshot['size']} bytes)"),
        ("path", snapshot["path"]),
        ("created", snapshot["created_at"]),
    ])


def render_snapshots(snapshots: list[dict]) -> str:
    rows = [(s["name"], s["id"], format_size(s["size"]), s["created_at"], s["path"]) for s in snapshots]
    return format_table(("NAME", "ID", "SIZE", "CREATED", "PATH"), rows)


def render_pool(pool: dict) -> str:
    nfs = pool.get("nfs") or {}
    return format_fields([
        ("backend", pool["backend"]),
        ("total", format_size(pool["total_bytes"])),
        ("used", format_size(pool["used_bytes"])),
        ("free", format_size(pool["free_bytes"])),
        ("provisioned", format_size(pool["provisioned_bytes"])),
        ("shares", pool["share_count"]),
        ("snapshots", pool["snapshot_count"]),
        ("nfs", f"{nfs.get('host')} port {nfs.get('port')}, mount port {nfs.get('mount_port')}"),
    ])


def render_tokens(tokens: list[dict]) -> str:
    return format_table(("NAME", "ID", "CREATED"), [(t["name"], t["id"], t["created_at"]) for t in tokens])


class ElapsedIndicator:
    """A spinner with elapsed seconds on stderr while a long call runs (TTY only)."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ElapsedIndicator":
        if self.stream.isatty():
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _spin(self) -> None:
        started = time.monotonic()
        for frame in itertools.cycle(self.FRAMES):
            if self._done.wait(0.1):
                return
            self.stream.write(f"\r{frame} {self.label} {time.monotonic() - started:5.1f}s")
            self.stream.flush()


# --------------------------------------------------------------------------- context


class Context:
    """What every command needs: the client, output mode, and reference resolution."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json_output = bool(getattr(args, "json", False))
        self.client = ApplianceClient(
            _resolve_url(args), _resolve_token(args),
            ca_file=getattr(args, "cacert", None) or os.environ.get("ACMENFS_CACERT"),
            verify_tls=not getattr(args, "insecure", False),
        )

    def emit(self, payload: Any, render: Callable[[Any], str]) -> None:
        print(json.dumps(payload, indent=2) if self.json_output else render(payload))

    def share_id(self, reference: str) -> str:
        """A share by id or by name."""
        if UUID_PATTERN.match(reference):
            return reference
        shares = self.client.list_shares(name=reference)
        if not shares:
            raise ApiError(404, "not_found", f"no share named {reference!r}")
        return shares[0]["id"]

    def snapshot_id(self, reference: str, share_reference: str | None = None) -> str:
        """A snapshot by id, by ``SHARE@NAME``, or by name within ``share_reference``."""
        if UUID_PATTERN.match(reference):
            return reference
        if "@" in reference:
            share_reference, _, name = reference.partition("@")
        elif share_reference is None:
            raise UsageError(f"name the snapshot by id or as SHARE@SNAPSHOT, not {reference!r}")
        else:
            name = reference
        share_id = self.share_id(share_reference)
        for snapshot in self.client.list_snapshots(share_id):
            if snapshot["name"] == name:
                return snapshot["id"]
        raise ApiError(404, "not_found", f"share {share_reference!r} has no snapshot named {name!r}")

    def token_id(self, reference: str) -> str:
        """A token by id or by name."""
        tokens = self.client.list_tokens()
        for token in tokens:
            if token["id"] == reference:
                return reference
        matches = [token["id"] for token in tokens if token["name"] == reference]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"several tokens are named {reference!r}; revoke one by id")
        raise ApiError(404, "not_found", f"no token with id or name {reference!r}")


def _resolve_url(args: argparse.Namespace) -> str:
    return getattr(args, "url", None) or os.environ.get("ACMENFS_URL") or DEFAULT_URL


def _resolve_token(args: argparse.Namespace) -> str | None:
    token = getattr(args, "token", None) or os.environ.get("ACMENFS_TOKEN")
    if token:
        return token
    data_dir = getattr(args, "data_dir", None) or os.environ.get("ACMENFS_DATA_DIR")
    if not data_dir:
        return None
    token_path = Path(data_dir) / ADMIN_TOKEN_FILE
    try:
        return token_path.read_text().strip() or None
    except OSError as exc:
        raise UsageError(f"cannot read the admin token from {token_path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- commands


def _deleted(kind: str, identifier: str) -> dict:
    return {"id": identifier, "deleted": True, "kind": kind}


def cmd_share_create(ctx: Context, args: argparse.Namespace) -> None:
    volume = None
    if args.volume:
        volume = {"name": args.volume, "sparse": not args.preallocate, "mode": args.mode}
        if args.owner is not None:
            volume["uid"], volume["gid"] = args.owner
    elif args.preallocate:
        raise UsageError("--preallocate needs --volume NAME (it applies to the volume file)")
    elif args.owner is not None:
        raise UsageError("--owner needs --volume NAME (it applies to the volume file)")
    with ElapsedIndicator(f"creating share {args.name}"):
        share = ctx.client.create_share(args.name, args.size, volume=volume, access=args.access)
    ctx.emit(share, render_share)


def cmd_share_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.list_shares(name=args.name), render_shares)


def cmd_share_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.get_share(ctx.share_id(args.share)), render_share)


def cmd_share_delete(ctx: Context, args: argparse.Namespace) -> None:
    share_id = ctx.share_id(args.share)
    with ElapsedIndicator(f"deleting share {args.share}"):
        ctx.client.delete_share(share_id, cascade=args.cascade)
    ctx.emit(_deleted("share", share_id), lambda _: f"deleted share {args.share} ({share_id})")


def cmd_share_extend(ctx: Context, args: argparse.Namespace) -> None:
    with ElapsedIndicator(f"extending share {args.share}"):
        share = ctx.client.extend_share(ctx.share_id(args.share), args.size)
    ctx.emit(share, render_share)


def cmd_share_volume(ctx: Context, args: argparse.Namespace) -> None:
    with ElapsedIndicator(f"preparing volume {args.name}"):
        uid, gid = args.owner if args.owner is not None else (None, None)
        share = ctx.client.put_volume(ctx.share_id(args.share), args.name, size=args.size,
                                      sparse=not args.preallocate, mode=args.mode, uid=uid, gid=gid)
    ctx.emit(share, render_share)


def cmd_share_access_add(ctx: Context, args: argparse.Namespace) -> None:
    rule = args.rule
    share = ctx.client.add_access(ctx.share_id(args.share), rule["client"], rule["access"], rule["squash"])
    ctx.emit(share, render_share)


def cmd_share_access_remove(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.remove_access(ctx.share_id(args.share), args.client), render_share)


def cmd_share_revert(ctx: Context, args: argparse.Namespace) -> None:
    share_id = ctx.share_id(args.share)
    snapshot_id = ctx.snapshot_id(args.snapshot, share_reference=share_id)
    with ElapsedIndicator(f"reverting share {args.share}"):
        share = ctx.client.revert_share(share_id, snapshot_id)
    ctx.emit(share, render_share)


def cmd_snapshot_create(ctx: Context, args: argparse.Namespace) -> None:
    with ElapsedIndicator(f"snapshotting share {args.share}"):
        snapshot = ctx.client.create_snapshot(ctx.share_id(args.share), args.name)
    ctx.emit(snapshot, render_snapshot)


def cmd_snapshot_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.list_snapshots(ctx.share_id(args.share)), render_snapshots)


def cmd_snapshot_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.get_snapshot(ctx.snapshot_id(args.snapshot)), render_snapshot)


def cmd_snapshot_delete(ctx: Context, args: argparse.Namespace) -> None:
    snapshot_id = ctx.snapshot_id(args.snapshot)
    ctx.client.delete_snapshot(snapshot_id)
    ctx.emit(_deleted("snapshot", snapshot_id), lambda _: f"deleted snapshot {args.snapshot} ({snapshot_id})")


def cmd_snapshot_clone(ctx: Context, args: argparse.Namespace) -> None:
    snapshot_id = ctx.snapshot_id(args.snapshot)
    uid, gid = args.owner if args.owner is not None else (None, None)
    with ElapsedIndicator(f"cloning into share {args.name}"):
        share = ctx.client.clone_snapshot(snapshot_id, args.name, size=args.size,
                                          volume_name=args.volume_name, access=args.access,
                                          volume_uid=uid, volume_gid=gid)
    ctx.emit(share, render_share)


def cmd_pool_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.pool(), render_pool)


def cmd_token_create(ctx: Context, args: argparse.Namespace) -> None:
    created = ctx.client.create_token(args.name)
    ctx.emit(created, lambda t: f"created token {t['name']} ({t['id']}); its secret, shown only "
             f"this once:\n{t['token']}")


def cmd_token_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.emit(ctx.client.list_tokens(), render_tokens)


def cmd_token_revoke(ctx: Context, args: argparse.Namespace) -> None:
    token_id = ctx.token_id(args.token_ref)
    ctx.client.revoke_token(token_id)
    ctx.emit(_deleted("token", token_id), lambda _: f"revoked token {args.token_ref} ({token_id})")


def cmd_token_reset(args: argparse.Namespace) -> int:
    """Offline: a new admin token straight into a stopped appliance's database (root only)."""
    data_dir = getattr(args, "data_dir", None) or os.environ.get("ACMENFS_DATA_DIR")
    if not data_dir:
        print("acmenfs: token reset needs --data-dir DIR (or $ACMENFS_DATA_DIR)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("acmenfs: token reset must be run as root (it writes the appliance's database)", file=sys.stderr)
        return 1
    from acmenfs.appliance.errors import ApplianceError
    from acmenfs.appliance.tokens import reset_admin_token
    from acmenfs.appliance.store import DatabaseInUse

    try:
        secret = reset_admin_token(data_dir)
    except DatabaseInUse:
        print(f"acmenfs: the appliance is running on {data_dir}: stop the appliance first, then run "
              "token reset again", file=sys.stderr)
        return 1
    except (ApplianceError, OSError) as exc:
        print(f"acmenfs: token reset: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 1
    print(f"new admin token (also saved to {Path(data_dir) / ADMIN_TOKEN_FILE}); the old tokens still work, "
          "revoke them once the appliance runs:", file=sys.stderr)
    print(secret)
    return 0


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
