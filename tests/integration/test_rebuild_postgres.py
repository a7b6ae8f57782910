"""Zero-downtime rebuilds on PostgreSQL, with real processes.

`flowledger projections rebuild` runs as its own process while gunicorn answers ~100 reads a
second and events keep being written; afterwards every read-model table must equal, row for
row, the read models replayed from scratch the ordinary way, and no request may have failed.
A rebuild killed in the middle (or at the last moment of its switch) must leave the live
tables as they were, and the next run must succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness import prepare_schema, stack_settings
from commands.credits import GrantCredits, grant_credits
from events.application import Flowledger
from flowledger.leader import lock_key
from flowledger.settings import Settings
from projections import all_projections
from projections.rebuild import Partition, log_reader, read_log
from projections.runner import position, projection_follower
from tests.conftest import fresh_database
from tests.support.read_models import reference, tables, varied_log
from tests.support.stack import Stack
from tests.support.waiting import until
from tests.unit.test_projections import Org, new_workflow, run

JWT = "rebuild-test-secret-" + "x" * 32


def flowledger(
    url: str, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """The `flowledger` command, run for real against the test's database."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    environ.update(
        FLOWLEDGER_DATABASE_URL=url, FLOWLEDGER_JWT_SECRET=JWT, FLOWLEDGER_VAR_DIR=str(tmp_path)
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flowledger.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flowledger]:
    with fresh_database("flowledger_rebuild") as url:
        application = Flowledger(Settings(database_url=url, jwt_secret=JWT, var_dir=tmp_path))
        yield application
        application.close()
        application.db.close()


def project(app: Flowledger) -> None:
    for projection in all_projections():
        projection_follower(app, projection).catch_up()


def leftover_schemas(app: Flowledger) -> list[str]:
    rows = app.db.query(
        "SELECT schema_name FROM information_schema.schemata"
        " WHERE schema_name LIKE %s OR schema_name LIKE %s",
        ("flowledger\\_rebuild\\_%", "flowledger\\_retired\\_%"),
    )
    return sorted(r["schema_name"] for r in rows)


#: Replay `executions` in 3 partition processes however short the log (`partitions_for`).
PARALLEL = {"FLOWLEDGER_REBUILD_PARALLEL_MIN": "0", "FLOWLEDGER_REBUILD_WORKERS": "3"}


@pytest.mark.parametrize(
    ("failpoint", "parallel"),
    [
        ("rebuild.after_batch:2", False),
        ("rebuild.before_switch_commit:1", False),
        ("rebuild.partitions_started:1", True),  # killed while its partitions replay
    ],
)
def test_a_killed_rebuild_leaves_the_live_model_untouched_and_a_rerun_succeeds(
    app: Flowledger, tmp_path: Path, failpoint: str, parallel: bool
) -> None:
    varied_log(app, 12_000)
    project(app)
    live = tables(app.db)
    url = app.settings.database_url
    env = {**(PARALLEL if parallel else {}), "FLOWLEDGER_FAILPOINT": failpoint}

    killed = flowledger(url, tmp_path, "projections", "rebuild", "executions", **env)

    assert killed.returncode == -9, killed.stderr[-2000:]
    assert tables(app.db) == live
    assert leftover_schemas(app) == ["flowledger_rebuild_executions"]
    if parallel:  # the orphaned partitions notice and stop (or finish), holding nothing
        until(lambda: _rebuild_sessions(app) == 0, timeout=60, what="orphaned partitions")

    again = flowledger(url, tmp_path, "projections", "rebuild")

    assert again.returncode == 0, again.stderr[-2000:]
    for projection in all_projections():
        assert f"{projection.name}: rebuilt at position" in again.stdout
    assert tables(app.db) == live
    assert leftover_schemas(app) == []


def test_a_second_rebuild_of_the_same_model_is_refused_and_status_shows_lag(
    app: Flowledger, tmp_path: Path
) -> None:
    varied_log(app, 500)
    project(app)
    live = tables(app.db)
    projected = position(app.db, "executions")
    varied_log(app, 300)  # not projected: lag
    url = app.settings.database_url

    with app.db.dedicated_connection() as other:  # a rebuild of executions in progress
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key("rebuild:executions"),))
        refused = flowledger(url, tmp_path, "projections", "rebuild", "executions")
    status = flowledger(url, tmp_path, "projections", "status", "--json")

    assert refused.returncode == 1
    assert "another rebuild of executions is running" in refused.stderr
    assert tables(app.db) == live
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    head = int(app.recorder.max_notification_id() or 0)
    followers = {f["name"]: f for f in report["followers"]}
    assert report["head"] == head
    assert followers["executions"]["position"] == projected
    assert followers["executions"]["lag"] == head - projected > 0
    assert followers["dispatcher"]["lag"] == head


class Readers:
    """Threads reading the API's lists at about `rate` requests a second in all."""

    def __init__(self, base: str, token: str, rate: float = 100, threads: int = 4) -> None:
        self.base = base
        self.token = token
        self.pause = threads / rate
        self.stopped = threading.Event()
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _read(self, n: int) -> None:
        paths = ["/executions?limit=50", "/workflows", "/credits/transactions?limit=20"]
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as http:
            i = n
            while not self.stopped.is_set():
                started = time.monotonic()
                path = paths[i % len(paths)]
                i += 1
                try:
                    answer = http.get(path)
                    self.statuses.append(answer.status_code)
                    if answer.status_code != 200:
                        self.failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{path}: {e!r}")
                self.stopped.wait(max(0.0, self.pause - (time.monotonic() - started)))


def test_rebuild_while_serving_reads_and_writing_events_gives_identical_rows(
    tmp_path: Path,
) -> None:
    with fresh_database("flowledger_rebuild") as url:
        stack = Stack(
            workdir=tmp_path,
            database_url=url,
            extra_env={"FLOWLEDGER_RATE_LIMIT_SCALE": "1000000", "FLOWLEDGER_JWT_SECRET": JWT},
        )
        app = prepare_schema(stack_settings(stack))
        try:
            varied_log(app, 20_000)
            stack.start("web", "projector")
            token, org = _tenant(stack)
            grant_credits(app, org.id, GrantCredits(amount=100_000))
            workflow = new_workflow(app, org)
            for _ in range(20):
                run(app, org, workflow)
            _caught_up(app)
            first = app.db.query("SELECT id FROM executions ORDER BY seq LIMIT 1")[0]["id"]
            app.db.query("UPDATE executions SET status = 'tampered' WHERE id = %s", (first,))

            writing = threading.Event()
            writer = threading.Thread(target=_write, args=(app, org, workflow, writing))
            with Readers(f"{stack.url}/api/v1", token) as readers:
                writer.start()
                rebuilt = flowledger(url, tmp_path, "projections", "rebuild", **PARALLEL)
                writing.set()
                writer.join(timeout=60)
                _caught_up(app)

            assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
            for projection in all_projections():
                assert f"{projection.name}: rebuilt at position" in rebuilt.stdout
            assert "(online)" in rebuilt.stdout  # the live projector ran throughout
            assert "rebuild.parallel" in rebuilt.stdout + rebuilt.stderr  # in partitions
            assert readers.failures == []
            assert len(readers.statuses) >= 100
            written = app.db.one("SELECT COUNT(*) AS n FROM executions WHERE organization_id = %s",
                                 (str(org.id),))  # fmt: skip
            assert written is not None and int(written["n"]) > 20  # the writer's runs too
            assert app.db.query("SELECT id FROM executions WHERE status = 'tampered'") == []
            assert tables(app.db) == reference(app)
            assert leftover_schemas(app) == []
        finally:
            stack.stop()
            app.close()
            app.db.close()


def _tenant(stack: Stack) -> tuple[str, Org]:
    email = f"rebuild-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=f"{stack.url}/api/v1", timeout=30) as http:
        body = {"email": email, "password": "a long password", "full_name": "Reb"}
        assert http.post("/auth/register", json=body).status_code == 201
        login = http.post("/auth/login", json={"email": email, "password": "a long password"})
        token = login.json()["access_token"]
        tenant = f"reb-{uuid.uuid4().hex[:8]}"
        created = http.post(
            "/organizations",
            json={"name": "Rebuild", "tenant_id": tenant, "plan_type": "enterprise"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
    return token, Org(uuid.UUID(created.json()["id"]), tenant)


def _write(app: Flowledger, org: Org, workflow: Any, stop: threading.Event) -> None:
    """Executions run to the end, one after the other, until told to stop."""
    outcomes = ("completed", "failed", "completed", "cancelled")
    n = 0
    while not stop.is_set():
        run(app, org, workflow, outcomes[n % len(outcomes)])
        n += 1
        stop.wait(0.01)


def _rebuild_sessions(app: Flowledger) -> int:
    """Connections of partition processes still open."""
    row = app.db.one(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE %s",
        ("flowledger-rebuild-%",),
    )
    return int(row["n"]) if row else 0


def _caught_up(app: Flowledger) -> None:
    head = int(app.recorder.max_notification_id() or 0)
    names = [p.name for p in all_projections()]
    until(
        lambda: all(position(app.db, name) >= head for name in names),
        timeout=120,
        what="the projector to reach the head of the log",
    )


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_the_replay_reads_exactly_what_the_recorder_reads(app: Flowledger, batch: int) -> None:
    """Windows of positions that grow over sparse topics and shrink over dense ones, and
    partitions, give every notification of the topics once, in order, as the recorder."""
    varied_log(app, 400)
    head = int(app.recorder.max_notification_id() or 0)
    by_name = {p.name: p for p in all_projections()}
    for name in ("automation_events", "executions", "audit"):  # sparse, dense, everything
        projection = by_name[name]
        expected = [
            n.id
            for n in app.recorder.select_notifications(
                start=0, limit=head + 1, topics=sorted(projection.topics),
                inclusive_of_start=False,
            )
        ]  # fmt: skip
        with log_reader(app, projection) as select:
            read = [n.id for got in read_log(app, [], 0, head, batch, select) for n in got]
        assert read == expected, name
        shares: list[int] = []
        for index in range(3):
            with log_reader(app, projection, Partition(index, 3)) as select:
                shares += [n.id for got in read_log(app, [], 0, head, batch, select) for n in got]
        if projection.keyed_by_originator:  # each event in exactly one share
            assert sorted(shares) == expected, name
        elif projection.by_originator:  # the shared topics (refunds) in every share
            assert set(shares) == set(expected) and len(shares) > len(expected), name
