"""`projections rebuild` and `projections status` on the embedded database (SQLite).

The rebuild replays the whole log in big batches (each row folded in memory and written once
per batch); the live models here were built one event per transaction, the way the handlers
read: both must give the same rows, whole tables compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from events.application import Flowledger
from projections import all_projections
from projections.rebuild import rebuild, status
from projections.runner import position, projection_follower
from tests.support.read_models import tables, varied_log

FILLED = ("workflows", "executions", "execution_workflow_names", "credit_balances",
          "credit_transactions", "automation_events", "webhook_endpoints",
          "webhook_deliveries")  # fmt: skip


def project(app: Flowledger, batch: int) -> None:
    for projection in all_projections():
        follower = projection_follower(app, projection)
        follower.batch = batch
        follower.catch_up()


def test_rebuild_gives_the_same_rows_as_the_live_models(app: Flowledger) -> None:
    varied_log(app, 600)
    project(app, batch=1)  # one event per transaction
    live = tables(app.db)
    positions = {p.name: position(app.db, p.name) for p in all_projections()}
    assert all(live[t] for t in FILLED), "the log touches every kind of row"
    with app.db.transaction() as cur:  # a row the log does not explain: the rebuild drops it
        cur.execute(
            "UPDATE executions SET status = 'tampered' WHERE seq = %s",
            (live["executions"][0]["seq"],),
        )

    results = [rebuild(app, projection) for projection in all_projections()]

    assert tables(app.db) == live
    assert {p.name: position(app.db, p.name) for p in all_projections()} == positions
    assert {r.name: r.position for r in results} == positions
    assert sum(r.events for r in results) > 600


def test_rebuild_stops_at_the_live_position(app: Flowledger) -> None:
    """The rebuilt model is the live one: events the projector has not seen yet stay for it."""
    varied_log(app, 200)
    project(app, batch=500)
    live = tables(app.db)
    varied_log(app, 100)  # not projected yet

    for projection in all_projections():
        rebuild(app, projection)

    assert tables(app.db) == live
    project(app, batch=500)
    assert tables(app.db) != live


def flowledger(app: Flowledger, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `flowledger` command, run for real on the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env.update(FLOWLEDGER_DATABASE_URL=app.settings.database_url, FLOWLEDGER_VAR_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "flowledger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_shows_each_followers_position_and_lag(app: Flowledger, tmp_path: Path) -> None:
    varied_log(app, 100)
    project(app, batch=500)
    head = int(app.recorder.max_notification_id() or 0)
    varied_log(app, 40)
    new_head = int(app.recorder.max_notification_id() or 0)

    report = status(app, all_projections())

    assert report["head"] == new_head
    by_name = {f["name"]: f for f in report["followers"]}
    assert set(by_name) == {p.name for p in all_projections()} | {"dispatcher"}
    for projection in all_projections():
        assert by_name[projection.name]["position"] == head
        assert by_name[projection.name]["lag"] == new_head - head
    assert by_name["dispatcher"] == {
        "name": "dispatcher", "kind": "dispatcher", "position": 0, "lag": new_head,
    }  # fmt: skip

    done = flowledger(app, tmp_path, "projections", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == report
    done = flowledger(app, tmp_path, "projections", "status")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"head of the log: {new_head:,}" in text and "executions" in text


def test_cli_rebuild_names_unknown_projections_and_changes_nothing(
    app: Flowledger, tmp_path: Path
) -> None:
    varied_log(app, 100)
    project(app, batch=500)
    live = tables(app.db)

    done = flowledger(app, tmp_path, "projections", "rebuild", "executions", "nope")
    assert done.returncode == 2
    assert "unknown projection nope" in done.stderr
    assert tables(app.db) == live

    done = flowledger(app, tmp_path, "projections", "rebuild", "executions")
    assert done.returncode == 0, done.stderr
    assert "executions: rebuilt at position" in done.stdout
    assert "executions: 100%" in done.stderr  # the progress bar
    assert tables(app.db) == live
