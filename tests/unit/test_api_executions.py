"""`/workflows/{id}/execute` (async) and `/executions`: queue, list, read, cancel, retry,
stream. Nothing here calls n8n (no worker runs); see tests/integration/test_api_execute.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_api_harness import Harness, assert_error

URL = "https://n8n.invalid/webhook/never-called"
EXECUTION_FIELDS = {"id", "workflow_id", "status", "input", "metadata", "output", "error",
                    "credits_used", "attempts", "retry_of", "trigger", "queued_at", "started_at",
                    "finished_at", "duration_ms", "logs"}  # fmt: skip


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    token = api.user("owner@example.com")
    org = api.organization(token, "acme")
    return {**org, "token": token, "workflow": api.workflow(token, URL)}


def _queue(api: Harness, org: dict[str, Any], body: dict[str, Any] | None = None) -> Any:
    path = f"/api/v1/workflows/{org['workflow']['id']}/execute"
    return api.call("POST", path, org["token"], json={"input": {"n": 1}} if body is None else body)


def _item(execution_id: str, rest: str = "") -> str:
    return f"/api/v1/executions/{execution_id}{rest}"


# -- queue ------------------------------------------------------------------------------------


def test_queues_an_execution(api: Harness, acme: dict[str, Any]) -> None:
    result = _queue(api, acme, {"input": {"n": 1}, "metadata": {"source": "test"}})
    assert result.status_code == 202
    assert set(result.json) == {"execution_id", "status", "queued_at"}
    assert result.json["status"] == "queued"
    execution = api.call("GET", _item(result.json["execution_id"]), acme["token"]).json
    assert set(execution) == EXECUTION_FIELDS
    assert execution["input"] == {"n": 1} and execution["metadata"] == {"source": "test"}
    assert execution["trigger"] == "api" and execution["status"] == "queued"


def test_an_api_key_queues_executions(api: Harness, acme: dict[str, Any]) -> None:
    path = f"/api/v1/workflows/{acme['workflow']['id']}/execute"
    result = api.call("POST", path, json={"input": {}}, headers={"X-API-Key": acme["api_key"]})
    assert result.status_code == 202


def test_a_visibly_short_balance_is_402_and_writes_nothing(
    api: Harness, acme: dict[str, Any]
) -> None:
    pricey = api.workflow(acme["token"], URL, credits_per_execution=101)
    with api.nothing_written():
        result = api.call("POST", f"/api/v1/workflows/{pricey['id']}/execute", acme["token"],
                          json={"input": {}})  # fmt: skip
    error = assert_error(result, 402, "INSUFFICIENT_CREDITS")
    assert error["details"] == {"credits_required": 101, "credits_available": 100}


def test_input_failing_the_schema_is_422_before_anything_is_charged(
    api: Harness, acme: dict[str, Any]
) -> None:
    schema = {"type": "object", "required": ["email"],
              "properties": {"email": {"type": "string"}}}  # fmt: skip
    strict = api.workflow(acme["token"], URL, input_schema=schema)
    path = f"/api/v1/workflows/{strict['id']}/execute"
    with api.nothing_written():
        result = api.call("POST", path, acme["token"], json={"input": {"email": 5}})
    fields = assert_error(result, 422, "VALIDATION_ERROR")["details"]["fields"]
    assert fields[0]["field"] == "input.email"
    ok = api.call("POST", path, acme["token"], json={"input": {"email": "a@b.c"}})
    assert ok.status_code == 202


@pytest.mark.parametrize(
    "body",
    [{"input": [1]}, {"input": {}, "timeout_override": 601}, {"input": {}, "priority": "high"}],
)
def test_execute_bodies_are_validated(
    api: Harness, acme: dict[str, Any], body: dict[str, Any]
) -> None:
    with api.nothing_written():
        assert_error(_queue(api, acme, body), 422, "VALIDATION_ERROR")


def test_another_organizations_workflow_cannot_be_run(api: Harness, acme: dict[str, Any]) -> None:
    stranger = api.user("stranger@example.com")
    api.organization(stranger, "globex")
    path = f"/api/v1/workflows/{acme['workflow']['id']}/execute"
    with api.nothing_written():
        assert_error(api.call("POST", path, stranger, json={"input": {}}), 404, "NOT_FOUND")


def test_sync_execute_of_an_unknown_workflow_is_404(api: Harness, acme: dict[str, Any]) -> None:
    body = {"workflow_id": "00000000-0000-4000-8000-000000000000", "data": {}}
    with api.nothing_written():
        assert_error(
            api.call("POST", "/api/v1/execute", acme["token"], json=body), 404, "NOT_FOUND"
        )


def test_sync_execute_needs_credentials_and_a_valid_body(
    api: Harness, acme: dict[str, Any]
) -> None:
    body = {"workflow_id": acme["workflow"]["id"], "data": {}}
    assert_error(api.call("POST", "/api/v1/execute", json=body), 401, "UNAUTHORIZED")
    with api.nothing_written():
        bad = api.call("POST", "/api/v1/execute", acme["token"], json={"data": {}})
    assert [
        f["field"] for f in assert_error(bad, 422, "VALIDATION_ERROR")["details"]["fields"]
    ] == ["workflow_id"]


# -- read -------------------------------------------------------------------------------------


def test_lists_filter_by_workflow_status_and_time(api: Harness, acme: dict[str, Any]) -> None:
    first = _queue(api, acme).json
    other = api.workflow(acme["token"], URL, name="Other")
    api.call("POST", f"/api/v1/workflows/{other['id']}/execute", acme["token"], json={"input": {}})
    api.call("POST", _item(first["execution_id"], "/cancel"), acme["token"])

    def ids(query: str) -> list[str]:
        result = api.call("GET", f"/api/v1/executions?{query}", acme["token"])
        assert result.status_code == 200, result.text
        return [e["id"] for e in result.json["items"]]

    assert len(ids("")) == 2
    assert ids(f"workflow_id={acme['workflow']['id']}") == [first["execution_id"]]
    assert ids("status=cancelled") == [first["execution_id"]]
    assert ids(f"from={first['queued_at']}&to=2999-01-01T00:00:00Z") != []
    assert ids("to=2000-01-01T00:00:00Z") == []
    for query in ("status=exploded", "from=yesterday", "workflow_id=nope", "limit=500"):
        assert_error(
            api.call("GET", f"/api/v1/executions?{query}", acme["token"]), 400, "BAD_REQUEST"
        )


def test_another_organizations_execution_is_404(api: Harness, acme: dict[str, Any]) -> None:
    execution_id = _queue(api, acme).json["execution_id"]
    stranger = api.user("stranger@example.com")
    api.organization(stranger, "globex")
    for method, rest in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry"), ("GET", "/stream")):
        with api.nothing_written():
            assert_error(api.call(method, _item(execution_id, rest), stranger), 404, "NOT_FOUND")
    assert api.call("GET", "/api/v1/executions", stranger).json["total"] == 0


def test_an_unknown_execution_is_404(api: Harness, acme: dict[str, Any]) -> None:
    path = _item("00000000-0000-4000-8000-000000000000")
    assert_error(api.call("GET", path, acme["token"]), 404, "NOT_FOUND")


def test_reading_executions_needs_credentials(api: Harness, acme: dict[str, Any]) -> None:
    assert_error(api.call("GET", "/api/v1/executions"), 401, "UNAUTHORIZED")


# -- cancel and retry -------------------------------------------------------------------------


def test_cancels_an_unfinished_execution_once(api: Harness, acme: dict[str, Any]) -> None:
    execution_id = _queue(api, acme).json["execution_id"]
    result = api.call("POST", _item(execution_id, "/cancel"), acme["token"])
    assert result.status_code == 200
    assert result.json["status"] == "cancelled" and result.json["finished_at"]
    with api.nothing_written():
        again = api.call("POST", _item(execution_id, "/cancel"), acme["token"])
    error = assert_error(again, 409, "EXECUTION_FINISHED")
    assert error["details"]["execution_id"] == execution_id


def test_input_shaped_like_the_stores_own_encoding_comes_back_as_sent(
    api: Harness, acme: dict[str, Any]
) -> None:
    """`{"_type_": ..., "_data_": ...}` is how the event store writes a UUID or a date; a
    client's own such object must not be read back as one (or break the execution)."""
    tricky = {
        "id": {"_type_": "uuid_hex", "_data_": "not-a-uuid"},
        "at": {"_type_": "datetime_iso", "_data_": "2027-01-01T00:00:00+00:00"},
        "deep": [{"_type_": "unknown", "_data_": {"_type_": "decimal_str", "_data_": "1"}}],
        "plain": {"_type_": "kind"},
    }
    execution_id = _queue(api, acme, {"input": tricky}).json["execution_id"]
    assert api.call("GET", _item(execution_id), acme["token"]).json["input"] == tricky
    retry = api.call("POST", _item(execution_id, "/retry"), acme["token"])  # loads it again
    assert retry.status_code == 202 and retry.json["input"] == tricky


def test_retry_queues_a_new_execution_with_the_same_input(
    api: Harness, acme: dict[str, Any]
) -> None:
    execution_id = _queue(api, acme, {"input": {"n": 7}, "metadata": {"m": 1}}).json["execution_id"]
    result = api.call("POST", _item(execution_id, "/retry"), acme["token"])
    assert result.status_code == 202
    retry = result.json
    assert retry["id"] != execution_id and retry["execution_id"] == retry["id"]
    assert retry["retry_of"] == execution_id and retry["input"] == {"n": 7}
    assert retry["status"] == "queued" and retry["trigger"] == "retry"


def test_auditors_cannot_cancel_or_retry(api: Harness, acme: dict[str, Any]) -> None:
    execution_id = _queue(api, acme).json["execution_id"]
    auditor = api.member(acme["token"], acme, "auditor@example.com", "auditor")
    assert api.call("GET", _item(execution_id), auditor).status_code == 200
    with api.nothing_written():
        for rest in ("/cancel", "/retry"):
            assert_error(api.call("POST", _item(execution_id, rest), auditor), 403, "FORBIDDEN")


# -- stream -----------------------------------------------------------------------------------


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_the_stream_of_a_finished_execution_sends_its_state_and_closes(
    api: Harness, acme: dict[str, Any]
) -> None:
    execution_id = _queue(api, acme).json["execution_id"]
    api.call("POST", _item(execution_id, "/cancel"), acme["token"])
    result = api.call("GET", _item(execution_id, "/stream"), acme["token"])
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/event-stream")
    [(event, data)] = _events(result.text)
    assert event == "execution" and data["id"] == execution_id and data["status"] == "cancelled"
