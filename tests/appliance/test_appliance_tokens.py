"""API tokens cannot lock everybody out: the last one is never revoked, and root can reset offline.

Every token grants the whole API, so "the last admin token" is the last
token. Before the fix, ``DELETE /v1/tokens/<admin-id>`` with the admin token
answered 204 and every later call 401, for good.
"""

from __future__ import annotations

import os
import stat
import subprocess

import httpx

from acmenfs.cli.main import main

from api_fixtures import ACMENFS, ServeProcess


def token_id(api, name: str) -> str:
    return next(t["id"] for t in api.get("/v1/tokens").json()["tokens"] if t["name"] == name)


def test_the_last_token_cannot_be_revoked(api, live_api):
    admin_id = token_id(api, "admin")
    refused = api.delete(f"/v1/tokens/{admin_id}")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "last_admin_token"
    assert api.get("/v1/pool").status_code == 200  # still works

    cinder = api.post("/v1/tokens", json={"name": "cinder"}).json()
    with live_api.client(token=cinder["token"]) as other:
        assert other.delete(f"/v1/tokens/{admin_id}").status_code == 204  # another token remains
        assert other.delete(f"/v1/tokens/{cinder['id']}").json()["code"] == "last_admin_token"
        assert other.get("/v1/tokens").json()["tokens"][0]["id"] == cinder["id"]


def run_cli(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([ACMENFS, *args], capture_output=True, text=True, timeout=120, **options)


def test_token_reset_prints_a_new_admin_token_offline(tmp_path):
    data_dir = tmp_path / "data"
    first = ServeProcess(data_dir, nfs=False).start()
    try:
        with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {first.token}"}) as api:
            api.post("/v1/tokens", json={"name": "cinder"})
        running = run_cli("token", "reset", "--data-dir", str(data_dir))
        assert running.returncode == 1 and "stop the appliance" in running.stderr, running.stderr
        assert "Traceback" not in running.stderr
    finally:
        assert first.stop() == 0

    reset = run_cli("token", "reset", "--data-dir", str(data_dir))
    assert reset.returncode == 0, reset.stderr
    secret = reset.stdout.strip().splitlines()[-1]
    assert secret.startswith("acmenfs_") and secret != first.token
    token_file = data_dir / "admin.token"
    assert token_file.read_text().strip() == secret and stat.S_IMODE(token_file.stat().st_mode) == 0o600

    second = ServeProcess(data_dir, nfs=False).start()
    try:
        with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {secret}"}) as api:
            assert api.get("/v1/pool").status_code == 200
            assert sorted(t["name"] for t in api.get("/v1/tokens").json()["tokens"]) == ["admin", "admin", "cinder"]
    finally:
        assert second.stop() == 0


def test_token_reset_is_root_only(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["token", "reset", "--data-dir", str(data_dir)]) == 1
    assert "must be run as root" in capsys.readouterr().err
    assert not (data_dir / "acmenfs.db").exists()
