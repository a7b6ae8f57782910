"""`/webhooks/endpoints` and `/webhooks/deliveries` through the API (embedded, SQLite)."""

from __future__ import annotations

from uuid import UUID

import pytest

from commands.webhook import note_endpoint_outcome, record_delivery_attempt
from events.webhook_endpoint import WebhookEndpoint
from tests.unit.test_api_harness import Harness, assert_error

ENDPOINTS = "/api/v1/webhooks/endpoints"
DELIVERIES = "/api/v1/webhooks/deliveries"


@pytest.fixture
def owner(api: Harness) -> str:
    token = api.user("owner@example.com")
    api.organization(token, "acme")
    return token


def create(api: Harness, token: str, **fields: object) -> dict:
    body = {"url": "https://hooks.example.com/in", "event_types": ["*"], **fields}
    result = api.call("POST", ENDPOINTS, token, json=body)
    assert result.status_code == 201, result.text
    return result.json


def test_creates_an_endpoint_and_shows_the_secret_once(api: Harness, owner: str) -> None:
    created = create(api, owner, event_types=["execution.completed"], description="crm")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["is_active"] is True and created["max_attempts"] == 4
    got = api.call("GET", f"{ENDPOINTS}/{created['id']}", owner).json
    assert "secret" not in got and got["event_types"] == ["execution.completed"]
    listed = api.call("GET", ENDPOINTS, owner).json
    assert listed["total"] == 1 and "secret" not in listed["items"][0]
    assert listed["items"][0]["id"] == created["id"]


def test_rejects_bad_urls_types_and_attempts(api: Harness, owner: str) -> None:
    for body in (
        {"url": "ftp://x.example.com", "event_types": ["*"]},
        {"url": "https://x.example.com", "event_types": ["nope.never"]},
        {"url": "https://x.example.com", "event_types": []},
        {"url": "https://x.example.com", "event_types": ["*"], "max_attempts": 11},
        {"url": "https://x.example.com", "event_types": ["*"], "extra": 1},
    ):
        with api.nothing_written():
            assert_error(api.call("POST", ENDPOINTS, owner, json=body), 422, "VALIDATION_ERROR")


def test_is_admin_only(api: Harness, owner: str) -> None:
    org = api.call("GET", "/api/v1/organizations", owner).json["items"][0]
    member = api.member(owner, org, "m@example.com", "member")
    assert_error(api.call("GET", ENDPOINTS, member), 403, "FORBIDDEN")
    assert_error(api.call("GET", DELIVERIES, member), 403, "FORBIDDEN")
    body = {"url": "https://x.example.com", "event_types": ["*"]}
    assert_error(api.call("POST", ENDPOINTS, member, json=body), 403, "FORBIDDEN")


def test_another_organizations_endpoint_is_not_found(api: Harness, owner: str) -> None:
    created = create(api, owner)
    other = api.user("other@example.com")
    api.organization(other, "globex")
    assert_error(api.call("GET", f"{ENDPOINTS}/{created['id']}", other), 404, "NOT_FOUND")
    assert_error(api.call("DELETE", f"{ENDPOINTS}/{created['id']}", other), 404, "NOT_FOUND")


def test_patches_rotates_and_archives(api: Harness, owner: str) -> None:
    created = create(api, owner)
    path = f"{ENDPOINTS}/{created['id']}"
    patched = api.call("PATCH", path, owner, json={"max_attempts": 2, "is_active": False})
    assert patched.status_code == 200, patched.text
    assert patched.json["max_attempts"] == 2 and patched.json["is_active"] is False
    rotated = api.call("POST", f"{path}/rotate-secret", owner)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json["secret"].startswith("whsec_")
    assert rotated.json["secret"] != created["secret"]
    assert api.call("DELETE", path, owner).status_code == 204
    assert_error(api.call("GET", path, owner), 404, "NOT_FOUND")
    assert api.call("GET", ENDPOINTS, owner).json["total"] == 0


def test_a_test_ping_is_a_pending_delivery_in_the_log(api: Harness, owner: str) -> None:
    created = create(api, owner)
    result = api.call("POST", f"{ENDPOINTS}/{created['id']}/test", owner)
    assert result.status_code == 202, result.text
    assert result.json["event"] == "webhook.test"
    assert api.deps.settle("webhook_deliveries")
    page = api.call("GET", DELIVERIES, owner, params={"endpoint_id": created["id"]}).json
    [item] = page["items"]
    assert item["id"] == result.json["delivery_id"] and item["status"] == "pending"
    assert item["event_type"] == "webhook.test" and item["attempts"] == []
    assert set(item) >= {"id", "endpoint_id", "event_id", "event_type", "status", "attempts"}
    filtered = api.call("GET", DELIVERIES, owner, params={"status": "failed"}).json
    assert filtered["total"] == 0
    assert_error(api.call("GET", DELIVERIES, owner, params={"status": "odd"}), 400, "BAD_REQUEST")


def dead_delivery(api: Harness, owner: str) -> tuple[dict, str]:
    """An endpoint with one dead (failed) test delivery; its id."""
    from datetime import UTC, datetime

    created = create(api, owner, max_attempts=1)
    delivery_id = api.call("POST", f"{ENDPOINTS}/{created['id']}/test", owner).json["delivery_id"]
    record_delivery_attempt(
        api.app,
        UUID(delivery_id),
        at=datetime.now(UTC),
        status_code=500,
        duration_ms=12,
        error="HTTP 500",
        next_attempt_at=None,
    )
    assert api.deps.settle("webhook_deliveries")
    return created, delivery_id


def test_lists_every_attempt_and_redelivers_a_dead_delivery(api: Harness, owner: str) -> None:
    _, delivery_id = dead_delivery(api, owner)
    [item] = api.call("GET", DELIVERIES, owner, params={"status": "failed"}).json["items"]
    assert item["attempts"][0]["status_code"] == 500 and item["attempts"][0]["duration_ms"] == 12
    assert item["attempts"][0]["error"] == "HTTP 500" and item["next_attempt_at"] is None
    result = api.call("POST", f"{DELIVERIES}/{delivery_id}/redeliver", owner)
    assert result.status_code == 202, result.text
    assert api.deps.settle("webhook_deliveries")
    [again] = api.call("GET", DELIVERIES, owner).json["items"]
    assert again["status"] == "pending" and len(again["attempts"]) == 1
    missing = f"{DELIVERIES}/00000000-0000-0000-0000-000000000000/redeliver"
    assert_error(api.call("POST", missing, owner), 404, "NOT_FOUND")


def test_the_deliveries_log_appends_each_attempt_in_order(api: Harness, owner: str) -> None:
    from datetime import UTC, datetime

    _, delivery_id = dead_delivery(api, owner)
    assert api.call("POST", f"{DELIVERIES}/{delivery_id}/redeliver", owner).status_code == 202
    record_delivery_attempt(
        api.app,
        UUID(delivery_id),
        at=datetime.now(UTC),
        status_code=204,
        duration_ms=3,
        error=None,
        next_attempt_at=None,
    )
    assert api.deps.settle("webhook_deliveries")
    [item] = api.call("GET", DELIVERIES, owner).json["items"]
    assert item["status"] == "succeeded" and item["next_attempt_at"] is None
    assert [(a["status_code"], a["error"]) for a in item["attempts"]] == [
        (500, "HTTP 500"),
        (204, None),
    ]
    assert set(item["attempts"][1]) == {"at", "status_code", "duration_ms", "error"}


def test_recover_resends_failed_deliveries_since_a_time(api: Harness, owner: str) -> None:
    endpoint, _ = dead_delivery(api, owner)
    path = f"{ENDPOINTS}/{endpoint['id']}/recover"
    later = api.call("POST", path, owner, json={"since": "2999-01-01T00:00:00Z"})
    assert later.status_code == 202 and later.json == {"redelivered": 0}
    result = api.call("POST", path, owner, json={"since": "2020-01-01T00:00:00Z"})
    assert result.status_code == 202, result.text
    assert result.json == {"redelivered": 1}
    assert_error(
        api.call("POST", path, owner, json={"since": "yesterday"}), 422, "VALIDATION_ERROR"
    )


def test_an_endpoint_failing_everything_for_24_hours_is_disabled(api: Harness, owner: str) -> None:
    from datetime import UTC, datetime, timedelta

    created = create(api, owner)
    endpoint_id = UUID(created["id"])
    start = datetime.now(UTC)
    note_endpoint_outcome(api.app, endpoint_id, succeeded=False, now=start)
    note_endpoint_outcome(api.app, endpoint_id, succeeded=False, now=start + timedelta(hours=23))
    assert api.app.repository.get(endpoint_id).is_active
    note_endpoint_outcome(api.app, endpoint_id, succeeded=True, now=start + timedelta(hours=23))
    note_endpoint_outcome(api.app, endpoint_id, succeeded=False, now=start + timedelta(hours=24))
    assert api.app.repository.get(endpoint_id).is_active  # the streak restarted
    note_endpoint_outcome(api.app, endpoint_id, succeeded=False, now=start + timedelta(hours=48))
    endpoint = api.app.repository.get(endpoint_id)
    assert isinstance(endpoint, WebhookEndpoint) and not endpoint.is_active
    assert api.deps.settle("webhook_deliveries")
    got = api.call("GET", f"{ENDPOINTS}/{created['id']}", owner).json
    assert got["is_active"] is False


def test_the_recovery_sweep_resends_only_long_overdue_deliveries(api: Harness, owner: str) -> None:
    from datetime import UTC, datetime, timedelta

    from workers.webhooks import sweep_deliveries

    created = create(api, owner)
    result = api.call("POST", f"{ENDPOINTS}/{created['id']}/test", owner)
    assert api.deps.settle("webhook_deliveries")
    assert sweep_deliveries(api.app) == []
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert sweep_deliveries(api.app, now=later) == [result.json["delivery_id"]]
