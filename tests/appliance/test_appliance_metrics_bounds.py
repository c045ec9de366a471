"""/metrics cannot be grown by strangers, and can be closed to them.

Before the fix the HTTP method of every request, authenticated or not, was a
label value as sent: 2,000 made-up methods grew /metrics for good. Every
label derived from a request now comes from a known set ("other" otherwise).
``--metrics-auth`` (``token`` or a client list) guards /metrics for
non-loopback binds.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from acmenfs.appliance.api_http import open_metrics_warning, parse_metrics_auth
from api_fixtures import LiveApi, ServeProcess


def http_label_values(text: str, label: str) -> set[str]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {sample.labels[label] for sample in families["acmenfs_http_requests"].samples}


def test_made_up_methods_and_paths_do_not_grow_metrics(live_api):
    with live_api.client(token=None) as anonymous:
        anonymous.request("BREW", "/v1/shares")
        baseline = len(anonymous.get("/metrics").content)
        for index in range(200):
            anonymous.request(f"M{index}X", f"/v1/shares/{index}")
            anonymous.request("GET", f"/no/such/path/{index}")
        text = anonymous.get("/metrics").text
    assert http_label_values(text, "method") <= {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other"}
    assert "other" in http_label_values(text, "method")
    assert not any("/no/such/path" in route for route in http_label_values(text, "route"))
    assert len(text) < baseline + 4096, "metrics grew with made-up requests"


@pytest.mark.parametrize("text", ["", "bogus", "10.0.0.0/33", "token,10.0.0.1"])
def test_metrics_auth_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_metrics_auth(text)


def test_metrics_auth_token(tmp_path):
    live = LiveApi(tmp_path / "data", metrics_auth="token").start()
    try:
        with live.client(token=None) as anonymous:
            refused = anonymous.get("/metrics")
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
            assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with live.client() as admin:
            assert admin.get("/metrics").status_code == 200
    finally:
        live.stop()


@pytest.mark.parametrize("clients, allowed", [("10.9.9.0/24,192.0.2.7", False), ("10.9.9.0/24,127.0.0.0/8", True)])
def test_metrics_auth_client_list(tmp_path, clients, allowed):
    live = LiveApi(tmp_path / "data", metrics_auth=clients).start()
    try:
        with live.client(token=None) as anonymous:
            answer = anonymous.get("/metrics")
        if allowed:
            assert answer.status_code == 200
        else:
            assert answer.status_code == 403 and answer.json()["code"] == "forbidden"
    finally:
        live.stop()


def test_serve_metrics_auth_option(tmp_path):
    serve = ServeProcess(tmp_path / "data", "--metrics-auth", "token", nfs=False).start()
    try:
        assert httpx.get(f"{serve.url}/metrics", timeout=30).status_code == 401
        answer = httpx.get(f"{serve.url}/metrics", headers={"Authorization": f"Bearer {serve.token}"}, timeout=30)
        assert answer.status_code == 200 and "acmenfs_http_requests" in answer.text
    finally:
        assert serve.stop() == 0


@pytest.mark.parametrize("bind, auth, warned", [
    ("127.0.0.1", "none", False), ("::1", "none", False), ("localhost", "none", False),
    ("0.0.0.0", "none", True), ("192.0.2.10", "none", True), ("::", "none", True),
    ("0.0.0.0", "token", False), ("0.0.0.0", "10.0.0.0/8", False),
])
def test_serve_warns_when_metrics_are_open_beyond_loopback(bind, auth, warned):
    warning = open_metrics_warning(bind, parse_metrics_auth(auth))
    assert (warning is not None) == warned
    if warned:
        assert "--metrics-auth" in warning
