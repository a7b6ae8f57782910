"""Synchronous execution over real HTTP: the API calls a fake n8n through the real
`workers.execution.run_inline`, and n8n's callbacks come back to the API's own server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_n8n import FakeN8n, verify_signature
from tests.unit.test_api_harness import Harness, assert_error, dumps, fast_passwords, signed


@pytest.fixture
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n(callback_delay=0.1, slow_seconds=3) as server:
        yield server


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path, serve=True) as harness:
        yield harness


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    return api.tenant("acme")


def _execute(api: Harness, org: dict[str, Any], workflow: dict[str, Any], **body: Any) -> Any:
    body = {"workflow_id": workflow["id"], "data": {"n": 1}, **body}
    return api.call("POST", "/api/v1/execute", org["token"], json=body)


def test_a_sync_workflow_answers_its_output(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("sync"), credits_per_execution=3)
    result = _execute(api, acme, workflow)
    assert result.status_code == 200, result.text
    body = result.json
    assert body["success"] is True and body["status"] == "completed"
    assert body["data"] == {"result": "ok", "echo": {"n": 1}}
    assert body["credits_used"] == 3 and body["credits_remaining"] == 97
    assert isinstance(body["execution_time_ms"], int)
    [request] = n8n.requests_for("/webhook/sync")
    assert verify_signature(request, acme["client_secret"])
    assert request.body["callback"]["status_url"] == f"{api.url}/api/v1/internal/update-status"
    execution = api.call("GET", f"/api/v1/executions/{body['execution_id']}", acme["token"]).json
    assert execution["status"] == "completed" and execution["credits_used"] == 3


def test_an_n8n_error_is_502_with_the_execution_and_refunds(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("fail"))
    error = assert_error(_execute(api, acme, workflow), 502, "N8N_ERROR")
    execution_id = error["details"]["execution_id"]
    execution = api.call("GET", f"/api/v1/executions/{execution_id}", acme["token"]).json
    assert execution["status"] == "failed" and execution["error"]["status"] == 500
    assert api.call("GET", "/api/v1/credits/balance", acme["token"]).json["balance"] == 100


def test_retries_a_flaky_workflow_before_answering(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    retry = {"max_retries": 3, "backoff_seconds": 0.01}
    workflow = api.workflow(acme["token"], n8n.webhook_url("flaky"), retry=retry)
    result = _execute(api, acme, workflow)
    assert result.status_code == 200, result.text
    execution = api.call("GET", f"/api/v1/executions/{result.json['execution_id']}", acme["token"])
    assert execution.json["attempts"] == 3


def test_a_run_past_its_timeout_is_504_with_the_execution(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("slow"))
    started = time.monotonic()
    error = assert_error(_execute(api, acme, workflow, timeout_override=1), 504, "GATEWAY_TIMEOUT")
    assert time.monotonic() - started < 2.5
    assert error["details"]["execution_id"]


def test_a_callback_mode_run_waits_for_n8ns_callback(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("callback"), response_mode="callback")
    result = _execute(api, acme, workflow)
    assert result.status_code == 200, result.text
    assert result.json["status"] == "completed" and result.json["credits_remaining"] == 99
    [callback] = n8n.wait_for_callbacks(1)
    assert callback["status_code"] == 200


def test_a_failing_callback_is_502(api: Harness, acme: dict[str, Any], n8n: FakeN8n) -> None:
    url = n8n.webhook_url("callbackfail")
    workflow = api.workflow(acme["token"], url, response_mode="callback")
    assert_error(_execute(api, acme, workflow), 502, "N8N_ERROR")


def test_execute_with_wait_answers_like_execute(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("sync"))
    path = f"/api/v1/workflows/{workflow['id']}/execute"
    result = api.call("POST", path, acme["token"], json={"input": {"x": 2}, "wait": True})
    assert result.status_code == 200 and result.json["data"]["echo"] == {"x": 2}


def test_a_signed_api_key_request_runs_a_workflow(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("sync"))
    raw = dumps({"workflow_id": workflow["id"], "data": {"k": "v"}})
    headers = {"X-API-Key": acme["api_key"], "Content-Type": "application/json",
               **signed(acme["client_secret"], raw)}  # fmt: skip
    result = api.call("POST", "/api/v1/execute", body=raw, headers=headers)
    assert result.status_code == 200 and result.json["data"]["echo"] == {"k": "v"}


def test_two_runs_cannot_spend_the_same_credit(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("sync"), credits_per_execution=60)
    results: list[int] = []

    def run() -> None:
        results.append(_execute(api, acme, workflow).status_code)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [200, 402]
    assert api.call("GET", "/api/v1/credits/balance", acme["token"]).json["balance"] == 40


def test_the_stream_follows_a_run_to_its_end(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    n8n.callback_delay = 0.5
    workflow = api.workflow(acme["token"], n8n.webhook_url("callback"), response_mode="callback")
    events: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {acme['token']}"}

    def run() -> None:
        time.sleep(0.2)
        _execute(api, acme, workflow)

    runner = threading.Thread(target=run)
    runner.start()
    execution_id = None
    while execution_id is None:
        listed = api.call("GET", "/api/v1/executions", acme["token"]).json["items"]
        execution_id = listed[0]["id"] if listed else time.sleep(0.01)
    url = f"{api.url}/api/v1/executions/{execution_id}/stream"
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    runner.join(10)
    statuses = [event["status"] for event in events]
    assert statuses[-1] == "completed" and "running" in statuses
    assert len(events) >= 2 and events[-1]["output"] == {"result": "called back"}
