"""The audit surface on PostgreSQL: paging and isolation, time travel, and the hash chain
checked by the real `flowledger audit verify` after a stored event is edited in SQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import fresh_database
from tests.unit.test_api_harness import Harness, assert_error, fast_passwords

LOG = "/api/v1/audit/log"


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A database of its own: the tests edit its events table."""
    fast_passwords(monkeypatch)
    with fresh_database("flowledger_audit") as url, Harness.start(
        tmp_path, database_url=url, jwt_secret="audit-" + uuid.uuid4().hex
    ) as harness:  # fmt: skip
        yield harness


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    return api.tenant("acme")


def _cli(api: Harness, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env["FLOWLEDGER_DATABASE_URL"] = api.deps.settings.database_url
    env["FLOWLEDGER_JWT_SECRET"] = api.deps.settings.jwt_secret or ""
    return subprocess.run(
        [sys.executable, "-m", "flowledger.cli", *argv],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _page(api: Harness, token: str, **params: Any) -> dict[str, Any]:
    result = api.call("GET", LOG, token, params=params)
    assert result.status_code == 200, result.text
    return result.json


def test_pages_time_travel_and_isolation_on_postgres(api: Harness, acme: dict[str, Any]) -> None:
    workflows = [api.workflow(acme["token"], name=f"flow {i}") for i in range(8)]
    path = f"/api/v1/workflows/{workflows[0]['id']}"
    assert api.call("PATCH", path, acme["token"], json={"name": "later"}).status_code == 200
    theirs = api.user("other@example.com")
    other = api.organization(theirs, "globex")
    pages, after = [], 0
    while after is not None:
        page = _page(api, acme["token"], after=after, limit=6)
        pages.append(page["items"])
        after = page["next_after"]
    positions = [i["position"] for p in pages for i in p]
    assert len(pages) >= 3 and positions == sorted(set(positions))
    assert other["id"] not in {i["aggregate_id"] for p in pages for i in p}
    then = api.call(
        "GET", f"/api/v1/audit/aggregates/{workflows[0]['id']}", acme["token"],
        params={"version": 1},
    )  # fmt: skip
    assert then.json["state"]["definition"]["name"] == "flow 0"
    for suffix in ("", "/history"):
        result = api.call("GET", f"/api/v1/audit/aggregates/{other['id']}{suffix}", acme["token"])
        assert_error(result, 404, "NOT_FOUND")


def test_verify_names_the_event_edited_in_sql(
    api: Harness, acme: dict[str, Any], tmp_path: Path
) -> None:
    for i in range(5):
        api.workflow(acme["token"], name=f"flow {i}")
    assert api.deps.settle("audit_chain", "audit")
    top = api.position()
    clean = _cli(api, "audit", "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"verified {top} events" in clean.stdout
    out = tmp_path / "acme.jsonl"
    exported = _cli(api, "audit", "export", "--tenant", "acme", "--out", str(out))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    names = [line["data"]["definition"]["name"] for line in lines
             if line["event_type"] == "Workflow.Registered"]  # fmt: skip
    assert names == [f"flow {i}" for i in range(5)]
    assert acme["client_secret"] not in out.read_text() and acme["api_key"] not in out.read_text()
    victim = next(
        line["position"]
        for line in lines
        if line["data"].get("definition", {}).get("name") == "flow 2"
    )
    table = api.app.recorder.events_table_name  # type: ignore[attr-defined]
    with psycopg.connect(api.deps.settings.database_url, autocommit=True) as conn:
        edited = conn.execute(
            f"UPDATE {table} SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " 'flow 2', 'flow Z'), 'UTF8') WHERE notification_id = %s",
            (victim,),
        )
        assert edited.rowcount == 1
    altered = _cli(api, "audit", "verify")
    assert altered.returncode == 1, altered.stdout + altered.stderr
    assert f"MISMATCH at position {victim}:" in altered.stdout
    assert f"verified {victim - 1} events" in altered.stdout
