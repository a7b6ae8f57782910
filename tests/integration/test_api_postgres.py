"""The API on PostgreSQL: the same answers as on SQLite, idempotency keys included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowledger.settings import Settings
from tests.support.fake_n8n import FakeN8n
from tests.unit.test_api_harness import Harness, assert_error, fast_passwords


@pytest.fixture
def api(
    pg_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    fast_passwords(monkeypatch)
    overrides = {"database_url": pg_settings.database_url, "jwt_secret": pg_settings.jwt_secret}
    with Harness.start(tmp_path, **overrides) as harness:
        yield harness


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    return api.tenant(f"acme-{suffix}", f"owner-{suffix}@example.com")


def test_runs_a_workflow_and_reads_it_back(api: Harness, acme: dict[str, Any]) -> None:
    with FakeN8n() as n8n:
        workflow = api.workflow(acme["token"], n8n.webhook_url("sync"))
        body = {"workflow_id": workflow["id"], "data": {"n": 1}}
        result = api.call("POST", "/api/v1/execute", acme["token"], json=body)
    assert result.status_code == 200, result.text
    assert result.json["credits_remaining"] == 99
    path = f"/api/v1/executions/{result.json['execution_id']}"
    assert api.call("GET", path, acme["token"]).json["status"] == "completed"
    assert api.call("GET", f"/api/v1/workflows/{workflow['id']}", acme["token"]).json == {
        **workflow,
        "execution_count": 1,
        "last_executed_at": api.call("GET", path, acme["token"]).json["queued_at"],
    }


def test_idempotency_keys_replay_and_refuse_reuse(api: Harness, acme: dict[str, Any]) -> None:
    headers = {"Idempotency-Key": "pg-key"}
    body = {"name": "w", "webhook_url": "https://n8n.example.com/w"}
    first = api.call("POST", "/api/v1/workflows", acme["token"], json=body, headers=headers)
    again = api.call("POST", "/api/v1/workflows", acme["token"], json=body, headers=headers)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    other = api.call("POST", "/api/v1/workflows", acme["token"], json={**body, "name": "x"},
                     headers=headers)  # fmt: skip
    assert_error(other, 409, "IDEMPOTENCY_KEY_REUSED")


def test_health_checks_postgres(api: Harness) -> None:
    result = api.call("GET", "/health")
    assert result.status_code == 200 and result.json["checks"]["database"] == "ok"
