"""One follower for every projection (`ProjectionGroup`) on PostgreSQL: the same rows as
each projection replayed alone, one transaction that a failing handler rolls back for every
member, and a rebuild that still finds the live projector's lock (its "online" mode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from events.application import Flowledger
from flowledger.db import Cursor
from flowledger.processes import projection_followers, run_followers
from flowledger.settings import Settings
from projections import all_projections
from projections.rebuild import rebuild
from projections.runner import Item, Projection, ProjectionGroup, position
from tests.conftest import fresh_database
from tests.support.read_models import reference, tables, varied_log
from tests.support.waiting import until


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flowledger]:
    with fresh_database("flowledger_group") as url:
        application = Flowledger(Settings(database_url=url, jwt_secret="x" * 32, var_dir=tmp_path))
        yield application
        application.close()
        application.db.close()


def top(app: Flowledger) -> int:
    return int(app.recorder.max_notification_id() or 0)


class Failing(Projection):
    """Writes a row per event and fails on the event at `fail_at`."""

    name = "test_failing"
    tables: ClassVar[list[str]] = [
        "CREATE TABLE IF NOT EXISTS test_failing (position BIGINT PRIMARY KEY)"
    ]

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        for item in items:
            cur.execute("INSERT INTO test_failing (position) VALUES (%s)", (item.position,))
            if item.position == self.fail_at:
                raise RuntimeError(f"boom at {item.position}")


def test_the_group_gives_the_same_rows_as_each_projection_replayed_alone(
    app: Flowledger,
) -> None:
    varied_log(app, 800)

    ProjectionGroup(app, all_projections(), batch=97).catch_up()

    assert tables(app.db) == reference(app)
    assert {position(app.db, p.name) for p in all_projections()} == {top(app)}


def test_a_failing_handler_rolls_back_every_members_rows_and_position(app: Flowledger) -> None:
    varied_log(app, 100)
    group = ProjectionGroup(app, [*all_projections(), Failing(fail_at=top(app) - 3)])
    empty = tables(app.db)

    with pytest.raises(RuntimeError, match="boom"):
        group.catch_up()

    assert tables(app.db) == empty
    assert app.db.query("SELECT * FROM test_failing") == []
    assert {position(app.db, n) for n in group.names} == {0}


def test_a_rebuild_beside_the_running_group_is_online_and_gives_the_same_rows(
    app: Flowledger,
) -> None:
    """The group holds each member's lock, so a rebuild sees a live projector (it builds up
    to the live position and switches under the group's feet), as with one follower each."""
    varied_log(app, 600)
    [group] = projection_followers(app)
    threads = run_followers([group])
    try:
        assert group.active.wait(15)
        executions = next(p for p in all_projections() if p.name == "executions")
        writer = threading.Thread(target=varied_log, args=(app, 300))
        writer.start()
        result = rebuild(app, executions)
        writer.join(timeout=120)
        head = top(app)
        until(
            lambda: all(position(app.db, n) >= head for n in group.names),
            timeout=60,
            what="the group to reach the head",
        )
    finally:
        group.stop()
        for thread in threads:
            thread.join(timeout=5)
    assert result.mode == "online"
    assert tables(app.db) == reference(app)
