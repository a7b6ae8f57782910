"""`/keys` and `/internal/keys/{id}/secret` through the API (embedded, SQLite).

The clear key must never come back from `/keys`, reach a log line, or be written anywhere
in the database files in clear (events, snapshots, read models, idempotency answers).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from structlog.testing import capture_logs

from events.provider_key import ProviderKey
from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

KEYS = "/api/v1/keys"
SECRET = "n8n-internal-secret"
CLEAR = "sk-proj-CLEARTEXT-7f3a9c21e8b4d5"
INTERNAL = {"X-N8N-Internal-Auth": SECRET}


@pytest.fixture
def harness_options() -> dict[str, Any]:
    return {"internal_secret": SECRET}


def create(api: Harness, token: str, **fields: Any) -> dict[str, Any]:
    body = {"provider": "openai", "key_name": "Production", "api_key": CLEAR, **fields}
    result = api.call("POST", KEYS, token, json=body)
    assert result.status_code == 201, result.text
    return result.json


def secret(api: Harness, key_id: str, **headers: str) -> Any:
    return api.call("GET", f"/api/v1/internal/keys/{key_id}/secret", headers=headers or INTERNAL)


def usage(api: Harness, token: str, key_id: str, cost: float, **fields: Any) -> Any:
    body = {"requests_count": 2, "tokens_used": 300, "cost": cost, **fields}
    return api.call("POST", f"{KEYS}/{key_id}/usage", token, json=body)


def test_stores_a_key_and_shows_only_its_hint(api: Harness, acme: dict[str, Any]) -> None:
    created = create(
        api, acme["token"], models=["gpt-4", "gpt-4"], usage_limit_monthly=100.0,
        expires_at="2999-12-31T23:59:59Z",
    )  # fmt: skip
    assert created["key_hint"] == "..." + CLEAR[-4:]
    assert created["provider"] == "openai" and created["models"] == ["gpt-4"]
    assert created["is_active"] is True and created["usage_limit_monthly"] == 100.0
    assert created["expires_at"] == "2999-12-31T23:59:59.000Z"
    assert created["created_at"].endswith("Z") and UUID(created["id"])
    listed = api.call("GET", KEYS, acme["token"]).json
    assert listed["total"] == 1 and listed["limit"] == 50 and listed["offset"] == 0
    [item] = listed["items"]
    assert item == {**created, "usage_current": 0.0, "last_used_at": None}
    assert CLEAR not in str(created) + str(listed)


def test_refuses_bad_bodies_with_the_fields_and_writes_nothing(
    api: Harness, acme: dict[str, Any]
) -> None:
    good = {"provider": "openai", "key_name": "k", "api_key": CLEAR}
    cases = {
        "provider": {**good, "provider": "Open AI"},
        "key_name": {**good, "key_name": ""},
        "api_key": {**good, "api_key": "short"},
        "usage_limit_monthly": {**good, "usage_limit_monthly": 0},
        "expires_at": {**good, "expires_at": "2001-01-01T00:00:00Z"},
        "models.0": {**good, "models": [""]},
        "extra": {**good, "extra": 1},
    }
    for field, body in cases.items():
        with api.nothing_written():
            result = api.call("POST", KEYS, acme["token"], json=body)
        error = assert_error(result, 422, "VALIDATION_ERROR")
        assert field in [f["field"] for f in error["details"]["fields"]], (field, error)
        assert CLEAR not in result.text
    spaced = {**good, "api_key": CLEAR + " tail"}
    result = api.call("POST", KEYS, acme["token"], json=spaced)
    assert_error(result, 422, "VALIDATION_ERROR")
    assert CLEAR not in result.text
    missing = api.call("POST", KEYS, acme["token"], json={"provider": "openai"})
    fields = {
        f["field"] for f in assert_error(missing, 422, "VALIDATION_ERROR")["details"]["fields"]
    }
    assert fields == {"key_name", "api_key"}
    json_type = {"Content-Type": "application/json"}
    bad_json = api.call("POST", KEYS, acme["token"], body=b"{nope", headers=json_type)
    assert_error(bad_json, 400, "BAD_REQUEST")
    assert api.call("GET", KEYS, acme["token"]).json["total"] == 0


def test_needs_credentials_and_the_admin_role(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"])
    path = f"{KEYS}/{key['id']}"
    with api.nothing_written():
        for method, url in (
            ("GET", KEYS),
            ("POST", KEYS),
            ("GET", path),
            ("PUT", path),
            ("DELETE", path),
            ("POST", f"{path}/rotate"),
            ("POST", f"{path}/usage"),
            ("GET", f"{path}/usage"),
        ):
            assert_error(api.call(method, url, json={}), 401, "UNAUTHORIZED")
        expired = {"Authorization": "Bearer not-a-token"}
        assert_error(api.call("GET", KEYS, headers=expired), 401, "UNAUTHORIZED")
    member = api.member(acme["token"], acme, "m@example.com", "member")
    auditor = api.member(acme["token"], acme, "a@example.com", "auditor")
    assert api.call("GET", KEYS, member).status_code == 200
    assert api.call("GET", f"{path}/usage", auditor).status_code == 200
    with api.nothing_written():
        body = {"provider": "openai", "key_name": "k", "api_key": CLEAR}
        assert_error(api.call("POST", KEYS, member, json=body), 403, "FORBIDDEN")
        assert_error(api.call("PUT", path, member, json={"key_name": "x"}), 403, "FORBIDDEN")
        assert_error(api.call("DELETE", path, member), 403, "FORBIDDEN")
        rotate = {"new_api_key": "sk-other-12345678"}
        assert_error(api.call("POST", f"{path}/rotate", member, json=rotate), 403, "FORBIDDEN")
        assert_error(usage(api, auditor, key["id"], 1), 403, "FORBIDDEN")
    assert usage(api, member, key["id"], 1).status_code == 201
    by_api_key = api.call(
        "POST", f"{path}/usage", headers={"X-API-Key": acme["api_key"]},
        json={"requests_count": 1, "tokens_used": 1, "cost": 0.5},
    )  # fmt: skip
    assert by_api_key.status_code == 201, by_api_key.text
    assert by_api_key.json["usage_current"] == 1.5


def test_another_organizations_key_is_not_found(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"])
    other = api.user("other@example.com")
    api.organization(other, "globex")
    path = f"{KEYS}/{key['id']}"
    data_keys = len(api.app.db.query("SELECT key_id FROM data_keys"))
    with api.nothing_written():
        assert_error(api.call("GET", path, other), 404, "NOT_FOUND")
        assert_error(api.call("PUT", path, other, json={"key_name": "mine"}), 404, "NOT_FOUND")
        replace = {"api_key": "sk-stolen-12345678"}
        assert_error(api.call("PUT", path, other, json=replace), 404, "NOT_FOUND")
        assert_error(api.call("DELETE", path, other), 404, "NOT_FOUND")
        rotate = {"new_api_key": "sk-stolen-12345678"}
        assert_error(api.call("POST", f"{path}/rotate", other, json=rotate), 404, "NOT_FOUND")
        assert_error(usage(api, other, key["id"], 1), 404, "NOT_FOUND")
        assert_error(api.call("GET", f"{path}/usage", other), 404, "NOT_FOUND")
    assert api.call("GET", KEYS, other).json["total"] == 0
    assert len(api.app.db.query("SELECT key_id FROM data_keys")) == data_keys  # none left over
    unknown = f"{KEYS}/00000000-0000-0000-0000-000000000000"
    assert_error(api.call("PUT", unknown, acme["token"], json={}), 404, "NOT_FOUND")
    assert_error(api.call("GET", f"{KEYS}/not-a-uuid", acme["token"]), 404, "NOT_FOUND")


def test_updates_a_key(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"], usage_limit_monthly=50)
    path = f"{KEYS}/{key['id']}"
    body = {"key_name": "Renamed", "is_active": False, "usage_limit_monthly": 75.25}
    updated = api.call("PUT", path, acme["token"], json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json["key_name"] == "Renamed" and updated.json["is_active"] is False
    assert updated.json["usage_limit_monthly"] == 75.25
    [item] = api.call("GET", KEYS, acme["token"]).json["items"]
    assert item["key_name"] == "Renamed" and item["is_active"] is False
    assert_error(secret(api, key["id"]), 409, "KEY_INACTIVE")
    cleared = api.call("PUT", path, acme["token"], json={"usage_limit_monthly": None})
    assert cleared.json["usage_limit_monthly"] is None
    with api.nothing_written():
        for bad in ({"key_name": None}, {"is_active": "yes"}, {"api_key": "x"}, {"nope": 1}):
            assert_error(api.call("PUT", path, acme["token"], json=bad), 422, "VALIDATION_ERROR")
    replaced = api.call("PUT", path, acme["token"], json={"api_key": "sk-replaced-87654321"})
    assert replaced.json["key_hint"] == "...4321" and replaced.json["rotated_at"] is not None


def test_rotates_a_key(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"])
    path = f"{KEYS}/{key['id']}/rotate"
    rotated = api.call("POST", path, acme["token"], json={"new_api_key": "sk-rotated-00001111"})
    assert rotated.status_code == 200, rotated.text
    assert set(rotated.json) == {"id", "status", "rotated_at", "key_hint"}
    assert rotated.json["status"] == "rotated" and rotated.json["key_hint"] == "...1111"
    assert secret(api, key["id"]).json == {"api_key": "sk-rotated-00001111"}
    [item] = api.call("GET", KEYS, acme["token"]).json["items"]
    assert item["rotated_at"] == rotated.json["rotated_at"] and item["key_hint"] == "...1111"
    with api.nothing_written():
        assert_error(api.call("POST", path, acme["token"], json={}), 422, "VALIDATION_ERROR")


def test_deleting_shreds_the_secret(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"])
    assert secret(api, key["id"]).json == {"api_key": CLEAR}
    assert api.call("DELETE", f"{KEYS}/{key['id']}", acme["token"]).status_code == 204
    with api.nothing_written():
        error = assert_error(secret(api, key["id"]), 410, "KEY_DELETED")
        assert error["details"]["key_id"] == key["id"]
        assert_error(api.call("DELETE", f"{KEYS}/{key['id']}", acme["token"]), 404, "NOT_FOUND")
        assert_error(api.call("GET", f"{KEYS}/{key['id']}", acme["token"]), 404, "NOT_FOUND")
    assert api.call("GET", KEYS, acme["token"]).json["total"] == 0
    events = list(api.app.events.get(UUID(key["id"])))  # the history still decodes
    assert isinstance(events[-1], ProviderKey.Deleted)
    data_key = events[0].api_key["key_id"]
    assert api.app.db.query("SELECT * FROM data_keys WHERE key_id = %s", (data_key,)) == []


def test_the_internal_read_takes_only_the_internal_secret(
    api: Harness, acme: dict[str, Any]
) -> None:
    from commands.base import callback_token

    key = create(api, acme["token"])
    token = callback_token(api.deps.settings.jwt_key, UUID(key["id"]))
    with api.nothing_written():
        assert_error(secret(api, key["id"], **{"X-Callback-Token": token}), 401, "UNAUTHORIZED")
        wrong = {"X-N8N-Internal-Auth": SECRET + "x"}
        assert_error(secret(api, key["id"], **wrong), 401, "UNAUTHORIZED")
        bearer = api.call(
            "GET", f"/api/v1/internal/keys/{key['id']}/secret", acme["token"]
        )  # an owner's token is not the internal secret either
        assert_error(bearer, 401, "UNAUTHORIZED")
        missing = "00000000-0000-0000-0000-000000000000"
        assert_error(secret(api, missing), 404, "NOT_FOUND")


def test_no_configured_secret_means_no_internal_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path) as bare:
        token = bare.user("o@example.com")
        bare.organization(token, "acme")
        key = create(bare, token)
        assert_error(secret(bare, key["id"], **{"X-N8N-Internal-Auth": ""}), 401, "UNAUTHORIZED")
        assert_error(
            secret(bare, key["id"], **{"X-N8N-Internal-Auth": "None"}), 401, "UNAUTHORIZED"
        )


def test_every_secret_read_is_in_the_log_with_its_request(
    api: Harness, acme: dict[str, Any]
) -> None:
    key = create(api, acme["token"])
    headers = {**INTERNAL, "X-Request-ID": "read-1", "X-N8N-Workflow-ID": "wf-9"}
    result = secret(api, key["id"], **headers)
    assert result.status_code == 200 and result.headers["Cache-Control"] == "no-store"
    [read] = [
        e for e in api.app.events.get(UUID(key["id"])) if isinstance(e, ProviderKey.SecretRead)
    ]
    assert read.reader["request_id"] == "read-1" and read.reader["workflow_id"] == "wf-9"
    assert read.reader["via"] == "internal_secret" and CLEAR not in str(read.reader)
    assert api.deps.settle("provider_keys")
    [item] = api.call("GET", KEYS, acme["token"]).json["items"]
    assert item["last_used_at"] is not None


def test_records_usage_and_pauses_once_at_the_limit(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"], usage_limit_monthly=10)
    first = usage(api, acme["token"], key["id"], 4.5)
    assert first.status_code == 201, first.text
    assert first.json["usage_current"] == 4.5 and first.json["limit_reached"] is False
    reached = usage(api, acme["token"], key["id"], 5.5)
    assert reached.json["limit_reached"] is True and reached.json["is_active"] is False
    again = usage(api, acme["token"], key["id"], 1)  # still taken: the provider bills it
    assert again.status_code == 201 and again.json["limit_reached"] is False
    paused = [e for e in api.app.events.get(UUID(key["id"])) if isinstance(e, ProviderKey.Paused)]
    assert len(paused) == 1
    [item] = api.call("GET", KEYS, acme["token"]).json["items"]
    assert item["is_active"] is False and item["usage_current"] == 11.0
    assert item["paused_until"] is not None and item["last_used_at"] is not None
    error = assert_error(secret(api, key["id"]), 409, "KEY_INACTIVE")
    assert error["details"]["reason"] == "usage_limit_reached"
    resumed = api.call("PUT", f"{KEYS}/{key['id']}", acme["token"], json={"is_active": True})
    assert resumed.json["is_active"] is True
    assert secret(api, key["id"]).status_code == 200


def test_limit_reached_goes_to_subscribed_endpoints_once(
    api: Harness, acme: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import context
    from workers.webhooks import fan_out

    monkeypatch.setattr(context, "_app", api.app)  # the actors' app, for this test only
    hook = {"url": "https://hooks.example.com/in", "event_types": ["api_key.limit_reached"]}
    assert (
        api.call("POST", "/api/v1/webhooks/endpoints", acme["token"], json=hook).status_code == 201
    )
    key = create(api, acme["token"], usage_limit_monthly=1)
    usage(api, acme["token"], key["id"], 0.75)
    usage(api, acme["token"], key["id"], 0.25)
    usage(api, acme["token"], key["id"], 0.25)
    for event in api.app.events.get(UUID(key["id"])):
        for _ in range(2):  # the dispatcher may send twice: still one delivery
            fan_out.fn(str(UUID(int=0)), str(event.originator_id), event.originator_version)
    assert api.deps.settle("webhook_deliveries")
    deliveries = api.call("GET", "/api/v1/webhooks/deliveries", acme["token"]).json
    [delivery] = deliveries["items"]
    assert delivery["event_type"] == "api_key.limit_reached"


def test_usage_by_day_week_and_month_with_a_range(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"])
    path = f"{KEYS}/{key['id']}/usage"
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    days = [base - timedelta(days=d) for d in (0, 0, 1, 8, 40)]
    for cost, at in zip((0.1, 0.2, 0.3, 0.4, 0.5), days, strict=True):
        at_text = at.isoformat().replace("+00:00", "Z")
        assert usage(api, acme["token"], key["id"], cost, at=at_text).status_code == 201
    daily = api.call("GET", path, acme["token"]).json
    assert [u["date"] for u in daily["usage"]] == sorted({d.date().isoformat() for d in days})
    assert daily["usage"][-1] == {
        "date": base.date().isoformat(), "requests_count": 4, "tokens_used": 600, "cost": 0.3,
    }  # fmt: skip
    assert daily["summary"] == {"total_requests": 10, "total_tokens": 1500, "total_cost": 1.5}
    monthly = api.call("GET", path, acme["token"], params={"granularity": "month"}).json
    assert all(u["date"].endswith("-01") for u in monthly["usage"])
    assert sum(u["cost"] for u in monthly["usage"]) == pytest.approx(1.5)
    weekly = api.call("GET", path, acme["token"], params={"granularity": "week"}).json
    assert all(datetime.fromisoformat(u["date"]).weekday() == 0 for u in weekly["usage"])
    assert weekly["summary"] == daily["summary"]
    today = base.date().isoformat()
    ranged = api.call("GET", path, acme["token"], params={"from": today, "to": today}).json
    assert ranged["summary"] == {"total_requests": 4, "total_tokens": 600, "total_cost": 0.3}
    for params in (
        {"granularity": "hour"},
        {"from": "last week"},
        {"from": today, "to": "2000-01-01"},
    ):
        assert_error(api.call("GET", path, acme["token"], params=params), 400, "BAD_REQUEST")


def test_refuses_bad_usage_and_writes_nothing(api: Harness, acme: dict[str, Any]) -> None:
    key = create(api, acme["token"])
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for body, field in (
        ({"requests_count": -1, "tokens_used": 1, "cost": 1}, "requests_count"),
        ({"requests_count": 1, "tokens_used": 1.5, "cost": 1}, "tokens_used"),
        ({"requests_count": 1, "tokens_used": 1, "cost": -0.01}, "cost"),
        ({"requests_count": 1, "tokens_used": 1, "cost": 0.0000001}, "cost"),
        ({"requests_count": 1, "tokens_used": 1, "cost": "1.0000001"}, "cost"),
        ({"requests_count": True, "tokens_used": 1, "cost": 1}, "requests_count"),
        ({"requests_count": 1, "tokens_used": 1, "cost": 1, "at": ahead}, "at"),
        ({"requests_count": 1, "cost": 1}, "tokens_used"),
    ):
        with api.nothing_written():
            result = api.call("POST", f"{KEYS}/{key['id']}/usage", acme["token"], json=body)
        error = assert_error(result, 422, "VALIDATION_ERROR")
        assert field in [f["field"] for f in error["details"]["fields"]]


def test_idempotency_keys_replay_and_refuse_reuse(api: Harness, acme: dict[str, Any]) -> None:
    headers = {"Idempotency-Key": "create-openai-1"}
    body = {"provider": "openai", "key_name": "k", "api_key": CLEAR}
    first = api.call("POST", KEYS, acme["token"], json=body, headers=headers)
    with api.nothing_written():
        again = api.call("POST", KEYS, acme["token"], json=body, headers=headers)
        assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
        other = {**body, "key_name": "other"}
        reused = api.call("POST", KEYS, acme["token"], json=other, headers=headers)
        assert_error(reused, 409, "IDEMPOTENCY_KEY_REUSED")
    path = f"{KEYS}/{first.json['id']}/usage"
    use = {"requests_count": 1, "tokens_used": 1, "cost": 2}
    once = {"Idempotency-Key": "usage-1"}
    assert api.call("POST", path, acme["token"], json=use, headers=once).status_code == 201
    replay = api.call("POST", path, acme["token"], json=use, headers=once)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert api.call("GET", path, acme["token"]).json["summary"]["total_cost"] == 2.0


def test_the_key_is_nowhere_in_answers_logs_or_stored_bytes(
    api: Harness, acme: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rotated_to = "sk-proj-ROTATED-55aa66bb77cc88"
    texts: list[str] = []
    with capture_logs() as logs:
        key = create(api, acme["token"], usage_limit_monthly=1)
        path = f"{KEYS}/{key['id']}"
        for method, url, body in (
            ("GET", KEYS, None),
            ("GET", path, None),
            ("PUT", path, {"key_name": "n", "api_key": CLEAR + "2"}),
            ("POST", f"{path}/usage", {"requests_count": 1, "tokens_used": 1, "cost": 1}),
            ("GET", f"{path}/usage", None),
            ("POST", f"{path}/rotate", {"new_api_key": rotated_to}),
            ("PUT", path, {"is_active": True}),
            ("POST", KEYS, {"provider": "x", "key_name": "", "api_key": CLEAR}),  # a 422
        ):
            texts.append(api.call(method, url, acme["token"], json=body).text)
        assert secret(api, key["id"]).json == {"api_key": rotated_to}  # the one way out
    secrets = (CLEAR, rotated_to)
    assert not [s for s in secrets for t in texts if s in t]
    assert not [s for s in secrets if s in repr(logs)]
    out = capsys.readouterr()
    assert not [s for s in secrets if s in out.out + out.err]
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())  # WAL too
    assert b"openai" in stored  # the bytes read are the database's
    assert not [s for s in secrets if s.encode() in stored]
