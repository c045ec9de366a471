"""REST API tests over real HTTP: uvicorn on a free 127.0.0.1 port, a real service, SQLite, files.

Covers every endpoint of docs/rest-api.md on its happy path, authentication and
tokens, problem-JSON answers for refused requests (400/401/404/405/409/422/500),
the OpenAPI document, the docs page and /metrics.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from acmenfs.appliance.api import MAX_BODY_BYTES
from acmenfs.appliance.api_models import (
    NAME_PATTERN,
    PoolOut,
    ShareListOut,
    ShareOut,
    SnapshotListOut,
    SnapshotOut,
    TokenCreatedOut,
    TokenListOut,
)
from acmenfs.appliance.errors import InvalidRequest
from acmenfs.appliance.models import validate_name
from acmenfs.oncrpc.drc import DuplicateRequestCache
from api_fixtures import LiveApi

MiB = 1 << 20


class Strict:
    """The documented response models, refusing any field the contract does not name."""

    @staticmethod
    def check(model, payload):
        strict = type(f"Strict{model.__name__}", (model,), {"model_config": {"extra": "forbid"}})
        return strict.model_validate(payload)


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == "about:blank"
    assert problem["title"] and problem["detail"]
    assert "Traceback" not in response.text
    return problem


def write_at_start(path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(data)


def make_share(api, name="vol-1", size=4 * MiB, **body) -> dict:
    response = api.post("/v1/shares", json={"name": name, "size": size, **body})
    assert response.status_code == 201, response.text
    return response.json()


# --------------------------------------------------------------------------- happy paths


def test_version_needs_no_token(live_api):
    with live_api.client(token=None) as anonymous:
        response = anonymous.get("/v1/version")
    assert response.status_code == 200
    assert response.json() == {"api_version": 1, "version": "0.1.0", "nfs_versions": []}  # no NFS server here


def test_create_share_with_volume_and_access(api, live_api):
    share = make_share(api, "vol-1", 8 * MiB, volume={"name": "volume-abc", "sparse": True, "mode": "0666"},
                       access=[{"client": "10.0.0.5/32", "access": "ro", "squash": "all"}])
    Strict.check(ShareOut, share)
    assert share["name"] == "vol-1" and share["size"] == 8 * MiB and share["state"] == "available"
    assert share["export_path"] == f"/shares/{share['id']}"
    assert share["volume"] == {"name": "volume-abc", "size": 8 * MiB, "sparse": True, "mode": "0666",
                               "allocated_bytes": 0, "uid": 0, "gid": 0}
    assert share["access"] == [{"client": "10.0.0.5/32", "access": "ro", "squash": "all"}]
    assert share["nfs"]["location"] == f"127.0.0.1:{share['export_path']}"
    assert share["nfs"]["url"].startswith(f"nfs://127.0.0.1{share['export_path']}?version=3&nfsport=")
    volume_file = live_api.service.layout.share_dir(share["id"]) / "volume-abc"
    assert os.stat(volume_file).st_size == 8 * MiB
    assert live_api.service.exports.get(share["export_path"]) is not None


def test_create_share_without_volume(api):
    share = make_share(api, "plain")
    assert share["volume"] is None and share["origin_snapshot_id"] is None


def test_list_and_get_shares_with_filters(api):
    first = make_share(api, "first")
    second = make_share(api, "second")
    listing = api.get("/v1/shares").json()
    Strict.check(ShareListOut, listing)
    assert {s["name"] for s in listing["shares"]} == {"first", "second"}
    by_name = api.get("/v1/shares", params={"name": "second"}).json()["shares"]
    assert [s["id"] for s in by_name] == [second["id"]]
    by_path = api.get("/v1/shares", params={"export_path": first["export_path"]}).json()["shares"]
    assert [s["id"] for s in by_path] == [first["id"]]
    assert api.get("/v1/shares", params={"name": "nobody"}).json() == {"shares": []}
    assert api.get(f"/v1/shares/{first['id']}").json() == first


def test_extend_share_grows_the_volume_file(api, live_api):
    share = make_share(api, volume={"name": "vol"})
    grown = api.post(f"/v1/shares/{share['id']}/extend", json={"size": 16 * MiB})
    assert grown.status_code == 200
    assert grown.json()["size"] == 16 * MiB and grown.json()["volume"]["size"] == 16 * MiB
    assert os.stat(live_api.service.layout.share_dir(share["id"]) / "vol").st_size == 16 * MiB


def test_put_volume_creates_then_renames_and_grows(api, live_api):
    share = make_share(api)
    created = api.put(f"/v1/shares/{share['id']}/volume", json={"name": "first-name"})
    assert created.status_code == 200, created.text
    assert created.json()["volume"]["name"] == "first-name"
    renamed = api.put(f"/v1/shares/{share['id']}/volume", json={"name": "second-name", "size": 6 * MiB})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["volume"]["name"] == "second-name"
    directory = live_api.service.layout.share_dir(share["id"])
    assert not (directory / "first-name").exists()
    assert os.stat(directory / "second-name").st_size == 6 * MiB


def test_access_add_replace_and_idempotent_remove(api):
    share = make_share(api, access=[{"client": "10.0.0.5"}])
    added = api.post(f"/v1/shares/{share['id']}/access", json={"client": "192.168.1.0/24", "access": "ro"})
    assert added.status_code == 200
    assert {"client": "192.168.1.0/24", "access": "ro", "squash": "root"} in added.json()["access"]
    replaced = api.post(f"/v1/shares/{share['id']}/access",
                        json={"client": "192.168.1.0/24", "access": "rw", "squash": "none"}).json()
    assert [r for r in replaced["access"] if r["client"] == "192.168.1.0/24"] == [
        {"client": "192.168.1.0/24", "access": "rw", "squash": "none"}]
    for _ in range(2):  # removing twice is not an error
        removed = api.delete(f"/v1/shares/{share['id']}/access", params={"client": "192.168.1.0/24"})
        assert removed.status_code == 200
        assert [r["client"] for r in removed.json()["access"]] == ["10.0.0.5"]


def test_snapshot_create_list_get_delete(api):
    share = make_share(api, volume={"name": "vol"})
    created = api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "snap-1"})
    assert created.status_code == 201
    snapshot = created.json()
    Strict.check(SnapshotOut, snapshot)
    assert snapshot["share_id"] == share["id"] and snapshot["name"] == "snap-1"
    listing = api.get(f"/v1/shares/{share['id']}/snapshots").json()
    Strict.check(SnapshotListOut, listing)
    assert [s["id"] for s in listing["snapshots"]] == [snapshot["id"]]
    assert api.get(f"/v1/snapshots/{snapshot['id']}").json() == snapshot
    deleted = api.delete(f"/v1/snapshots/{snapshot['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(api.get(f"/v1/snapshots/{snapshot['id']}"), 404, "not_found")


def test_clone_renames_and_grows_the_volume(api, live_api):
    share = make_share(api, size=4 * MiB, volume={"name": "volume-src"})
    write_at_start(live_api.service.layout.share_dir(share["id"]) / "volume-src", b"clone me")
    snapshot = api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"}).json()
    response = api.post(f"/v1/snapshots/{snapshot['id']}/clone",
                        json={"name": "clone-1", "size": 8 * MiB, "volume_name": "volume-dst",
                              "access": [{"client": "*", "access": "ro"}]})
    assert response.status_code == 201, response.text
    clone = response.json()
    Strict.check(ShareOut, clone)
    assert clone["origin_snapshot_id"] == snapshot["id"] and clone["size"] == 8 * MiB
    assert clone["volume"]["name"] == "volume-dst" and clone["volume"]["size"] == 8 * MiB
    assert clone["access"] == [{"client": "*", "access": "ro", "squash": "root"}]
    clone_file = live_api.service.layout.share_dir(clone["id"]) / "volume-dst"
    with open(clone_file, "rb") as handle:
        assert handle.read(8) == b"clone me"


def test_revert_brings_contents_back(api, live_api):
    share = make_share(api, volume={"name": "vol"})
    write_at_start(live_api.service.layout.share_dir(share["id"]) / "vol", b"before")
    snapshot = api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"}).json()
    write_at_start(live_api.service.layout.share_dir(share["id"]) / "vol", b"after!")
    response = api.post(f"/v1/shares/{share['id']}/revert", json={"snapshot_id": snapshot["id"]})
    assert response.status_code == 200, response.text
    Strict.check(ShareOut, response.json())
    with open(live_api.service.layout.share_dir(share["id"]) / "vol", "rb") as handle:
        assert handle.read(6) == b"before"


def test_delete_share_refuses_snapshots_unless_cascade(api, live_api):
    share = make_share(api)
    api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"})
    assert_problem(api.delete(f"/v1/shares/{share['id']}"), 409, "share_has_snapshots")
    assert api.delete(f"/v1/shares/{share['id']}", params={"cascade": "true"}).status_code == 204
    assert_problem(api.get(f"/v1/shares/{share['id']}"), 404, "not_found")
    assert live_api.service.exports.get(share["export_path"]) is None
    assert_problem(api.delete(f"/v1/shares/{share['id']}"), 404, "not_found")


def test_pool_counts_shares_and_snapshots(api):
    share = make_share(api, size=4 * MiB)
    make_share(api, "other", size=2 * MiB)
    api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"})
    pool = api.get("/v1/pool").json()
    Strict.check(PoolOut, pool)
    assert pool["share_count"] == 2 and pool["snapshot_count"] == 1
    assert pool["provisioned_bytes"] == 6 * MiB
    assert pool["total_bytes"] >= pool["free_bytes"] > 0
    assert set(pool["nfs"]) == {"host", "port", "mount_port"}


# --------------------------------------------------------------------------- auth and tokens


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer", "bearer wrong-token"])
def test_v1_refuses_missing_or_bad_tokens(module_live_api, header):
    shares_before = module_live_api.service.list_shares()
    headers = {"Authorization": header} if header else {}
    with module_live_api.client(token=None) as anonymous:
        for method, path in (("GET", "/v1/pool"), ("GET", "/v1/shares"), ("POST", "/v1/shares"),
                             ("DELETE", f"/v1/shares/{uuid.uuid4()}"), ("GET", "/v1/tokens")):
            response = anonymous.request(method, path, headers=headers, json={"name": "x", "size": 1})
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
    assert module_live_api.service.list_shares() == shares_before


def test_unauthenticated_bad_json_is_401_not_400(live_api):
    with live_api.client(token=None) as anonymous:
        response = anonymous.post("/v1/shares", content=b"{nope", headers={"content-type": "application/json"})
    assert_problem(response, 401, "unauthorized")


def test_token_create_list_use_and_revoke(api, live_api):
    created = api.post("/v1/tokens", json={"name": "cinder"})
    assert created.status_code == 201
    Strict.check(TokenCreatedOut, created.json())
    secret, token_id = created.json()["token"], created.json()["id"]
    listing = api.get("/v1/tokens").json()
    Strict.check(TokenListOut, listing)
    assert {t["name"] for t in listing["tokens"]} == {"admin", "cinder"}
    assert all("token" not in t for t in listing["tokens"])  # secrets are shown only once
    with live_api.client(token=secret) as cinder:
        assert cinder.get("/v1/pool").status_code == 200
        assert api.delete(f"/v1/tokens/{token_id}").status_code == 204
        assert_problem(cinder.get("/v1/pool"), 401, "unauthorized")
    assert_problem(api.delete(f"/v1/tokens/{token_id}"), 404, "not_found")
    assert api.get("/v1/pool").status_code == 200  # the admin token still works


# --------------------------------------------------------------------------- refused requests


@pytest.mark.parametrize("body, code, field", [
    ({"name": "x", "size": "10"}, "invalid_size", "size"),
    ({"name": "x", "size": -1}, "invalid_size", "size"),
    ({"name": "x", "size": 0}, "invalid_size", "size"),
    ({"name": "x", "size": 1.5}, "invalid_size", "size"),
    ({"name": "x", "size": True}, "invalid_size", "size"),
    ({"name": "x", "size": 1 << 60}, "invalid_size", "size"),
    ({"name": "x"}, "invalid_size", "size"),
    ({"name": "bad name", "size": MiB}, "invalid_name", "name"),
    ({"name": ".hidden", "size": MiB}, "invalid_name", "name"),
    ({"name": "x" * 129, "size": MiB}, "invalid_name", "name"),
    ({"name": "", "size": MiB}, "invalid_name", "name"),
    ({"name": 7, "size": MiB}, "invalid_name", "name"),
    ({"name": "x", "size": MiB, "colour": "blue"}, "invalid_request", "colour"),
    ({"name": "x", "size": MiB, "volume": {"name": "v", "extra": 1}}, "invalid_request", "volume.extra"),
    ({"name": "x", "size": MiB, "volume": {"name": "v", "sparse": "yes"}}, "invalid_request", "volume.sparse"),
    ({"name": "x", "size": MiB, "volume": {"name": "../v"}}, "invalid_name", "volume.name"),
    ({"name": "x", "size": MiB, "access": [{"client": "10.0.0.1", "access": "rwx"}]}, "invalid_access",
     "access[0].access"),
    ({"name": "x", "size": MiB, "access": [{"client": "10.0.0.1", "squash": "some"}]}, "invalid_access",
     "access[0].squash"),
    ({"name": "x", "size": MiB, "access": "everyone"}, "invalid_access", "access"),
])
def test_create_share_validation(module_api, module_live_api, body, code, field):
    shares_before = module_live_api.service.list_shares()
    problem = assert_problem(module_api.post("/v1/shares", json=body), 422, code)
    assert field in problem["detail"]
    assert any(error["field"] == field for error in problem["errors"])
    assert module_live_api.service.list_shares() == shares_before


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="Aa0._-/ é\n", max_size=130) | st.from_regex(r"[A-Za-z0-9._-]{120,130}", fullmatch=True))
def test_api_name_rule_matches_the_service_rule(name):
    try:
        validate_name(name)
        service_accepts = True
    except InvalidRequest:
        service_accepts = False
    assert (re.fullmatch(NAME_PATTERN, name) is not None) == service_accepts


@pytest.mark.parametrize("client", ["10.0.0.300", "10.0.0.0/33", "example.com", "fe80::/200"])
def test_bad_cidr_is_invalid_access(module_api, client):
    share = make_share(module_api, name=f"cidr-{uuid.uuid4()}")
    problem = assert_problem(module_api.post(f"/v1/shares/{share['id']}/access", json={"client": client}),
                             422, "invalid_access")
    assert client in problem["detail"]
    assert_problem(module_api.post("/v1/shares", json={"name": "y", "size": MiB, "access": [{"client": client}]}),
                   422, "invalid_access")


def test_volume_mode_other_than_0660_or_0666_is_refused(module_api):
    problem = assert_problem(
        module_api.post("/v1/shares", json={"name": "x", "size": MiB, "volume": {"name": "v", "mode": "0777"}}),
        422, "invalid_request")
    assert "mode" in problem["detail"]


@pytest.mark.parametrize("content", [b"{not json", b'{"name": "x", "size": 1', b"\xff\xfe"])
def test_unparsable_json_is_400(module_api, content):
    problem = assert_problem(module_api.post("/v1/shares", content=content,
                                      headers={"content-type": "application/json"}), 400, "invalid_request")
    assert "JSON" in problem["detail"]


@pytest.mark.parametrize("content", [b"[]", b'"share"', b"null", b""])
def test_json_that_is_not_an_object_is_422(module_api, content):
    assert_problem(module_api.post("/v1/shares", content=content, headers={"content-type": "application/json"}),
                   422, "invalid_request")


def test_oversized_bodies_are_413(module_api):
    rules = [{"client": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"} for i in range(60000)]
    body = json.dumps({"name": "huge", "size": MiB, "access": rules}).encode()
    assert len(body) > MAX_BODY_BYTES
    declared = module_api.post("/v1/shares", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413, declared.text[:300]
    assert_problem(declared, 413, "request_too_large")

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'{"name": "huge", "size": 1, "access": ['
        for _ in range(2000):
            yield b'{"client": "10.0.0.1"},' * 50
        yield b'{"client": "10.0.0.1"}]}'

    streamed = module_api.post("/v1/shares", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text[:300]
    assert_problem(streamed, 413, "request_too_large")
    assert not module_api.get("/v1/shares", params={"name": "huge"}).json()["shares"]


def test_duplicate_names_conflict(api):
    share = make_share(api, "twin")
    assert_problem(api.post("/v1/shares", json={"name": "twin", "size": MiB}), 409, "name_conflict")
    api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"})
    assert_problem(api.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"}), 409, "name_conflict")


def test_extend_must_not_shrink(api):
    share = make_share(api, size=4 * MiB)
    assert_problem(api.post(f"/v1/shares/{share['id']}/extend", json={"size": MiB}), 422, "invalid_size")
    assert_problem(api.post(f"/v1/shares/{share['id']}/extend", json={"size": -5}), 422, "invalid_size")
    assert_problem(api.post(f"/v1/shares/{share['id']}/extend", json={"size": 8 * MiB, "x": 1}),
                   422, "invalid_request")


@pytest.mark.parametrize("method, path_template, body", [
    ("GET", "/v1/shares/{id}", None),
    ("DELETE", "/v1/shares/{id}", None),
    ("POST", "/v1/shares/{id}/extend", {"size": MiB}),
    ("PUT", "/v1/shares/{id}/volume", {"name": "v"}),
    ("POST", "/v1/shares/{id}/access", {"client": "*"}),
    ("DELETE", "/v1/shares/{id}/access?client=*", None),
    ("POST", "/v1/shares/{id}/snapshots", {"name": "s"}),
    ("GET", "/v1/shares/{id}/snapshots", None),
    ("POST", "/v1/shares/{id}/revert", {"snapshot_id": "00000000-0000-0000-0000-000000000000"}),
    ("GET", "/v1/snapshots/{id}", None),
    ("DELETE", "/v1/snapshots/{id}", None),
    ("POST", "/v1/snapshots/{id}/clone", {"name": "c"}),
    ("DELETE", "/v1/tokens/{id}", None),
    ("GET", "/v1/shares/not-a-uuid", None),
])
def test_unknown_ids_are_404(module_api, method, path_template, body):
    path = path_template.format(id=uuid.uuid4())
    assert_problem(module_api.request(method, path, json=body), 404, "not_found")


def test_unknown_route_and_wrong_method(api, live_api):
    assert_problem(api.get("/v1/nothing-here"), 404, "not_found")
    with live_api.client(token=None) as anonymous:
        assert_problem(anonymous.get("/nothing-here"), 404, "not_found")
        response = anonymous.put("/v1/version")
        assert_problem(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET"
    assert_problem(api.patch("/v1/shares"), 405, "method_not_allowed")


def test_missing_query_parameter_is_422(api):
    share = make_share(api)
    problem = assert_problem(api.delete(f"/v1/shares/{share['id']}/access"), 422, "invalid_access")
    assert "client" in problem["detail"]


def test_internal_failures_answer_500_without_details(live_api, caplog):
    live_api.service.close()  # the store is gone: every service call now fails unexpectedly
    with caplog.at_level(logging.ERROR, logger="acmenfs.appliance.api"), live_api.client() as api:
        response = api.get("/v1/shares")
    problem = assert_problem(response, 500, "internal_error")
    assert "sqlite" not in response.text.lower() and "closed" not in response.text.lower()
    assert problem["detail"] == "internal server error; the appliance log has the details"
    assert any(record.exc_info for record in caplog.records), "the traceback must go to the log"


# --------------------------------------------------------------------------- documents and metrics


CONTRACT_OPERATIONS = {
    ("/v1/version", "get"), ("/v1/pool", "get"), ("/v1/shares", "post"), ("/v1/shares", "get"),
    ("/v1/shares/{share_id}", "get"), ("/v1/shares/{share_id}", "delete"),
    ("/v1/shares/{share_id}/extend", "post"), ("/v1/shares/{share_id}/volume", "put"),
    ("/v1/shares/{share_id}/access", "post"), ("/v1/shares/{share_id}/access", "delete"),
    ("/v1/shares/{share_id}/snapshots", "post"), ("/v1/shares/{share_id}/snapshots", "get"),
    ("/v1/snapshots/{snapshot_id}", "get"), ("/v1/snapshots/{snapshot_id}", "delete"),
    ("/v1/snapshots/{snapshot_id}/clone", "post"), ("/v1/shares/{share_id}/revert", "post"),
    ("/v1/tokens", "get"), ("/v1/tokens", "post"), ("/v1/tokens/{token_id}", "delete"), ("/metrics", "get"),
}


def test_openapi_document_describes_the_contract(live_api):
    with live_api.client(token=None) as anonymous:
        response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"] == "0.1.0"
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert CONTRACT_OPERATIONS <= operations
    schemes = document["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes.values())
    create = document["paths"]["/v1/shares"]["post"]
    assert "201" in create["responses"] and "422" in create["responses"]
    assert create["security"], "authenticated operations must declare their security"
    assert "security" not in document["paths"]["/v1/version"]["get"]
    share_create = document["components"]["schemas"]["ShareCreate"]
    assert share_create["additionalProperties"] is False
    assert share_create["properties"]["size"]["exclusiveMinimum"] == 0
    for ref_holder in _refs(document):
        name = ref_holder.rsplit("/", 1)[-1]
        assert name in document["components"]["schemas"], f"dangling $ref {ref_holder}"


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_docs_page_is_served_without_token(live_api):
    with live_api.client(token=None) as anonymous:
        response = anonymous.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample_value(family, **labels) -> float:
    for sample in family.samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {labels} in {family.name}: {family.samples}")


def test_metrics_parse_and_count_operations_and_http(api, live_api):
    share = make_share(api)
    assert_problem(api.post("/v1/shares", json={"name": "vol-1", "size": MiB}), 409, "name_conflict")
    api.get(f"/v1/shares/{share['id']}")
    with live_api.client(token=None) as anonymous:
        families = scrape(anonymous)
    for name in ("acmenfs_info", "acmenfs_nfs_calls", "acmenfs_nfs_call_duration_seconds",
                 "acmenfs_nfs_read_bytes", "acmenfs_nfs_written_bytes", "acmenfs_drc_checks",
                 "acmenfs_drc_hits", "acmenfs_drc_in_progress_hits", "acmenfs_drc_payload_misses",
                 "acmenfs_drc_overflows", "acmenfs_drc_entries", "acmenfs_drc_in_progress",
                 "acmenfs_drc_gc_frees", "acmenfs_drc_mean_lifetime_seconds", "acmenfs_operations",
                 "acmenfs_operation_errors", "acmenfs_pool_total_bytes", "acmenfs_pool_free_bytes",
                 "acmenfs_pool_provisioned_bytes", "acmenfs_pool_share_count", "acmenfs_http_requests",
                 "acmenfs_http_request_duration_seconds", "process_cpu_seconds"):
        assert name in families, name
    assert sample_value(families["acmenfs_operations"], operation="create_share") == 2
    assert sample_value(families["acmenfs_operation_errors"], operation="create_share",
                        code="name_conflict") == 1
    assert sample_value(families["acmenfs_pool_share_count"]) == 1
    assert sample_value(families["acmenfs_pool_provisioned_bytes"]) == 4 * MiB
    http = families["acmenfs_http_requests"]
    assert sample_value(http, method="POST", route="/v1/shares", status="201") == 1
    assert sample_value(http, method="POST", route="/v1/shares", status="409") == 1
    assert sample_value(http, method="GET", route="/v1/shares/{share_id}", status="200") == 1
    assert {s.labels["source"]: s.value for s in families["acmenfs_metrics_source_up"].samples} == {
        "info": 1, "nfs": 1, "operations": 1, "pool": 1, "http": 1}
    assert sample_value(families["acmenfs_info"], version="0.1.0", backend=live_api.service.backend_name) == 1


def test_metrics_render_nfs_and_drc_stats(tmp_path):
    drc = DuplicateRequestCache()  # the stats shape NfsServer.stats() reports (its "drc" entry)
    nfs_stats = {
        "calls": {("NFS3", "READ"): 5, ("MOUNT3", "MNT"): 1},
        "latency_seconds_sum": {("NFS3", "READ"): 0.25, ("MOUNT3", "MNT"): 0.5},
        "errors": {("NFS3", "READ", "NOENT"): 2},
        "bytes_read": 4096,
        "bytes_written": 8192,
        "drc": drc.stats(),
        "busy_poll": {"window_seconds": 1e-4, "windows": 7, "hits": 40, "misses": 3, "skipped": 2,
                      "seconds": 0.125},
    }
    live = LiveApi(tmp_path / "data", nfs_stats=lambda: nfs_stats).start()
    try:
        with live.client(token=None) as anonymous:
            families = scrape(anonymous)
    finally:
        live.stop()
    assert sample_value(families["acmenfs_nfs_calls"], program="NFS3", procedure="READ") == 5
    assert sample_value(families["acmenfs_nfs_calls"], program="MOUNT3", procedure="MNT") == 1
    duration = families["acmenfs_nfs_call_duration_seconds"]
    assert [s.value for s in duration.samples if s.name.endswith("_sum") and s.labels["procedure"] == "READ"] == [0.25]
    assert sample_value(families["acmenfs_nfs_call_errors"], procedure="READ", status="NOENT") == 2
    assert sample_value(families["acmenfs_nfs_read_bytes"]) == 4096
    assert sample_value(families["acmenfs_nfs_written_bytes"]) == 8192
    stats = drc.stats()
    assert sample_value(families["acmenfs_drc_checks"]) == stats.checks
    assert sample_value(families["acmenfs_drc_max_entries"]) == stats.max_entries
    assert sample_value(families["acmenfs_drc_lifetime_seconds"]) == stats.lifetime
    assert sample_value(families["acmenfs_nfs_busy_poll_windows"]) == 7
    assert sample_value(families["acmenfs_nfs_busy_poll_hits"]) == 40
    assert sample_value(families["acmenfs_nfs_busy_poll_misses"]) == 3
    assert sample_value(families["acmenfs_nfs_busy_poll_skipped"]) == 2
    assert sample_value(families["acmenfs_nfs_busy_poll_seconds"]) == 0.125
    assert sample_value(families["acmenfs_nfs_busy_poll_window_seconds"]) == 1e-4


def test_metrics_survive_a_failing_source(live_api):
    live_api.service.close()  # the pool source needs the store; the others do not
    with live_api.client(token=None) as anonymous:
        families = scrape(anonymous)
    up = {s.labels["source"]: s.value for s in families["acmenfs_metrics_source_up"].samples}
    assert up["pool"] == 0 and up["http"] == 1 and up["nfs"] == 1
    assert "acmenfs_http_requests" in families
