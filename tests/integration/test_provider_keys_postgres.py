"""The provider-key vault on PostgreSQL: reads in the log, shredding, concurrent usage.

Concurrency runs in two real processes (the striped in-process lock of `commands.base`
cannot help across them), so their saves race and `retry_on_conflict` has to settle them.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.provider_key import RecordUsage, record_usage
from events.application import Flowledger
from events.provider_key import ProviderKey
from flowledger.settings import Settings
from projections.provider_keys import usage
from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

CLEAR = "sk-ant-PGCLEAR-4b1d9e77c03a"
SECRET = "pg-internal-secret"
PROCESSES, THREADS, EACH = 2, 4, 25


@pytest.fixture
def api(
    pg_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    fast_passwords(monkeypatch)
    overrides = {
        "database_url": pg_settings.database_url,
        "jwt_secret": pg_settings.jwt_secret,
        "internal_secret": SECRET,
        "db_pool_max": 4,
    }
    with Harness.start(tmp_path, **overrides) as harness:
        yield harness


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    return api.tenant(f"acme-{suffix}", f"owner-{suffix}@example.com")


def stored_bytes(app: Flowledger) -> bytes:
    """Every event and snapshot row as stored (the topic and state bytes)."""
    rows = app.db.query(
        f"SELECT topic, state FROM {app.recorder.events_table_name}"  # type: ignore[attr-defined]
    )
    return b"".join(r["topic"].encode() + bytes(r["state"]) for r in rows)


def test_a_secret_read_is_recorded_in_the_log(api: Harness, acme: dict[str, Any]) -> None:
    body = {"provider": "anthropic", "key_name": "claude", "api_key": CLEAR}
    key = api.call("POST", "/api/v1/keys", acme["token"], json=body).json
    path = f"/api/v1/internal/keys/{key['id']}/secret"
    headers = {"X-N8N-Internal-Auth": SECRET, "X-Request-ID": "pg-read-1"}
    assert api.call("GET", path, headers=headers).json == {"api_key": CLEAR}
    top = api.app.recorder.max_notification_id() or 0
    [last] = api.app.recorder.select_notifications(start=top, limit=1)
    read = api.app.mapper.to_domain_event(last)
    assert isinstance(read, ProviderKey.SecretRead) and str(read.originator_id) == key["id"]
    assert read.reader["request_id"] == "pg-read-1"
    raw = stored_bytes(api.app)
    assert b"SecretRead" in raw and CLEAR.encode() not in raw

    assert api.call("DELETE", f"/api/v1/keys/{key['id']}", acme["token"]).status_code == 204
    with api.nothing_written():
        assert_error(api.call("GET", path, headers=headers), 410, "KEY_DELETED")
    fresh = Flowledger(api.deps.settings)  # another process: no cache of any kind
    try:
        events = list(fresh.events.get(UUID(key["id"])))
        assert [type(e).__name__ for e in events] == ["Created", "SecretRead", "Deleted"]
        assert (
            fresh.db.query(
                "SELECT key_id FROM data_keys WHERE key_id = %s", (events[0].api_key["key_id"],)
            )
            == []
        )
    finally:
        fresh.close()
        fresh.db.close()


def _record_many(database_url: str, jwt_secret: str, org_id: str, key_id: str) -> int:
    """One process: THREADS threads each recording EACH usages of 0.01."""
    app = Flowledger(Settings(database_url=database_url, jwt_secret=jwt_secret, db_pool_max=4))
    cmd = RecordUsage(requests_count=1, tokens_used=7, cost=Decimal("0.01"))

    def work(_: int) -> int:
        reached = 0
        for _ in range(EACH):
            reached += record_usage(app, UUID(org_id), UUID(key_id), cmd)[1]
        return reached

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return sum(pool.map(work, range(THREADS)))
    finally:
        app.close()
        app.db.close()


def test_concurrent_usage_records_lose_nothing_and_pause_once(
    api: Harness, acme: dict[str, Any]
) -> None:
    body = {"provider": "openai", "key_name": "shared", "api_key": CLEAR, "usage_limit_monthly": 1}
    key = api.call("POST", "/api/v1/keys", acme["token"], json=body).json
    settings = api.deps.settings
    args = (settings.database_url, settings.jwt_key, acme["id"], key["id"])
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        reached = sum(pool.starmap(_record_many, [args] * PROCESSES))
    total = PROCESSES * THREADS * EACH  # 200 records of 0.01: the limit of 1 is crossed once
    assert reached == 1
    app = Flowledger(settings)
    try:
        events = list(app.events.get(UUID(key["id"])))
        assert sum(isinstance(e, ProviderKey.UsageRecorded) for e in events) == total
        assert sum(isinstance(e, ProviderKey.Paused) for e in events) == 1
        current = app.repository.get(UUID(key["id"]))
        assert current.usage_micros(datetime.now(UTC)) == total * 10_000
        assert api.deps.settle("provider_keys")
        summary = usage(api.deps.db, key["id"])["summary"]
        assert summary == {"total_requests": total, "total_tokens": 7 * total, "total_cost": 2.0}
    finally:
        app.close()
        app.db.close()


def test_the_limit_reached_webhook_arrives_once_through_the_pipeline(
    pg_settings: Settings,
) -> None:
    """PostgreSQL + Redis: log → dispatcher → fan_out → deliver → a real receiver."""
    from commands.organization import CreateOrganization, create_organization
    from commands.provider_key import CreateProviderKey, create_provider_key
    from commands.user import RegisterUser, register_user
    from commands.webhook import CreateEndpoint, create_endpoint
    from tests.integration.test_pipeline import running
    from tests.support.waiting import until
    from tests.support.webhook_receiver import Receiver, serve

    got = Receiver()
    server = serve(got)
    settings = pg_settings.model_copy(
        update={
            "redis_url": "redis://127.0.0.1:6379/0",
            "broker_namespace": f"fl-test-{uuid.uuid4().hex[:8]}",
            "webhook_backoff_scale": 0.01,
        }
    )
    try:
        for app in running(settings, with_dispatcher=True, projections=(), threads=4):
            tenant = f"t-{uuid.uuid4().hex[:10]}"
            user = register_user(
                app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
            )
            org_id = create_organization(
                app, user.id, CreateOrganization(name="A", tenant_id=tenant)
            ).organization.id
            url = f"http://127.0.0.1:{server.server_port}/limits"
            create_endpoint(
                app, org_id, CreateEndpoint(url=url, event_types=["api_key.limit_reached"])
            )
            cmd = CreateProviderKey.model_validate(
                {"provider": "openai", "key_name": "k", "api_key": CLEAR, "usage_limit_monthly": 1}
            )
            key = create_provider_key(app, org_id, cmd)
            spend = RecordUsage(requests_count=1, tokens_used=1, cost=Decimal("0.6"))
            for _ in range(3):
                record_usage(app, org_id, key.id, spend)
            [request] = until(lambda: got.ok_for("/limits"), what="the limit webhook")
            body = request.json
            assert body["event"] == "api_key.limit_reached"
            assert body["data"]["key_id"] == str(key.id) and body["data"]["usage_current"] == 1.2
            assert CLEAR.encode() not in request.body
            events = list(app.events.get(key.id))
            assert sum(isinstance(e, ProviderKey.Paused) for e in events) == 1
    finally:
        server.shutdown()
        server.server_close()
