"""Small contract details (issue #11 item 7): Allow on 405, snapshot_not_found, 415, the client pattern, logs.

Before the fix: a 405 listed only one method in ``Allow``; a revert to an
unknown snapshot answered the share's ``not_found``; a body that is not JSON
answered 422; the OpenAPI schema accepted any ``client`` string that the
server then refused; reconcile lines were logged as "reconcile: reconcile:".
"""

from __future__ import annotations

import ipaddress
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acmenfs.appliance.errors import InvalidRequest
from acmenfs.appliance.models import AccessRule
from api_fixtures import ServeProcess

MiB = 1 << 20


def problem_code(response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["code"]


@pytest.mark.parametrize("method, path, allowed", [
    ("PATCH", "/v1/shares", {"GET", "POST"}),
    ("PUT", "/v1/shares/{id}", {"GET", "DELETE"}),
    ("GET", "/v1/shares/{id}/access", {"POST", "DELETE"}),
    ("POST", "/v1/snapshots/{id}", {"GET", "DELETE"}),
])
def test_405_allow_lists_every_method_of_the_path(module_api, method, path, allowed):
    response = module_api.request(method, path.format(id=uuid.uuid4()))
    assert response.status_code == 405 and problem_code(response) == "method_not_allowed"
    listed = {item.strip() for item in response.headers["allow"].split(",")}
    assert allowed <= listed and listed <= allowed | {"HEAD"}


def test_revert_to_an_unknown_snapshot_says_snapshot_not_found(module_api):
    share = module_api.post("/v1/shares", json={"name": f"r-{uuid.uuid4().hex[:8]}", "size": MiB}).json()
    answer = module_api.post(f"/v1/shares/{share['id']}/revert", json={"snapshot_id": str(uuid.uuid4())})
    assert answer.status_code == 404 and problem_code(answer) == "snapshot_not_found"
    unknown_share = module_api.post(f"/v1/shares/{uuid.uuid4()}/revert", json={"snapshot_id": str(uuid.uuid4())})
    assert unknown_share.status_code == 404 and problem_code(unknown_share) == "not_found"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_that_is_not_json_answers_415(module_api, content_type):
    answer = module_api.post("/v1/tokens", content=b'{"name": "x"}', headers={"Content-Type": content_type})
    assert answer.status_code == 415 and problem_code(answer) == "unsupported_media_type"
    ok = module_api.post("/v1/tokens", content=b'{"name": "x"}',
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


def client_schema(api) -> dict:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    return schemas["AccessRuleIn"]["properties"]["client"]


def test_the_client_schema_has_the_pattern_the_server_checks(module_api):
    schema = client_schema(module_api)
    pattern = re.compile(schema["pattern"])
    for good in ("*", "10.0.0.1", "10.0.0.0/24", "10.0.0.1/8", "::1", "fd00::/64", "2001:db8::1:2/128"):
        assert pattern.search(good), good
    for bad in ("", "host.example", "10.0.0.256", "10.0.0.0/33", "fd00::/129", "1:2:3", "**", "10.0.0.1 "):
        assert not pattern.search(bad), bad


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(alphabet="0123456789abcdef:./*", max_size=45),
    st.ip_addresses().map(str),
    st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(0, 40)),
    st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=6), st.integers(0, 140)),
))
def test_client_pattern_and_server_agree(text):
    """Whatever the pattern accepts, the server accepts; whatever it refuses, never reaches the service."""
    from acmenfs.appliance.api_models import CLIENT_PATTERN

    if re.search(CLIENT_PATTERN, text):
        assert AccessRule(text).client  # no InvalidRequest
    else:
        assert text != "*"
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            with pytest.raises(InvalidRequest):
                AccessRule(text)


def test_reconcile_lines_are_logged_once_without_a_doubled_prefix(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "staging" / "leftover").mkdir(parents=True)
    serve = ServeProcess(data_dir, "--log-level", "info", nfs=False).start()
    assert serve.stop() == 0
    log = serve.stderr_text()
    assert "reconcile: removed unfinished work" in log, log
    assert "reconcile: reconcile:" not in log
    assert log.count("removed unfinished work") == 1, log
