"""The dashboard, its `workflow_failure` alerts and the analytics, on SQLite and PostgreSQL.

Runs are real: the API executes them synchronously against a fake n8n over HTTP (`sync`
answers, `fail` is a 500), so the read models see the events the workers write.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowledger.db import Database
from flowledger.settings import Settings
from projections.alerts import AlertsProjection
from projections.runner import Item
from tests.conftest import fresh_database
from tests.support.fake_n8n import FakeN8n
from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

DASHBOARDS = ["/api/v1/n8n/monitor/dashboard", "/api/v1/monitoring/dashboard"]


@pytest.fixture(scope="module")
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def api(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    fast_passwords(monkeypatch)
    if request.param == "sqlite":
        with Harness.start(tmp_path, serve=True, rate_limit_scale=100) as harness:
            yield harness
        return
    with fresh_database("flowledger_monitoring") as url:
        with Harness.start(
            tmp_path, serve=True, rate_limit_scale=100, database_url=url, db_pool_max=4
        ) as harness:
            yield harness
        harness.app.close()
        harness.app.db.close()


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    return api.tenant("acme", plan_type="starter")


def run(api: Harness, org: dict[str, Any], workflow: dict[str, Any]) -> dict[str, Any]:
    """One synchronous run; its execution once every read model involved has it."""
    body = {"workflow_id": workflow["id"], "data": {"n": 1}}
    result = api.call("POST", "/api/v1/execute", org["token"], json=body)
    assert result.status_code in (200, 502), result.text
    execution_id = (
        result.json.get("execution_id") or result.json["error"]["details"]["execution_id"]
    )
    assert api.deps.settle("executions", "workflows", "alerts")
    return api.call("GET", f"/api/v1/executions/{execution_id}", org["token"]).json


def point(api: Harness, org: dict[str, Any], workflow: dict[str, Any], url: str) -> None:
    path = f"/api/v1/workflows/{workflow['id']}"
    result = api.call("PATCH", path, org["token"], json={"webhook_url": url})
    assert result.status_code == 200, result.text


def dashboard(api: Harness, token: str, path: str = DASHBOARDS[0]) -> dict[str, Any]:
    result = api.call("GET", path, token)
    assert result.status_code == 200, result.text
    return dict(result.json)


# -- alerts ----------------------------------------------------------------------------------


def test_three_failures_in_a_row_raise_one_alert_until_a_success(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    token = acme["token"]
    workflow = api.workflow(token, n8n.webhook_url("fail"), name="Lead Generation")
    for expected_failures in (1, 2):
        assert run(api, acme, workflow)["status"] == "failed"
        assert dashboard(api, token)["alerts"] == [], expected_failures
    assert run(api, acme, workflow)["status"] == "failed"
    board = dashboard(api, token)
    [alert] = board["alerts"]
    assert board["summary"]["alerts_active"] == 1
    assert alert["type"] == "workflow_failure" and alert["severity"] == "high"
    assert alert["message"] == "Workflow 'Lead Generation' failed 3 times in a row"
    assert alert["workflow_id"] == workflow["id"] and alert["failures"] == 3
    assert alert["created_at"].endswith("Z")

    fourth = run(api, acme, workflow)  # the same streak: the same alert, counted
    [same] = dashboard(api, token)["alerts"]
    assert same["id"] == alert["id"] and same["failures"] == 4
    assert same["last_execution_id"] == fourth["id"]

    point(api, acme, workflow, n8n.webhook_url("sync"))
    assert run(api, acme, workflow)["status"] == "completed"
    board = dashboard(api, token)
    assert board["alerts"] == [] and board["summary"]["alerts_active"] == 0

    point(api, acme, workflow, n8n.webhook_url("fail"))
    for _ in range(3):
        run(api, acme, workflow)
    [again] = dashboard(api, token)["alerts"]
    assert again["id"] != alert["id"] and again["failures"] == 3


def test_a_success_between_failures_resets_the_streak(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("fail"))
    for url in ("fail", "fail", "sync", "fail", "fail"):
        point(api, acme, workflow, n8n.webhook_url(url))
        run(api, acme, workflow)
    assert dashboard(api, acme["token"])["alerts"] == []


def test_each_workflow_has_its_own_streak_and_alerts_stay_in_their_organization(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    failing = api.workflow(acme["token"], n8n.webhook_url("fail"), name="Failing")
    healthy = api.workflow(acme["token"], n8n.webhook_url("sync"), name="Healthy")
    for _ in range(3):
        run(api, acme, failing)
        run(api, acme, healthy)
    [alert] = dashboard(api, acme["token"])["alerts"]
    assert alert["workflow_id"] == failing["id"]
    other = api.user("other@example.com")
    api.organization(other, "globex")
    board = dashboard(api, other)
    assert board["alerts"] == [] and board["summary"]["alerts_active"] == 0
    assert board["recent_executions"] == [] and board["workflows"] == []


# -- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_sums_up_the_last_24_hours(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    token = acme["token"]
    good = api.workflow(token, n8n.webhook_url("sync"), name="Good", credits_per_execution=2)
    bad = api.workflow(token, n8n.webhook_url("fail"), name="Bad")
    idle = api.workflow(token, n8n.webhook_url("sync"), name="Idle")
    assert api.call("POST", f"/api/v1/workflows/{idle['id']}/deactivate", token).status_code == 200
    runs = [run(api, acme, good) for _ in range(3)] + [run(api, acme, bad)]
    assert api.deps.settle("workflows")
    for path in DASHBOARDS:
        board = dashboard(api, token, path)
        summary = board["summary"]
        assert summary["total_workflows"] == 3 and summary["active_workflows"] == 2
        assert summary["executions_24h"] == 4
        assert summary["success_rate"] == 0.75
        durations = [r["duration_ms"] for r in runs]
        assert summary["average_duration_ms"] == round(sum(durations) / len(durations))
        assert summary["credits_used_24h"] == 6  # the failed run was refunded
        assert summary["alerts_active"] == 0
        assert [e["id"] for e in board["recent_executions"]] == [r["id"] for r in reversed(runs)]
        assert board["recent_executions"][0]["workflow_name"] == "Bad"
        by_name = {w["name"]: w for w in board["workflows"]}
        assert by_name["Good"]["executions_24h"] == 3 and by_name["Good"]["credits_used_24h"] == 6
        assert by_name["Bad"]["failed_24h"] == 1 and by_name["Bad"]["success_rate_24h"] == 0
        assert by_name["Idle"]["is_active"] is False and by_name["Idle"]["executions_24h"] == 0
        metrics = board["performance_metrics"]
        assert metrics["queue_depth"] == 0 and set(metrics["queues"]) >= {"executions"}
        assert metrics["projection_lag"] == max(metrics["projections"].values())
        assert {"executions", "alerts", "workflows"} <= set(metrics["projections"])


def test_auditors_read_the_dashboard_and_strangers_do_not(
    api: Harness, acme: dict[str, Any]
) -> None:
    auditor = api.member(acme["token"], acme, "auditor@example.com", "auditor")
    assert dashboard(api, auditor)["summary"]["total_workflows"] == 0
    assert_error(api.call("GET", DASHBOARDS[1]), 401, "UNAUTHORIZED")
    loner = api.user("loner@example.com")
    assert_error(api.call("GET", DASHBOARDS[0], loner), 403, "FORBIDDEN")


# -- analytics -------------------------------------------------------------------------------


def nearest_rank(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(fraction * len(ordered)) - 1]


def test_usage_counts_runs_per_bucket_and_in_total(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    token = acme["token"]
    good = api.workflow(token, n8n.webhook_url("sync"), credits_per_execution=5)
    bad = api.workflow(token, n8n.webhook_url("fail"), credits_per_execution=5)
    for workflow in (good, good, bad):
        run(api, acme, workflow)
    today = datetime.now(UTC).date()
    week_ago = (today - timedelta(days=6)).isoformat()
    result = api.call(
        "GET", "/api/v1/analytics/usage", token, params={"from": week_ago, "to": today.isoformat()}
    )
    assert result.status_code == 200, result.text
    series = result.json["series"]
    assert [s["date"] for s in series] == [
        (today - timedelta(days=d)).isoformat() for d in range(6, -1, -1)
    ]
    assert series[-1] == {
        "date": today.isoformat(), "executions": 3, "completed": 2, "failed": 1, "credits_used": 10
    }  # fmt: skip
    assert all(s["executions"] == 0 for s in series[:-1])
    totals = result.json["totals"]
    assert totals["executions"] == 3 and totals["credits_used"] == 10
    assert totals["success_rate"] == round(2 / 3, 4)

    monday = today - timedelta(days=today.weekday())
    weekly = api.call("GET", "/api/v1/analytics/usage", token, params={"granularity": "week"})
    assert weekly.json["series"][-1]["date"] == monday.isoformat()
    assert weekly.json["series"][-1]["executions"] == 3
    monthly = api.call("GET", "/api/v1/analytics/usage", token, params={"granularity": "month"})
    assert monthly.json["series"][-1] == {
        "date": today.replace(day=1).isoformat(), "executions": 3, "completed": 2, "failed": 1,
        "credits_used": 10,
    }  # fmt: skip
    assert len(monthly.json["series"]) in (12, 13)

    yesterday = (today - timedelta(days=1)).isoformat()
    before = api.call("GET", "/api/v1/analytics/usage", token, params={"to": yesterday})
    assert before.json["totals"]["executions"] == 0


def test_workflow_analytics_give_counts_rates_percentiles_and_credits(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    token = acme["token"]
    busy = api.workflow(token, n8n.webhook_url("sync"), name="Busy", credits_per_execution=2)
    mixed = api.workflow(token, n8n.webhook_url("sync"), name="Mixed")
    idle = api.workflow(token, n8n.webhook_url("sync"), name="Idle")
    busy_runs = [run(api, acme, busy) for _ in range(6)]
    mixed_runs = [run(api, acme, mixed)]
    point(api, acme, mixed, n8n.webhook_url("fail"))
    mixed_runs += [run(api, acme, mixed) for _ in range(2)]
    result = api.call("GET", "/api/v1/analytics/workflows", token)
    assert result.status_code == 200, result.text
    page = result.json
    assert page["total"] == 3 and page["limit"] == 50 and page["offset"] == 0
    assert [w["name"] for w in page["items"]] == ["Busy", "Mixed", "Idle"]
    first, second, third = page["items"]
    durations = [r["duration_ms"] for r in busy_runs]
    assert first == {
        "workflow_id": busy["id"], "name": "Busy", "is_active": True, "archived": False,
        "executions": 6, "completed": 6, "failed": 0, "success_rate": 1.0,
        "p50_duration_ms": nearest_rank(durations, 0.5),
        "p95_duration_ms": nearest_rank(durations, 0.95), "credits_used": 12,
    }  # fmt: skip
    mixed_durations = [r["duration_ms"] for r in mixed_runs]
    assert second["success_rate"] == round(1 / 3, 4) and second["credits_used"] == 1
    assert second["p95_duration_ms"] == nearest_rank(mixed_durations, 0.95)
    assert third["workflow_id"] == idle["id"] and third["executions"] == 0
    assert third["success_rate"] is None and third["p50_duration_ms"] is None

    second_page = api.call(
        "GET", "/api/v1/analytics/workflows", token, params={"limit": 1, "offset": 1}
    )
    assert [w["name"] for w in second_page.json["items"]] == ["Mixed"]
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    later = api.call("GET", "/api/v1/analytics/workflows", token, params={"from": tomorrow})
    assert later.status_code == 400  # from after the default `to` (now)
    future = api.call(
        "GET", "/api/v1/analytics/workflows", token, params={"from": tomorrow, "to": tomorrow}
    )
    assert all(w["executions"] == 0 for w in future.json["items"])


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/analytics/usage", {"granularity": "hour"}),
        ("/api/v1/analytics/usage", {"from": "yesterday"}),
        ("/api/v1/analytics/usage", {"from": "2026-02-30"}),
        ("/api/v1/analytics/usage", {"to": "0001-01-01"}),
        ("/api/v1/analytics/usage", {"from": "2026-03-01", "to": "2026-02-01"}),
        ("/api/v1/analytics/usage", {"from": "2000-01-01", "to": "2026-01-01"}),
        ("/api/v1/analytics/workflows", {"limit": "0"}),
        ("/api/v1/analytics/workflows", {"limit": "many"}),
        ("/api/v1/analytics/workflows", {"offset": "-1"}),
        ("/api/v1/analytics/workflows", {"to": "2026-13-01"}),
    ],
)
def test_bad_parameters_are_400_in_the_envelope(
    api: Harness, acme: dict[str, Any], path: str, params: dict[str, str]
) -> None:
    assert_error(api.call("GET", path, acme["token"], params=params), 400, "BAD_REQUEST")


def test_analytics_need_a_member(api: Harness, acme: dict[str, Any]) -> None:
    auditor = api.member(acme["token"], acme, "auditor@example.com", "auditor")
    assert api.call("GET", "/api/v1/analytics/usage", auditor).status_code == 200
    assert_error(api.call("GET", "/api/v1/analytics/workflows"), 401, "UNAUTHORIZED")


def test_usage_buckets_are_calendar_weeks_and_months(api: Harness, acme: dict[str, Any]) -> None:
    params = {"from": "2026-01-28", "to": "2026-03-02", "granularity": "week"}
    weeks = api.call("GET", "/api/v1/analytics/usage", acme["token"], params=params).json
    starts = [date.fromisoformat(s["date"]) for s in weeks["series"]]
    assert starts[0] == date(2026, 1, 26) and starts[-1] == date(2026, 3, 2)
    assert all(d.weekday() == 0 for d in starts) and len(starts) == 6
    params["granularity"] = "month"
    months = api.call("GET", "/api/v1/analytics/usage", acme["token"], params=params).json
    assert [s["date"] for s in months["series"]] == ["2026-01-01", "2026-02-01", "2026-03-01"]


def test_alerts_rebuilt_from_the_log_are_the_same_rows(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n, tmp_path: Path
) -> None:
    workflow = api.workflow(acme["token"], n8n.webhook_url("fail"))
    for url in ("fail", "fail", "fail", "fail", "sync", "fail", "fail", "fail"):
        point(api, acme, workflow, n8n.webhook_url(url))
        run(api, acme, workflow)
    columns = "id, workflow_id, failures, message, created_at, resolved_at, last_execution_id"
    live = api.deps.db.query(f"SELECT {columns} FROM alerts ORDER BY created_at, id")
    # the first streak (4 failures) was resolved by the success; the second (3) is open
    assert [(a["failures"], a["resolved_at"] is None) for a in live] == [(4, False), (3, True)]

    rebuilt = Database(Settings(database_url=f"sqlite:///{tmp_path}/rebuilt.db"))
    projection = AlertsProjection()
    rebuilt.script(projection.tables)
    items = [
        Item(n.id, api.app.mapper.to_domain_event(n), n)
        for n in api.app.recorder.select_notifications(start=1, limit=1_000_000)
    ]
    for _ in range(2):  # a second replay over the same rows changes nothing
        with rebuilt.transaction() as cur:
            projection.process(cur, items)
        assert rebuilt.query(f"SELECT {columns} FROM alerts ORDER BY created_at, id") == live
    rebuilt.close()
