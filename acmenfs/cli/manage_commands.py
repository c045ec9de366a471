"""The management CLI's commands: one function per ``acmenfs share|snapshot|pool|token`` leaf.

Owns ``Context`` (the API client from --url/--token/--data-dir or the
environment, ``--json`` output, and naming shares, snapshots and tokens by id or
by name) and the ``cmd_*`` functions, each one or two ``ApplianceClient`` calls,
plus ``cmd_token_reset``: the offline recovery of a locked-out appliance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from acmenfs.appliance.client import ApiError, ApplianceClient
from acmenfs.cli.manage_input import ADMIN_TOKEN_FILE, DEFAULT_URL, UUID_PATTERN, UsageError
from acmenfs.cli.manage_output import (
    ElapsedIndicator,
    render_pool,
    render_share,
    render_shares,
    render_snapshot,
    render_snapshots,
    render_tokens,
)


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

