"""The audit surface on an embedded app: the log by position, time travel, history, roles,
the hash chain with `flowledger audit verify` and `export`, and redaction."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from events.application import Flowledger
from flowledger.audit import verify
from projections.audit import AuditChainProjection, AuditProjection
from projections.redaction import REDACTED, redact
from projections.runner import Item, projection_follower, record_position
from tests.unit.test_api_harness import Harness, assert_error

LOG = "/api/v1/audit/log"
AGGREGATES = "/api/v1/audit/aggregates"


def _log(api: Harness, token: str, **params: Any) -> dict[str, Any]:
    result = api.call("GET", LOG, token, params=params)
    assert result.status_code == 200, result.text
    return result.json


def _everything(api: Harness, token: str) -> list[dict[str, Any]]:
    items, after = [], 0
    while True:
        page = _log(api, token, after=after, limit=1000)
        items += page["items"]
        if page["next_after"] is None:
            return items
        after = page["next_after"]


def _workflows(api: Harness, token: str, n: int) -> list[dict[str, Any]]:
    return [api.workflow(token, name=f"flow {i}") for i in range(n)]


def test_the_log_pages_by_position_without_gap_or_repeat(
    api: Harness, acme: dict[str, Any]
) -> None:
    _workflows(api, acme["token"], 12)
    everything = _everything(api, acme["token"])
    assert len(everything) >= 15
    size = len(everything) // 3 + 1  # three pages, the last one short
    pages, after = [], 0
    while after is not None:
        page = _log(api, acme["token"], after=after, limit=size)
        pages.append(page["items"])
        after = page["next_after"]
    assert len(pages) == 3
    assert [len(p) for p in pages[:2]] == [size, size]
    positions = [item["position"] for page in pages for item in page]
    assert positions == [item["position"] for item in everything]
    assert positions == sorted(set(positions)), "a gap or a repeat between pages"
    first = everything[0]
    assert set(first) == {"position", "aggregate_id", "aggregate_type", "version",
                          "event_type", "occurred_at", "actor", "data"}  # fmt: skip
    assert first["event_type"] == "Organization.Created" and first["aggregate_id"] == acme["id"]
    assert first["actor"].startswith("user:")


def test_the_log_filters_by_event_type_and_aggregate(api: Harness, acme: dict[str, Any]) -> None:
    one, two = _workflows(api, acme["token"], 2)
    api.call("PATCH", f"/api/v1/workflows/{one['id']}", acme["token"], json={"name": "renamed"})
    registered = _log(api, acme["token"], event_type="Workflow.Registered")["items"]
    assert [i["aggregate_id"] for i in registered] == [one["id"], two["id"]]
    of_one = _log(api, acme["token"], aggregate_id=one["id"])["items"]
    assert [i["event_type"] for i in of_one] == ["Workflow.Registered", "Workflow.Updated"]
    assert of_one[1]["data"] == {"changes": {"name": "renamed"}}


def test_another_organizations_events_are_never_visible(api: Harness, acme: dict[str, Any]) -> None:
    theirs = api.user("other@example.com")
    other = api.organization(theirs, "globex")
    their_workflow = api.workflow(theirs, name="secret plans")
    ours = {i["aggregate_id"] for i in _everything(api, acme["token"])}
    assert other["id"] not in ours and their_workflow["id"] not in ours
    assert "secret plans" not in json.dumps(_everything(api, acme["token"]))
    for path in (f"{AGGREGATES}/{their_workflow['id']}", f"{AGGREGATES}/{other['id']}/history"):
        assert_error(api.call("GET", path, acme["token"]), 404, "NOT_FOUND")
    filtered = _log(api, acme["token"], aggregate_id=their_workflow["id"])
    assert filtered["items"] == []


def test_a_users_own_aggregate_is_no_organizations(api: Harness, acme: dict[str, Any]) -> None:
    me = api.call("GET", "/api/v1/auth/me", acme["token"]).json
    assert_error(api.call("GET", f"{AGGREGATES}/{me['id']}", acme["token"]), 404, "NOT_FOUND")
    registered = _log(api, acme["token"], event_type="User.Registered")["items"]
    assert registered == []


def test_time_travel_shows_a_workflows_name_before_a_later_patch(
    api: Harness, acme: dict[str, Any]
) -> None:
    [workflow] = _workflows(api, acme["token"], 1)
    path = f"/api/v1/workflows/{workflow['id']}"
    assert api.call("PATCH", path, acme["token"], json={"name": "after"}).status_code == 200
    then = api.call("GET", f"{AGGREGATES}/{workflow['id']}", acme["token"], params={"version": 1})
    assert then.status_code == 200, then.text
    assert then.json["version"] == 1 and then.json["aggregate_type"] == "Workflow"
    assert then.json["state"]["definition"]["name"] == "flow 0"
    now = api.call("GET", f"{AGGREGATES}/{workflow['id']}", acme["token"]).json
    assert now["version"] == 2 and now["state"]["definition"]["name"] == "after"
    history = api.call("GET", f"{AGGREGATES}/{workflow['id']}/history", acme["token"]).json
    assert [(i["version"], i["event_type"]) for i in history["items"]] == [
        (1, "Workflow.Registered"),
        (2, "Workflow.Updated"),
    ]


@pytest.mark.parametrize("version", ["3", "0", "-1", "two"])
def test_a_version_that_never_was_is_a_clear_4xx(
    api: Harness, acme: dict[str, Any], version: str
) -> None:
    [workflow] = _workflows(api, acme["token"], 1)
    path = f"{AGGREGATES}/{workflow['id']}"
    result = api.call("GET", path, acme["token"], params={"version": version})
    assert result.status_code in (400, 422), result.text
    assert result.json["error"]["code"] in ("BAD_REQUEST", "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "1001"}, {"after": "-1"}, {"after": "x"},
     {"aggregate_id": "not-a-uuid"}, {"event_type": "x" * 201}],
)  # fmt: skip
def test_bad_log_parameters_are_400_in_the_envelope(
    api: Harness, acme: dict[str, Any], params: dict[str, str]
) -> None:
    assert_error(api.call("GET", LOG, acme["token"], params=params), 400, "BAD_REQUEST")


def test_members_are_refused_and_auditors_admins_read(api: Harness, acme: dict[str, Any]) -> None:
    member = api.member(acme["token"], acme, "member@example.com", "member")
    auditor = api.member(acme["token"], acme, "auditor@example.com", "auditor")
    admin = api.member(acme["token"], acme, "admin@example.com", "admin")
    assert_error(api.call("GET", LOG, member), 403, "FORBIDDEN")
    path = f"{AGGREGATES}/{acme['id']}"
    assert_error(api.call("GET", path, member), 403, "FORBIDDEN")
    assert_error(api.call("GET", LOG, headers={"X-API-Key": acme["api_key"]}), 403, "FORBIDDEN")
    for token in (auditor, admin):
        assert api.call("GET", LOG, token).status_code == 200
        assert api.call("GET", path, token).json["aggregate_type"] == "Organization"
    assert_error(api.call("GET", LOG), 401, "UNAUTHORIZED")


def test_secrets_never_appear_in_audit_answers(api: Harness, acme: dict[str, Any]) -> None:
    endpoint = api.call(
        "POST",
        "/api/v1/webhooks/endpoints",
        acme["token"],
        json={"url": "https://hooks.example.com/in", "event_types": ["*"]},
    ).json
    rotated = api.call("POST", f"/api/v1/organizations/{acme['id']}/rotate-secret", acme["token"])
    key = api.call("POST", f"/api/v1/organizations/{acme['id']}/api-keys", acme["token"]).json
    secrets = [acme["api_key"], acme["client_secret"], endpoint["secret"], key["api_key"]]
    secrets += [v for v in rotated.json.values() if isinstance(v, str) and len(v) > 20]
    answers = [json.dumps(_everything(api, acme["token"]))]
    for aggregate_id in (acme["id"], endpoint["id"]):
        for suffix in ("", "/history"):
            result = api.call("GET", f"{AGGREGATES}/{aggregate_id}{suffix}", acme["token"])
            assert result.status_code == 200, result.text
            answers.append(result.text)
    text = "\n".join(answers)
    for secret in secrets:
        assert secret not in text
    assert REDACTED in text and "ciphertext" not in text and "key_hash" in text
    org = json.loads(answers[1])["state"]
    assert org["client_secret"] == REDACTED and org["tenant_id"] == "acme"


def test_redaction_reaches_any_depth_and_keeps_the_rest() -> None:
    sealed = {"key_id": "k", "nonce": "n", "ciphertext": "c"}
    value = {
        "password_hash": "x",
        "input": {"user": {"password": "p", "name": "Ann"}, "list": [{"api_key": "k"}]},
        "wrapped": sealed,
        "note": "fl_live_abcdefghijklmnopqrstu",
        "tokens_used": 12,
        "key_id": "visible",
    }
    assert redact(value) == {
        "password_hash": REDACTED,
        "input": {"user": {"password": REDACTED, "name": "Ann"}, "list": [{"api_key": REDACTED}]},
        "wrapped": REDACTED,
        "note": REDACTED,
        "tokens_used": 12,
        "key_id": "visible",
    }


# -- the hash chain ---------------------------------------------------------------------------


def _cli(api: Harness, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own, on the harness's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env["FLOWLEDGER_DATABASE_URL"] = api.deps.settings.database_url
    env["FLOWLEDGER_JWT_SECRET"] = api.deps.settings.jwt_secret or ""
    return subprocess.run(
        [sys.executable, "-m", "flowledger.cli", *argv],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_verify_passes_on_a_clean_log_and_names_an_altered_event(
    api: Harness, acme: dict[str, Any]
) -> None:
    _workflows(api, acme["token"], 3)
    top = api.position()
    api.deps.settle("audit_chain", "audit")
    clean = _cli(api, "audit", "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"verified {top} events" in clean.stdout and "OK" in clean.stdout
    victim = _log(api, acme["token"], event_type="Workflow.Registered")["items"][1]["position"]
    path = api.deps.settings.sqlite_path
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE stored_events SET state = replace(state, 'flow 1', 'flow X') WHERE rowid = ?",
            (victim,),
        )
    altered = _cli(api, "audit", "verify")
    assert altered.returncode == 1, altered.stdout + altered.stderr
    assert f"MISMATCH at position {victim}:" in altered.stdout


def test_verify_names_a_deleted_event_and_a_missing_chain_row(
    api: Harness, acme: dict[str, Any]
) -> None:
    _workflows(api, acme["token"], 2)
    api.deps.settle("audit_chain", "audit")
    settings = api.deps.settings
    assert verify(settings).first_bad is None
    with sqlite3.connect(settings.sqlite_path) as raw:
        raw.execute("DELETE FROM audit_chain WHERE position = 5")
    found = verify(settings)
    assert found.first_bad == 5 and "no row" in (found.reason or "")
    with sqlite3.connect(settings.sqlite_path) as raw:
        raw.execute("DELETE FROM stored_events WHERE rowid = 4")
    found = verify(settings)
    assert found.first_bad == 4 and "no longer stored" in (found.reason or "")


def test_events_not_chained_yet_are_lag_not_failures(api: Harness, acme: dict[str, Any]) -> None:
    api.deps.settle("audit_chain", "audit")
    settings = api.deps.settings
    with sqlite3.connect(settings.sqlite_path) as raw:
        top = raw.execute("SELECT MAX(position) FROM audit_chain").fetchone()[0]
        raw.execute("DELETE FROM audit_chain WHERE position > ?", (top - 3,))
    found = verify(settings)
    assert found.first_bad is None and found.lag == 3 and found.verified == top - 3


def test_the_projection_chains_exactly_what_verify_recomputes(
    api: Harness, acme: dict[str, Any]
) -> None:
    _workflows(api, acme["token"], 4)
    api.deps.settle("audit_chain", "audit")
    found = verify(api.deps.settings, batch=3)  # batches that end anywhere
    assert found.first_bad is None and found.lag == 0 and found.verified == api.position()


def test_export_writes_the_tenants_events_with_their_hashes(
    api: Harness, acme: dict[str, Any], tmp_path: Path
) -> None:
    _workflows(api, acme["token"], 2)
    theirs = api.user("other@example.com")
    api.organization(theirs, "globex")
    api.deps.settle("audit_chain", "audit")
    out = tmp_path / "acme.jsonl"
    done = _cli(api, "audit", "export", "--tenant", "acme", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in line.items() if k != "hash"} for line in lines] == _everything(
        api, acme["token"]
    )
    rows = api.deps.db.query("SELECT position, hash FROM audit_chain")
    hashes = {int(row["position"]): row["hash"] for row in rows}
    assert all(line["hash"] == hashes[line["position"]] for line in lines)
    assert acme["client_secret"] not in out.read_text()
    missing = tmp_path / "none.jsonl"
    unknown = _cli(api, "audit", "export", "--tenant", "nobody", "--out", str(missing))
    assert unknown.returncode == 2 and "unknown tenant" in unknown.stderr


def test_the_chain_is_the_same_in_small_batches_and_after_a_replay(app: Flowledger) -> None:
    owner = register_user(app, RegisterUser(email="a@example.com", password="x" * 12,
                                            full_name="Ann"))  # fmt: skip
    create_organization(app, owner.id, CreateOrganization(name="A", tenant_id="ann"))
    for projection in (AuditChainProjection(), AuditProjection()):
        follower = projection_follower(app, projection)
        follower.batch = 3
        follower.catch_up()
    rows = app.db.query("SELECT position, hash FROM audit_chain ORDER BY position")
    assert [r["position"] for r in rows] == list(range(1, app.recorder.max_notification_id() + 1))
    assert verify(app.settings).first_bad is None
    with app.db.transaction() as cur:
        record_position(cur, "audit_chain", 0)
        record_position(cur, "audit", 0)
    for projection in (AuditChainProjection(), AuditProjection()):
        projection_follower(app, projection).catch_up()
    assert app.db.query("SELECT position, hash FROM audit_chain ORDER BY position") == rows
    assert len(app.db.query("SELECT position FROM audit_events")) == 5


def test_a_rolled_back_batch_is_written_again_in_full(app: Flowledger) -> None:
    owner = register_user(app, RegisterUser(email="b@example.com", password="x" * 12,
                                            full_name="Bob"))  # fmt: skip
    create_organization(app, owner.id, CreateOrganization(name="B", tenant_id="bob"))
    projection = AuditProjection()
    follower = projection_follower(app, projection)
    stored = app.recorder.select_notifications(start=1, limit=100)
    items = [Item(n.id, app.mapper.to_domain_event(n), n) for n in stored]
    with pytest.raises(RuntimeError), app.db.transaction() as cur:
        projection.process(cur, items)
        raise RuntimeError("the commit never happens")
    assert app.db.query("SELECT * FROM audit_owners") == []
    follower.catch_up()  # the same instance: what it remembered must not skip a row
    owners = app.db.query("SELECT aggregate_type FROM audit_owners ORDER BY aggregate_type")
    assert [r["aggregate_type"] for r in owners] == ["CreditAccount", "Organization"]
