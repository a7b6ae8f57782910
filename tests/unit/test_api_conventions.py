"""Conventions every endpoint shares: request ids, the error envelope, bodies, idempotency,
rate limits and timestamps."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import falcon
import psycopg
import pytest
import redis

from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def owner(api: Harness) -> str:
    token = api.user("owner@example.com")
    api.organization(token, "acme")
    return token


class Raises:
    """A resource that fails the way a broken dependency does."""

    auth: dict[str, str] = {}

    def __init__(self, error: Exception) -> None:
        self.error = error

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise self.error


# -- request ids ------------------------------------------------------------------------------


def test_echoes_a_sane_request_id(api: Harness) -> None:
    result = api.call("GET", "/health", headers={"X-Request-ID": "abc-123.x_Y"})
    assert result.headers["X-Request-ID"] == "abc-123.x_Y"


@pytest.mark.parametrize("given", ["has space", "x" * 129, "semi;colon", ""])
def test_replaces_an_insane_request_id_with_a_uuid(api: Harness, given: str) -> None:
    result = api.call("GET", "/health", headers={"X-Request-ID": given})
    assert re.fullmatch(r"[0-9a-f-]{36}", result.headers["X-Request-ID"])


def test_errors_carry_the_request_id_of_the_request(api: Harness) -> None:
    result = api.call("GET", "/api/v1/nope", headers={"X-Request-ID": "trace-me"})
    assert assert_error(result, 404, "NOT_FOUND")["request_id"] == "trace-me"


# -- the envelope -----------------------------------------------------------------------------


def test_unknown_routes_are_404_in_the_envelope(api: Harness) -> None:
    assert_error(api.call("GET", "/api/v1/does-not-exist"), 404, "NOT_FOUND")


def test_a_path_id_that_is_not_a_uuid_is_404(api: Harness, owner: str) -> None:
    assert_error(api.call("GET", "/api/v1/workflows/not-a-uuid", owner), 404, "NOT_FOUND")


def test_wrong_methods_are_405_in_the_envelope_with_allow(api: Harness) -> None:
    result = api.call("DELETE", "/api/v1/auth/login")
    assert_error(result, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in result.headers["Allow"]


def test_unexpected_errors_are_500_without_a_stack_trace(api: Harness) -> None:
    api.wsgi.add_route("/boom", Raises(RuntimeError("secret internals")))
    result = api.call("GET", "/boom")
    error = assert_error(result, 500, "INTERNAL_ERROR")
    assert "secret internals" not in result.text and "Traceback" not in result.text
    assert error["message"] == "internal error"


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),
        redis.exceptions.ConnectionError("redis down"),
    ],
)
def test_a_database_or_redis_outage_is_503(api: Harness, error: Exception) -> None:
    api.wsgi.add_route("/down", Raises(error))
    result = api.call("GET", "/down")
    assert_error(result, 503, "SERVICE_UNAVAILABLE")
    assert result.headers["Retry-After"]


def test_json_answers_are_utf8_json(api: Harness) -> None:
    result = api.call("GET", "/health")
    assert result.headers["Content-Type"] == "application/json; charset=utf-8"


# -- bodies -----------------------------------------------------------------------------------


def test_malformed_json_is_400_and_writes_nothing(api: Harness) -> None:
    with api.nothing_written():
        result = api.call(
            "POST",
            "/api/v1/auth/register",
            body='{"email": ',
            headers={"Content-Type": "application/json"},
        )
    assert_error(result, 400, "BAD_REQUEST")


def test_a_body_that_is_not_utf8_is_400(api: Harness) -> None:
    result = api.call(
        "POST",
        "/api/v1/auth/register",
        body=b'{"email": "\xff"}',
        headers={"Content-Type": "application/json"},
    )
    assert_error(result, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_a_wrong_content_type_is_415(api: Harness, content_type: str) -> None:
    with api.nothing_written():
        result = api.call(
            "POST", "/api/v1/auth/register", body="{}", headers={"Content-Type": content_type}
        )
    assert_error(result, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_body_over_one_mib_is_413_and_writes_nothing(api: Harness, owner: str) -> None:
    big = {"name": "x", "webhook_url": "https://n8n.example.com/w", "description": "x" * (1 << 20)}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/workflows", owner, json=big)
    assert_error(result, 413, "PAYLOAD_TOO_LARGE")
    assert result.headers["X-Request-ID"]


def test_unknown_fields_are_422_with_the_field_named(api: Harness) -> None:
    body = {"email": "a@example.com", "password": "x" * 12, "full_name": "A", "admin": True}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/auth/register", json=body)
    error = assert_error(result, 422, "VALIDATION_ERROR")
    assert {"field": "admin", "message": "Extra inputs are not permitted"} in error["details"][
        "fields"
    ]


def test_nested_validation_errors_name_the_dotted_field(api: Harness, owner: str) -> None:
    body = {"name": "w", "webhook_url": "https://n8n.example.com/w", "retry": {"max_retries": 11}}
    result = api.call("POST", "/api/v1/workflows", owner, json=body)
    fields = assert_error(result, 422, "VALIDATION_ERROR")["details"]["fields"]
    assert [f["field"] for f in fields] == ["retry.max_retries"]


def test_a_json_body_that_is_not_an_object_is_422(api: Harness) -> None:
    result = api.call("POST", "/api/v1/auth/register", json=[1, 2])
    assert_error(result, 422, "VALIDATION_ERROR")


def test_bad_query_parameters_are_400(api: Harness, owner: str) -> None:
    for query in ("limit=0", "limit=201", "limit=ten", "offset=-1", "active_only=perhaps"):
        result = api.call("GET", f"/api/v1/workflows?{query}", owner)
        assert_error(result, 400, "BAD_REQUEST")


def test_lists_answer_items_total_limit_and_offset(api: Harness, owner: str) -> None:
    for n in range(3):
        api.workflow(owner, name=f"w{n}")
    result = api.call("GET", "/api/v1/workflows?limit=2&offset=1", owner)
    assert result.status_code == 200
    assert result.json["total"] == 3 and result.json["limit"] == 2 and result.json["offset"] == 1
    assert [w["name"] for w in result.json["items"]] == ["w1", "w0"]  # newest first


def test_timestamps_are_rfc3339_utc_with_milliseconds(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner)
    assert RFC3339_MS.match(workflow["created_at"]) and RFC3339_MS.match(workflow["updated_at"])
    assert RFC3339_MS.match(api.call("GET", "/health").json["timestamp"])


# -- idempotency ------------------------------------------------------------------------------


def _create(api: Harness, token: str, key: str, name: str = "w") -> Any:
    body = {"name": name, "webhook_url": "https://n8n.example.com/w"}
    return api.call("POST", "/api/v1/workflows", token, json=body, headers={"Idempotency-Key": key})


def test_the_same_key_and_body_replays_the_first_answer(api: Harness, owner: str) -> None:
    first = _create(api, owner, "key-1")
    with api.nothing_written():
        again = _create(api, owner, "key-1")
    assert again.status_code == first.status_code == 201
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert api.call("GET", "/api/v1/workflows", owner).json["total"] == 1


def test_a_replay_compares_json_by_content_not_key_order(api: Harness, owner: str) -> None:
    headers = {"Idempotency-Key": "k", "Content-Type": "application/json"}
    first = api.call("POST", "/api/v1/workflows", owner, headers=headers,
                     body='{"name": "w", "webhook_url": "https://n8n.example.com/w"}')  # fmt: skip
    again = api.call("POST", "/api/v1/workflows", owner, headers=headers,
                     body='{"webhook_url": "https://n8n.example.com/w", "name": "w"}')  # fmt: skip
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_is_409_and_writes_nothing(api: Harness, owner: str) -> None:
    _create(api, owner, "key-1", name="first")
    with api.nothing_written():
        result = _create(api, owner, "key-1", name="second")
    assert_error(result, 409, "IDEMPOTENCY_KEY_REUSED")


def test_error_answers_are_replayed_too(api: Harness, owner: str) -> None:
    body = {"to_tenant_id": "nobody", "amount": 1}
    headers = {"Idempotency-Key": "transfer-1"}
    first = api.call("POST", "/api/v1/credits/transfers", owner, json=body, headers=headers)
    again = api.call("POST", "/api/v1/credits/transfers", owner, json=body, headers=headers)
    assert first.status_code == again.status_code == 404 and first.json == again.json


def test_keys_are_scoped_per_organization(api: Harness, owner: str) -> None:
    other = api.user("other@example.com")
    api.organization(other, "globex")
    mine, theirs = _create(api, owner, "shared"), _create(api, other, "shared")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json["id"] != theirs.json["id"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_a_key_longer_than_255_characters_is_400(api: Harness, owner: str) -> None:
    with api.nothing_written():
        result = _create(api, owner, "k" * 256)
    assert_error(result, 400, "BAD_REQUEST")


def test_secrets_in_replayed_answers_are_stored_encrypted(api: Harness) -> None:
    token = api.user("founder@example.com")
    body = {"name": "Initech", "tenant_id": "initech"}
    headers = {"Idempotency-Key": "create-initech"}
    first = api.call("POST", "/api/v1/organizations", token, json=body, headers=headers)
    again = api.call("POST", "/api/v1/organizations", token, json=body, headers=headers)
    assert again.json["client_secret"] == first.json["client_secret"]
    [row] = api.deps.db.query("SELECT body FROM idempotency_keys")
    assert first.json["client_secret"] not in row["body"]


def test_a_failed_5xx_answer_releases_the_key(api: Harness, owner: str) -> None:
    calls: list[int] = []

    class Flaky:
        auth = {"POST": "member"}

        def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise psycopg.OperationalError("down")
            resp.media = {"ok": True}

    api.wsgi.add_route("/flaky", Flaky())
    headers = {"Idempotency-Key": "retry-me"}
    assert api.call("POST", "/flaky", owner, json={}, headers=headers).status_code == 503
    result = api.call("POST", "/flaky", owner, json={}, headers=headers)
    assert result.status_code == 200 and "Idempotent-Replayed" not in result.headers


def test_two_concurrent_requests_with_one_key_run_once(api: Harness, owner: str) -> None:
    entered, release = threading.Event(), threading.Event()
    runs: list[int] = []

    class Slow:
        auth = {"POST": "member"}

        def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
            runs.append(1)
            entered.set()
            release.wait(5)
            resp.status = falcon.HTTP_201
            resp.media = {"run": len(runs)}

    api.wsgi.add_route("/slow", Slow())
    results: list[Any] = []
    headers = {"Idempotency-Key": "once"}

    def post() -> None:
        results.append(api.call("POST", "/slow", owner, json={"a": 1}, headers=headers))

    first = threading.Thread(target=post)
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=post)
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert runs == [1]
    assert sorted(r.status_code for r in results) == [201, 201]
    assert all(r.json == {"run": 1} for r in results)


# -- rate limits ------------------------------------------------------------------------------


def test_answers_carry_rate_limit_headers(api: Harness, owner: str) -> None:
    result = api.call("GET", "/api/v1/workflows", owner)
    assert result.headers["X-RateLimit-Limit"] == "60"  # starter plan
    assert int(result.headers["X-RateLimit-Remaining"]) < 60
    assert int(result.headers["X-RateLimit-Reset"]) > 0


def test_over_the_plan_limit_is_429_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path, rate_limit_scale=0.1) as api:  # starter: 6 a minute
        token = api.user("owner@example.com")
        api.organization(token, "acme")
        statuses = [api.call("GET", "/api/v1/workflows", token).status_code for _ in range(8)]
        assert statuses.count(429) >= 1
        result = api.call("GET", "/api/v1/workflows", token)
        error = assert_error(result, 429, "RATE_LIMIT_EXCEEDED")
        assert error["details"]["retry_after"] >= 1
        assert result.headers["Retry-After"] == str(error["details"]["retry_after"])
        assert result.headers["X-RateLimit-Remaining"] == "0"


def test_unauthenticated_endpoints_are_limited_per_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path, ip_rate_limit=3) as api:
        body = {"email": "x@example.com", "password": "wrong password"}
        statuses = [api.call("POST", "/api/v1/auth/login", json=body).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]


def test_ten_failed_logins_lock_the_email_for_a_while(api: Harness) -> None:
    api.register("victim@example.com")
    wrong = {"email": "victim@example.com", "password": "not the password"}
    for _ in range(10):
        assert api.call("POST", "/api/v1/auth/login", json=wrong).status_code == 401
    right = {"email": "victim@example.com", "password": "correct horse battery"}
    assert_error(api.call("POST", "/api/v1/auth/login", json=right), 429, "RATE_LIMIT_EXCEEDED")


def test_json_nested_too_deeply_is_400_not_500(api: Harness) -> None:
    body = "[" * 200_000 + "]" * 200_000
    result = api.call(
        "POST", "/api/v1/auth/register", body=body, headers={"Content-Type": "application/json"}
    )
    assert_error(result, 400, "BAD_REQUEST")
