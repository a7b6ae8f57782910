"""Callbacks from n8n: `/internal/update-status` and `/internal/log-error`."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.base import callback_token
from commands.execution import start_execution
from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

SECRET = "n8n-internal-secret"


@pytest.fixture
def harness_options() -> dict[str, Any]:
    return {"internal_secret": SECRET}


@pytest.fixture
def running(api: Harness) -> dict[str, Any]:
    """A callback-mode execution that has started (debited), as n8n sees it."""
    token = api.user("owner@example.com")
    api.organization(token, "acme")
    workflow = api.workflow(token, "https://n8n.invalid/webhook/x", response_mode="callback",
                            credits_per_execution=5)  # fmt: skip
    path = f"/api/v1/workflows/{workflow['id']}/execute"
    execution_id = api.call("POST", path, token, json={"input": {}}).json["execution_id"]
    start_execution(api.app, UUID(execution_id), "test")
    key = api.deps.settings.jwt_key
    return {"id": execution_id, "token": token, "callback": callback_token(key, UUID(execution_id))}


def _status(api: Harness, running: dict[str, Any], body: dict[str, Any], **headers: str) -> Any:
    headers = headers or {"X-Callback-Token": running["callback"]}
    body = {"execution_id": running["id"], **body}
    return api.call("POST", "/api/v1/internal/update-status", json=body, headers=headers)


def _balance(api: Harness, running: dict[str, Any]) -> int:
    return api.call("GET", "/api/v1/credits/balance", running["token"]).json["balance"]


def test_completes_an_execution_with_its_data(api: Harness, running: dict[str, Any]) -> None:
    body = {"status": "completed", "data": {"result": 42}, "execution_time_ms": 120}
    result = _status(api, running, body)
    assert result.status_code == 200
    assert result.json == {"execution_id": running["id"], "status": "completed"}
    execution = api.call("GET", f"/api/v1/executions/{running['id']}", running["token"]).json
    assert execution["output"] == {"result": 42} and execution["duration_ms"] == 120
    assert _balance(api, running) == 95


def test_the_same_terminal_status_again_changes_nothing(
    api: Harness, running: dict[str, Any]
) -> None:
    _status(api, running, {"status": "completed", "data": {}})
    with api.nothing_written():
        result = _status(api, running, {"status": "completed", "data": {"other": 1}})
    assert result.status_code == 200 and result.json["status"] == "completed"


def test_another_status_after_the_terminal_one_is_409(
    api: Harness, running: dict[str, Any]
) -> None:
    _status(api, running, {"status": "completed", "data": {}})
    with api.nothing_written():
        result = _status(api, running, {"status": "failed", "error": {"message": "late"}})
    assert_error(result, 409, "EXECUTION_FINISHED")


def test_a_failed_status_refunds(api: Harness, running: dict[str, Any]) -> None:
    result = _status(api, running, {"status": "failed", "error": {"message": "boom"}})
    assert result.status_code == 200 and result.json["status"] == "failed"
    assert _balance(api, running) == 100


def test_running_is_acknowledged(api: Harness, running: dict[str, Any]) -> None:
    result = _status(api, running, {"status": "running"})
    assert result.status_code == 200 and result.json["status"] == "running"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Callback-Token": "wrong"}, {"X-N8N-Internal-Auth": "wrong"}],
)
def test_callbacks_without_the_token_are_401_and_write_nothing(
    api: Harness, running: dict[str, Any], headers: dict[str, str]
) -> None:
    body = {"execution_id": running["id"], "status": "completed", "data": {}}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/internal/update-status", json=body, headers=headers)
    assert_error(result, 401, "UNAUTHORIZED")


def test_a_token_of_another_execution_is_401(api: Harness, running: dict[str, Any]) -> None:
    other = callback_token(api.deps.settings.jwt_key, UUID("00000000-0000-4000-8000-000000000000"))
    with api.nothing_written():
        result = _status(api, running, {"status": "completed"}, **{"X-Callback-Token": other})
    assert_error(result, 401, "UNAUTHORIZED")


def test_the_internal_secret_is_accepted(api: Harness, running: dict[str, Any]) -> None:
    result = _status(api, running, {"status": "completed"}, **{"X-N8N-Internal-Auth": SECRET})
    assert result.status_code == 200


def test_an_unknown_execution_is_404(api: Harness, running: dict[str, Any]) -> None:
    body = {"execution_id": "00000000-0000-4000-8000-000000000000", "status": "completed"}
    headers = {"X-N8N-Internal-Auth": SECRET}
    result = api.call("POST", "/api/v1/internal/update-status", json=body, headers=headers)
    assert_error(result, 404, "NOT_FOUND")


def test_invalid_callbacks_are_422(api: Harness, running: dict[str, Any]) -> None:
    with api.nothing_written():
        result = _status(api, running, {"status": "exploded"})
    assert [
        f["field"] for f in assert_error(result, 422, "VALIDATION_ERROR")["details"]["fields"]
    ] == ["status"]


def test_log_error_fails_the_execution_and_refunds(api: Harness, running: dict[str, Any]) -> None:
    body = {"execution_id": running["id"], "error_type": "NodeError", "error_message": "bad node",
            "stack_trace": "at node 3"}  # fmt: skip
    headers = {"X-Callback-Token": running["callback"]}
    result = api.call("POST", "/api/v1/internal/log-error", json=body, headers=headers)
    assert result.status_code == 200 and result.json["status"] == "failed"
    execution = api.call("GET", f"/api/v1/executions/{running['id']}", running["token"]).json
    assert execution["error"]["message"] == "bad node"
    assert _balance(api, running) == 100
    with api.nothing_written():
        again = api.call("POST", "/api/v1/internal/log-error", json=body, headers=headers)
    assert again.status_code == 200 and again.json["status"] == "failed"


def test_log_error_needs_the_token(api: Harness, running: dict[str, Any]) -> None:
    body = {"execution_id": running["id"], "error_type": "E", "error_message": "m"}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/internal/log-error", json=body)
    assert_error(result, 401, "UNAUTHORIZED")


def test_callbacks_without_a_secret_configured_accept_only_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path) as api:
        body = {"execution_id": "00000000-0000-4000-8000-000000000000", "status": "completed"}
        headers = {"X-N8N-Internal-Auth": ""}
        result = api.call("POST", "/api/v1/internal/update-status", json=body, headers=headers)
        assert_error(result, 401, "UNAUTHORIZED")
