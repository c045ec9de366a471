"""Contract tests from the OpenAPI document: schemathesis against a live ``acmenfs serve``.

Every operation gets schema-generated requests (valid and invalid) with every
schemathesis check on; a stateful walk follows the document's own links
(create share -> snapshot -> clone -> delete); deterministic probes send every
undocumented method (405 + Allow) and a non-JSON body (415) to every path.
Fixed seeds and few examples keep it short; answers are checked, not timed
(max_response_time off). schemathesis's pytest plugin does not run under
pytest 9, so hypothesis drives its strategies directly.

``ACMENFS_CONTRACT_URL`` and ``ACMENFS_CONTRACT_TOKEN`` point the tests at an
appliance that is already running instead of starting one.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks

from api_fixtures import ServeProcess

# A valid request may still be refused for reasons no schema can express: a name already
# taken (409), a size the pool cannot hold (507), a snapshot of another share (422).
CONFIG = """
[checks]
max_response_time = 0
positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "507"]
"""


# 422 codes that mean "the schema could have said so" (patterns, lengths), unlike invalid_size.
MALFORMED_CODES = {"invalid_name", "invalid_access"}
METHODS = {"get", "put", "post", "delete", "patch"}
STATEFUL_EXAMPLES = 12


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    if os.environ.get("ACMENFS_CONTRACT_URL"):
        yield SimpleNamespace(url=os.environ["ACMENFS_CONTRACT_URL"], token=os.environ["ACMENFS_CONTRACT_TOKEN"])
        return
    serve = ServeProcess(tmp_path_factory.mktemp("contract") / "data", nfs=False).start()
    try:
        yield serve
    finally:
        serve.stop()


@pytest.fixture(scope="module")
def contract_schema(appliance):
    config = schemathesis.Config.from_str(CONFIG)
    schema = schemathesis.openapi.from_url(f"{appliance.url}/openapi.json", config=config)
    schema.config.update(headers={"Authorization": f"Bearer {appliance.token}"})
    return schema


def all_checks() -> list:
    load_all_checks()
    return [check for check in CHECKS.get_all() if getattr(check, "__name__", "") != "max_response_time"]


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_keeps_its_contract(contract_schema, appliance, mode):
    checks = all_checks()
    headers = {"Authorization": f"Bearer {appliance.token}"}
    tested = []
    for operation in operations(contract_schema):

        @seed(11)
        @settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate], database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call_and_validate(headers=headers, checks=checks)
            if mode is GenerationMode.POSITIVE and response.status_code == 422:
                # the schema says what the server checks: input it accepts is never malformed
                assert response.json()["code"] not in MALFORMED_CODES, (case.as_curl_command(), response.text)

        try:
            check()
        except Unsatisfiable:
            # an operation without any input (GET /v1/pool) has no invalid request to make
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        tested.append(operation.label)
    assert len(tested) >= (20 if mode is GenerationMode.POSITIVE else 10), tested


def resolve(expression: str, body: dict):
    """An OpenAPI runtime expression of the form ``$response.body#/pointer`` against a JSON answer."""
    prefix = "$response.body#"
    assert expression.startswith(prefix), expression
    value = body
    for part in expression[len(prefix):].strip("/").split("/"):
        value = value[part]
    return value


def test_links_walk_share_snapshot_clone_delete(contract_schema, appliance):
    """Follow the document's links, as written, from each 201: create share -> snapshot -> clone -> delete.

    Request data comes from schemathesis (drawn up front, so a draw never depends on an
    answer), the ids from the link expressions; every answer goes through all checks.
    """
    checks = all_checks()
    headers = {"Authorization": f"Bearer {appliance.token}"}
    by_id = {operation.definition.raw["operationId"]: operation for operation in operations(contract_schema)}
    links = {op_id: op.definition.raw["responses"].get("201", {}).get("links", {}) for op_id, op in by_id.items()}
    chain = ["create_share", "create_snapshot", "clone_snapshot", "delete_snapshot", "delete_share"]
    reached: Counter[str] = Counter()

    def linked(data, source: str, answer: dict, target: str):
        """A generated case of ``target`` whose parameters come from ``source``'s link."""
        link = links[source][target]
        case = data.draw(by_id[target].as_strategy())
        for name, expression in link["parameters"].items():
            case.path_parameters[name] = resolve(expression, answer)
        return case

    def call(case) -> tuple[int, dict]:
        response = case.call_and_validate(headers=headers, checks=checks)
        reached[f"{case.operation.definition.raw['operationId']} {response.status_code}"] += 1
        return response.status_code, (response.json() if response.content else {})

    @seed(11)
    @settings(max_examples=STATEFUL_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(data=st.data())
    def walk(data):
        share_case = data.draw(by_id["create_share"].as_strategy())
        share_case.body["size"] = min(share_case.body["size"], 64 << 20)  # keep the pool and the run small
        status, share = call(share_case)
        if status != 201:
            return
        snapshot_status, snapshot = call(linked(data, "create_share", share, "create_snapshot"))
        if snapshot_status == 201:
            clone_status, clone = call(linked(data, "create_snapshot", snapshot, "clone_snapshot"))
            if clone_status == 201:
                call(linked(data, "clone_snapshot", clone, "get_share"))
                call(linked(data, "clone_snapshot", clone, "delete_share"))
            call(linked(data, "create_snapshot", snapshot, "delete_snapshot"))
        call(linked(data, "create_share", share, "delete_share"))

    walk()
    for step in chain:
        assert reached[f"{step} {201 if step.startswith('c') else 204}"], (step, dict(reached))


def test_every_path_answers_405_with_its_methods_and_415_for_non_json(contract_schema, appliance):
    """Deterministic probes of every documented path: undocumented methods and non-JSON bodies."""
    headers = {"Authorization": f"Bearer {appliance.token}"}
    paths = contract_schema.raw_schema["paths"]
    with httpx.Client(base_url=appliance.url, headers=headers, timeout=30) as client:
        for template, operations in paths.items():
            path = template.format(share_id=uuid.uuid4(), snapshot_id=uuid.uuid4(), token_id=uuid.uuid4())
            documented = {method.upper() for method in operations if method in METHODS}
            for method in sorted({m.upper() for m in METHODS} - documented):
                answer = client.request(method, path)
                assert answer.status_code == 405, (method, template, answer.text)
                assert set(answer.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == documented
            for method, operation in operations.items():
                if "requestBody" in operation:
                    answer = client.request(method.upper(), path, content=b"{}", headers={"Content-Type": "text/plain"})
                    assert answer.status_code == 415, (method, template, answer.text)
                    assert answer.headers["content-type"].startswith("application/problem+json")
