"""schemathesis against `/openapi.json`: generated requests to every operation of the app.

The app is the embedded one (SQLite, projections following in threads), called in-process
over WSGI; synchronous runs reach a real fake n8n over HTTP. Each operation gets a bounded
number of positive and negative examples, sent as the owner of an organization (a token with
its `org_id` claim; the owner is also a platform operator, so operator routes are reached
too), then as that organization's API key. Every answer must pass schemathesis' checks
`not_a_server_error`, `response_schema_conformance`, `status_code_conformance` and
`content_type_conformance`; the failures are collected and reported together.

Known ids (the organization, a workflow, an execution, an endpoint, an API key, a provider
key) replace the generated path parameters half of the time, so success paths are exercised
as well as 404s.
Two operations stream Server-Sent Events for as long as the client listens and are left
out here; tests/unit/test_api_executions.py and tests/integration cover them.

More examples per operation (default 12), e.g. before a release:
    FLOWLEDGER_SCHEMATHESIS_EXAMPLES=100 .venv/bin/python -m pytest \
        tests/unit/test_openapi_schemathesis.py
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.auth import issue_access_token
from tests.support.fake_n8n import FakeN8n
from tests.unit.test_api_harness import OPERATOR, Harness, assert_error

EXAMPLES = int(os.environ.get("FLOWLEDGER_SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
AUTH_HEADERS = ("authorization", "x-api-key", "x-timestamp", "x-signature", "x-tenant-id")
STREAMS = {"GET /api/v1/stream", "GET /api/v1/executions/{execution_id}/stream"}


@pytest.fixture
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture
def harness_options() -> dict[str, Any]:
    # Limits scaled up: the point is the answers' shapes, not 60 requests a minute.
    return {"rate_limit_scale": 1000}


def world(api: Harness, n8n: FakeN8n) -> dict[str, Any]:
    """An organization owned by the operator, with one of everything a path can name."""
    login = api.user(OPERATOR)
    org = api.organization(login, "acme")
    user_id = api.call("GET", "/api/v1/auth/me", login).json["id"]
    # The org_id claim picks the organization even after the run creates others.
    token = issue_access_token(api.deps.settings, UUID(user_id), UUID(org["id"]))
    workflow = api.workflow(token, n8n.webhook_url("sync"), timeout_seconds=5)
    queued = api.call("POST", f"/api/v1/workflows/{workflow['id']}/execute", token, json={})
    assert queued.status_code == 202, queued.text
    endpoint = api.call("POST", "/api/v1/webhooks/endpoints", token,
                        json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})  # fmt: skip
    assert endpoint.status_code == 201, endpoint.text
    key = api.call("POST", f"/api/v1/organizations/{org['id']}/api-keys", token)
    assert key.status_code == 201, key.text
    vault = api.call("POST", "/api/v1/keys", token, json={"provider": "openai",
                     "key_name": "main", "api_key": "sk-test-0123456789"})  # fmt: skip
    assert vault.status_code == 201, vault.text
    return {
        "token": token,
        "api_key": org["api_key"],
        "ids": {
            "org_id": org["id"],
            "workflow_id": workflow["id"],
            "aggregate_id": workflow["id"],  # /audit/aggregates/{id}: time travel
            "execution_id": queued.json["execution_id"],
            "endpoint_id": endpoint.json["id"],
            "key_id": key.json["id"],
            "provider_key_id": vault.json["id"],
        },
    }


class Run:
    """Sends the examples of every operation and keeps what failed and what was answered."""

    def __init__(self, api: Harness, credentials: dict[str, str], ids: dict[str, str]) -> None:
        self.schema = schemathesis.openapi.from_wsgi("/openapi.json", api.wsgi)
        self.credentials, self.ids = credentials, ids
        self.failures: dict[str, list[str]] = defaultdict(list)
        self.answers: Counter[tuple[str, int]] = Counter()
        self.sent = 0

    def operations(self) -> list[Any]:
        found = [result.ok() for result in self.schema.get_all_operations()]
        found = [op for op in found if op.label not in STREAMS]
        # What takes the known ids out of service goes last.
        return sorted(found, key=lambda op: op.method.upper() == "DELETE" or "activ" in op.path)

    def all(self, examples: int) -> None:
        for operation in self.operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                self.one(operation, mode, examples)

    def one(self, operation: Any, mode: GenerationMode, examples: int) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])  # fmt: skip
        def example(case: Any) -> None:
            self.sent += 1
            self.authenticate(case)
            if self.sent % 2:
                self.use_known_ids(case, operation.method.upper())
            response = case.call()
            self.answers[(operation.label, response.status_code)] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, FailureGroup) as failure:  # a group when several checks fail
                self.failures[f"{operation.label} [{mode.value}]"].append(str(failure)[:2000])

        try:
            example()
        except Unsatisfiable:
            # Nothing of this operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, operation.label

    def use_known_ids(self, case: Any, method: str) -> None:
        """The ids of `world` in the path (and `/execute`'s body), but a PATCH of the
        workflow, which could point its target anywhere."""
        for name in case.path_parameters or {}:
            known = name
            if name == "key_id" and "/api-keys/" not in case.operation.path:
                known = "provider_key_id"  # /keys/{key_id}: the vault's, not an API key
            if known in self.ids and not (method == "PATCH" and name == "workflow_id"):
                case.path_parameters[name] = self.ids[known]
        if isinstance(case.body, dict) and "workflow_id" in case.body and method == "POST":
            case.body["workflow_id"] = self.ids["workflow_id"]
        # A made-up key reused with another body is a 409 before anything runs.
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "idempotency-key"}

    def authenticate(self, case: Any) -> None:
        """Our credentials instead of the ones schemathesis made up from the security schemes."""
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in AUTH_HEADERS}
        case.headers = {**headers, **self.credentials}
        if case.cookies:
            case.cookies = {k: v for k, v in case.cookies.items() if k != "auth_token"}

    def report(self) -> str:
        lines = [f"{label}: {len(items)} failing, e.g.\n{items[0]}" for label, items in
                 sorted(self.failures.items())]  # fmt: skip
        return "\n\n".join(lines)


def test_every_answer_to_the_owner_matches_the_document(api: Harness, n8n: FakeN8n) -> None:
    setup = world(api, n8n)
    run = Run(api, {"Authorization": f"Bearer {setup['token']}"}, setup["ids"])
    run.all(EXAMPLES)
    assert not run.failures, run.report()
    assert run.sent >= len(run.operations()) * 2
    statuses = {status for (_, status) in run.answers}
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    succeeded = {label for (label, status), _ in run.answers.items() if status < 300}
    # The success paths were reached, not only the refusals.
    for label in ("POST /api/v1/workflows/{workflow_id}/execute", "POST /api/v1/execute",
                  "PATCH /api/v1/organizations/{org_id}", "POST /api/v1/events",
                  "GET /api/v1/executions/{execution_id}", "GET /api/v1/audit/log",
                  "GET /api/v1/audit/aggregates/{aggregate_id}/history"):  # fmt: skip
        assert label in succeeded, sorted(succeeded)


def test_every_answer_to_an_api_key_matches_the_document(api: Harness, n8n: FakeN8n) -> None:
    setup = world(api, n8n)
    run = Run(api, {"X-API-Key": setup["api_key"]}, setup["ids"])
    run.all(max(2, EXAMPLES // 3))
    assert not run.failures, run.report()
    succeeded = {label for (label, status), _ in run.answers.items() if status < 300}
    assert "GET /api/v1/credits/balance" in succeeded, sorted(succeeded)


# -- what schemathesis found, pinned -----------------------------------------------------------


def test_an_offset_past_the_databases_integers_is_a_400(api: Harness, acme: dict[str, Any]) -> None:
    for path in ("/api/v1/executions", "/api/v1/workflows", "/api/v1/credits/transactions"):
        result = api.call("GET", path, acme["token"], params={"offset": str(2**70)})
        assert_error(result, 400, "BAD_REQUEST")
    result = api.call("GET", "/api/v1/audit/log", acme["token"], params={"after": str(2**70)})
    assert_error(result, 400, "BAD_REQUEST")
    assert api.call("GET", "/api/v1/executions", acme["token"],
                    params={"offset": str(2**31 - 1)}).status_code == 200  # fmt: skip


def test_explicit_nulls_in_a_new_workflow_mean_the_defaults(
    api: Harness, acme: dict[str, Any]
) -> None:
    nulls = dict.fromkeys(("response_mode", "credits_per_execution", "timeout_seconds",
                           "retry", "trigger", "tags"))  # fmt: skip
    workflow = api.workflow(acme["token"], **nulls)
    assert workflow["response_mode"] == "sync" and workflow["timeout_seconds"] == 300
    assert workflow["credits_per_execution"] == 1 and workflow["trigger"] == {"type": "manual"}
    assert workflow["retry"] == {"max_retries": 0, "backoff_seconds": 2}
    assert workflow["tags"] == []
    queued = api.call("POST", f"/api/v1/workflows/{workflow['id']}/execute", acme["token"],
                      json={})  # fmt: skip
    assert queued.status_code == 202, queued.text
