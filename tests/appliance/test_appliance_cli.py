"""The management CLI (``acmenfs share|snapshot|pool|token``) against a live ``acmenfs serve``.

The CLI runs as a real subprocess against one appliance subprocess per module;
the input parsers and table rendering are also checked in-process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import select
import subprocess
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acmenfs.cli.manage import ElapsedIndicator, format_size, format_table, parse_access, parse_size
from api_fixtures import ACMENFS, ServeProcess, free_port

MiB, GiB = 1 << 20, 1 << 30


# --------------------------------------------------------------------------- in-process parsers


@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("10G", 10 * GiB), ("10g", 10 * GiB), ("512M", 512 * MiB), ("1.5G", 3 * GiB // 2),
    ("2GiB", 2 * GiB), ("2 GB", 2 * GiB), ("1T", 1 << 40), ("64K", 64 << 10), ("7B", 7),
])
def test_parse_size_accepts_bytes_and_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "10X", "-1G", "0", "0M", "ten", "1e9", "10 G B"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


@given(st.integers(min_value=1, max_value=1 << 50))
def test_format_size_is_close_to_the_value(size):
    number, unit = format_size(size).split()
    factor = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50}[unit]
    assert 1 <= float(number) < 1024 or unit == "PiB"
    # one decimal: off by at most half a tenth of the unit (1.75 KiB prints as "1.8 KiB")
    assert abs(float(number) * factor - size) <= 0.05 * factor * (1 + 1e-9)


@pytest.mark.parametrize("text, rule", [
    ("10.0.0.5", {"client": "10.0.0.5", "access": "rw", "squash": "root"}),
    ("10.0.0.0/24:ro", {"client": "10.0.0.0/24", "access": "ro", "squash": "root"}),
    ("*:ro:all", {"client": "*", "access": "ro", "squash": "all"}),
    ("fd00::/64:rw:none", {"client": "fd00::/64", "access": "rw", "squash": "none"}),
    ("::1", {"client": "::1", "access": "rw", "squash": "root"}),
])
def test_parse_access(text, rule):
    assert parse_access(text) == rule


@pytest.mark.parametrize("text", [":ro", "", ":rw:none"])
def test_parse_access_needs_a_client(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_access(text)


def test_elapsed_indicator_spins_on_a_tty_only():
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        with ElapsedIndicator("cloning into share c", stream=terminal):
            deadline = time.monotonic() + 30
            seen = b""
            while b"cloning into share c" not in seen and time.monotonic() < deadline:
                if select.select([leader], [], [], 1.0)[0]:
                    seen += os.read(leader, 4096)
    os.close(leader)
    assert b"cloning into share c" in seen and b"s" in seen.split(b"share c")[-1]
    not_a_tty = io.StringIO()
    with ElapsedIndicator("quiet", stream=not_a_tty):
        time.sleep(0.3)
    assert not_a_tty.getvalue() == ""


def test_format_table_aligns_columns():
    table = format_table(("NAME", "SIZE"), [("a", "10 GiB"), ("longer-name", "1 B")]).splitlines()
    assert [line.index(size) for line, size in zip(table, ("SIZE", "10 GiB", "1 B"))] == [13, 13, 13]


# --------------------------------------------------------------------------- against a live appliance


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    serve = ServeProcess(tmp_path_factory.mktemp("cli") / "data", nfs=False).start()
    try:
        yield serve
    finally:
        serve.stop()


def run_cli(appliance, *args: str, token: str | None = "admin", url: str | None = None,
            extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACMENFS_")}
    env["ACMENFS_URL"] = url or appliance.url
    if token is not None:
        env["ACMENFS_TOKEN"] = appliance.token if token == "admin" else token
    env.update(extra_env or {})
    result = subprocess.run([ACMENFS, *args], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli_json(appliance, *args: str):
    result = run_cli(appliance, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_share_create_show_list_as_json_and_tables(appliance):
    name = unique("cli")
    share = cli_json(appliance, "share", "create", name, "--size", "10M", "--volume", "volume-1",
                     "--mode", "0666", "--access", "10.0.0.0/24:ro:all", "--access", "127.0.0.1")
    assert share["name"] == name and share["size"] == 10 * MiB
    assert share["volume"]["name"] == "volume-1" and share["volume"]["mode"] == "0666"
    assert share["volume"]["sparse"] is True
    assert share["access"] == [{"client": "10.0.0.0/24", "access": "ro", "squash": "all"},
                               {"client": "127.0.0.1", "access": "rw", "squash": "root"}]
    assert cli_json(appliance, "share", "show", name) == cli_json(appliance, "share", "show", share["id"])
    listed = cli_json(appliance, "share", "list", "--name", name)
    assert [s["id"] for s in listed] == [share["id"]]

    table = run_cli(appliance, "share", "list")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "USED", "STATE", "VOLUME", "EXPORT"]
    row = next(line for line in rows if line.startswith(name + " "))
    assert row.index(share["id"]) == header.index("ID")
    assert "10 MiB" in row and "available" in row and "volume-1" in row
    shown = run_cli(appliance, "share", "show", name).stdout
    assert "size:" in shown and "10 MiB (10485760 bytes)" in shown
    assert "10.0.0.0/24 ro squash=all" in shown and share["nfs"]["url"] in shown


def test_global_options_work_before_the_command(appliance):
    result = run_cli(appliance, "share", "--json", "--url", appliance.url, "list", token=None,
                     extra_env={"ACMENFS_TOKEN": appliance.token})
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_preallocated_volume_and_extend(appliance):
    name = unique("prealloc")
    share = cli_json(appliance, "share", "create", name, "--size", "2M", "--volume", "v", "--preallocate")
    assert share["volume"]["sparse"] is False
    assert share["volume"]["allocated_bytes"] >= 2 * MiB
    grown = cli_json(appliance, "share", "extend", name, "--size", "4M")
    assert grown["size"] == 4 * MiB and grown["volume"]["size"] == 4 * MiB


def test_share_volume_creates_and_renames(appliance):
    name = unique("volcmd")
    cli_json(appliance, "share", "create", name, "--size", "1M")
    created = cli_json(appliance, "share", "volume", name, "first")
    assert created["volume"]["name"] == "first"
    renamed = cli_json(appliance, "share", "volume", name, "second", "--size", "2M")
    assert renamed["volume"] == {**renamed["volume"], "name": "second", "size": 2 * MiB}


def test_access_add_and_remove(appliance):
    name = unique("access")
    cli_json(appliance, "share", "create", name, "--size", "1M")
    added = cli_json(appliance, "share", "access", "add", name, "192.168.0.0/16:ro")
    assert added["access"] == [{"client": "192.168.0.0/16", "access": "ro", "squash": "root"}]
    removed = cli_json(appliance, "share", "access", "remove", name, "192.168.0.0/16")
    assert removed["access"] == []
    bad = run_cli(appliance, "share", "access", "add", name, "300.1.1.1")
    assert bad.returncode == 1
    assert "invalid_access" in bad.stderr and "300.1.1.1" in bad.stderr


def test_snapshots_clone_and_revert(appliance):
    name = unique("snapsrc")
    share = cli_json(appliance, "share", "create", name, "--size", "4M", "--volume", "vol-a")
    snapshot = cli_json(appliance, "snapshot", "create", name, "s1")
    assert snapshot["share_id"] == share["id"] and snapshot["name"] == "s1"
    assert [s["id"] for s in cli_json(appliance, "snapshot", "list", name)] == [snapshot["id"]]
    assert cli_json(appliance, "snapshot", "show", f"{name}@s1") == snapshot
    assert cli_json(appliance, "snapshot", "show", snapshot["id"]) == snapshot
    listing = run_cli(appliance, "snapshot", "list", name).stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "SIZE", "CREATED", "PATH"] and listing[1].startswith("s1 ")

    clone_name = unique("clone")
    clone = cli_json(appliance, "snapshot", "clone", f"{name}@s1", clone_name, "--size", "8M",
                     "--volume-name", "vol-b", "--access", "*:ro")
    assert clone["origin_snapshot_id"] == snapshot["id"] and clone["size"] == 8 * MiB
    assert clone["volume"]["name"] == "vol-b"
    assert clone["access"] == [{"client": "*", "access": "ro", "squash": "root"}]

    reverted = cli_json(appliance, "share", "revert", name, "--snapshot", "s1")
    assert reverted["id"] == share["id"]
    missing = run_cli(appliance, "share", "revert", name, "--snapshot", "no-such-snap")
    assert missing.returncode == 1 and "no snapshot named 'no-such-snap'" in missing.stderr

    assert run_cli(appliance, "snapshot", "delete", f"{name}@s1").returncode == 0
    assert cli_json(appliance, "snapshot", "list", name) == []


def test_delete_refuses_snapshots_then_cascades(appliance):
    name = unique("del")
    share = cli_json(appliance, "share", "create", name, "--size", "1M")
    cli_json(appliance, "snapshot", "create", name, "keep")
    refused = run_cli(appliance, "share", "delete", name)
    assert refused.returncode == 1
    assert "share_has_snapshots" in refused.stderr and "HTTP 409" in refused.stderr
    deleted = cli_json(appliance, "share", "delete", name, "--cascade")
    assert deleted == {"id": share["id"], "deleted": True, "kind": "share"}
    gone = run_cli(appliance, "share", "show", share["id"])
    assert gone.returncode == 1 and "not_found" in gone.stderr


def test_pool_show(appliance):
    pool = cli_json(appliance, "pool", "show")
    assert pool["share_count"] >= 0 and pool["total_bytes"] > 0
    table = run_cli(appliance, "pool", "show").stdout
    assert "backend:" in table and "provisioned:" in table and pool["backend"] in table


def test_tokens_create_list_and_revoke(appliance):
    name = unique("tok")
    created = cli_json(appliance, "token", "create", name)
    assert created["name"] == name and created["token"]
    assert run_cli(appliance, "pool", "show", token=created["token"]).returncode == 0
    listed = run_cli(appliance, "token", "list").stdout
    assert name in listed and created["token"] not in listed
    revoked = run_cli(appliance, "token", "revoke", name)
    assert revoked.returncode == 0 and created["id"] in revoked.stdout
    refused = run_cli(appliance, "pool", "show", token=created["token"])
    assert refused.returncode == 1
    assert "unauthorized" in refused.stderr and "ACMENFS_TOKEN" in refused.stderr


def test_token_from_the_data_dir(appliance):
    result = run_cli(appliance, "pool", "show", "--json", token=None,
                     extra_env={"ACMENFS_DATA_DIR": str(appliance.data_dir)})
    assert result.returncode == 0, result.stderr
    explicit = run_cli(appliance, "pool", "show", "--data-dir", str(appliance.data_dir), token=None)
    assert explicit.returncode == 0, explicit.stderr
    missing = run_cli(appliance, "pool", "show", "--data-dir", "/nonexistent-acmenfs", token=None)
    assert missing.returncode == 2 and "cannot read the admin token" in missing.stderr


def test_errors_are_one_line_messages_with_exit_codes(appliance):
    no_token = run_cli(appliance, "share", "list", token=None)
    assert no_token.returncode == 1 and "unauthorized" in no_token.stderr
    bad_size = run_cli(appliance, "share", "create", unique("x"), "--size", "10X")
    assert bad_size.returncode == 2 and "not a size: '10X'" in bad_size.stderr
    bad_name = run_cli(appliance, "share", "create", ".hidden", "--size", "1M")
    assert bad_name.returncode == 1 and "invalid_name" in bad_name.stderr
    conflict_name = unique("twin")
    cli_json(appliance, "share", "create", conflict_name, "--size", "1M")
    conflict = run_cli(appliance, "share", "create", conflict_name, "--size", "1M")
    assert conflict.returncode == 1 and "name_conflict" in conflict.stderr
    unknown = run_cli(appliance, "share", "show", "no-such-share")
    assert unknown.returncode == 1 and "no share named 'no-such-share'" in unknown.stderr
    unreachable = run_cli(appliance, "share", "list", url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "cannot reach the appliance" in unreachable.stderr
    snapshot_without_share = run_cli(appliance, "snapshot", "show", "just-a-name")
    assert snapshot_without_share.returncode == 2 and "SHARE@SNAPSHOT" in snapshot_without_share.stderr


def test_group_without_command_prints_usage(appliance):
    result = run_cli(appliance, "share")
    assert result.returncode == 2 and "create" in result.stderr and "list" in result.stderr
