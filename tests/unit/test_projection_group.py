"""One follower for every projection (`ProjectionGroup`), on the embedded SQLite store.

The group reads the log once per batch from its lowest member's position and applies every
projection in one transaction: each must get exactly the events after its own position
within its own topics, end with its own tracking row at the same place as if it had been
followed alone, and a crash in any handler must leave every member where it was.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from commands.user import RegisterUser, register_user
from events.application import Flowledger
from events.user import User
from flowledger.db import Cursor
from flowledger.processes import projection_followers, run_followers
from projections import all_projections
from projections.rebuild import _table_names
from projections.runner import (
    Item,
    Projection,
    ProjectionGroup,
    handles,
    position,
    projection_follower,
    record_position,
    topic_of,
)
from tests.support.read_models import tables, varied_log
from tests.support.waiting import until


def top(app: Flowledger) -> int:
    return int(app.recorder.max_notification_id() or 0)


def ids(app: Flowledger, after: int = 0, topics: Sequence[str] = ()) -> list[int]:
    """The positions of the log after `after` (of `topics`, when given)."""
    got = app.recorder.select_notifications(
        after, 1_000_000, topics=list(topics), inclusive_of_start=False
    )
    return [n.id for n in got]


def register(app: Flowledger, n: int, tag: str) -> None:
    for i in range(n):
        register_user(
            app, RegisterUser(email=f"{tag}-{i}@example.com", password="x" * 12, full_name="G")
        )


def forget_read_models(app: Flowledger) -> None:
    """Drop every read-model table and tracking row, so the log can be projected again."""
    with app.db.transaction() as cur:
        for projection in all_projections():
            for table in _table_names(projection):
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute("DELETE FROM tracking")


class Registrations(Projection):
    """Remembers every position it is handed; its one topic is `User.Registered`."""

    name = "test_registrations"

    def __init__(self) -> None:
        self.seen: list[int] = []

    @handles(User.Registered)
    def registered(self, cur: Cursor, event: Any, pos: int) -> None:
        pass  # declares the topic

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        self.seen.extend(i.position for i in items)  # all it was handed, of any topic


class Everything(Projection):
    """Follows the whole log (no topics, like the audit projection) and remembers it."""

    name = "test_everything"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        self.seen.extend(i.position for i in items)


class Failing(Projection):
    """Writes a row per event, then fails on the event at `fail_at` (while it is set)."""

    name = "test_failing"
    tables: ClassVar[list[str]] = [
        "CREATE TABLE IF NOT EXISTS test_failing (position BIGINT PRIMARY KEY)"
    ]

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at
        self.failures = 0

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        for item in items:
            cur.execute("INSERT INTO test_failing (position) VALUES (%s)", (item.position,))
            if item.position == self.fail_at:
                self.failures += 1
                raise RuntimeError(f"boom at {item.position}")


def test_the_group_gives_the_same_rows_as_each_projection_alone(app: Flowledger) -> None:
    varied_log(app, 300)
    for projection in all_projections():
        projection_follower(app, projection).catch_up()
    alone = tables(app.db)
    positions_alone = {p.name: position(app.db, p.name) for p in all_projections()}
    forget_read_models(app)

    group = ProjectionGroup(app, all_projections(), batch=37)  # many batches, odd edges
    group.catch_up()

    assert tables(app.db) == alone
    assert {p.name: position(app.db, p.name) for p in all_projections()} == positions_alone
    assert set(positions_alone.values()) == {top(app)}


def test_members_at_different_positions_each_get_their_own_events(app: Flowledger) -> None:
    register(app, 4, "early")
    middle = top(app)
    register(app, 5, "late")
    registrations, everything = Registrations(), Everything()
    group = ProjectionGroup(app, [registrations, everything], batch=3)
    with app.db.transaction() as cur:
        record_position(cur, everything.name, middle)  # e.g. rebuilt up to here

    group.catch_up()

    assert registrations.seen == ids(app, 0, [topic_of(User.Registered)])  # its topic, once
    assert everything.seen == ids(app, middle)  # every topic, after its own position
    assert position(app.db, registrations.name) == position(app.db, everything.name) == top(app)


def test_a_member_ahead_is_not_handed_events_again(app: Flowledger) -> None:
    varied_log(app, 300)
    for projection in all_projections():
        projection_follower(app, projection).catch_up()
    expected = tables(app.db)
    forget_read_models(app)
    projections = all_projections()
    for projection in projections:
        if projection.name in ("executions", "audit"):  # at the top already
            projection_follower(app, projection).catch_up()

    ProjectionGroup(app, projections, batch=50).catch_up()

    assert tables(app.db) == expected
    assert {position(app.db, p.name) for p in projections} == {top(app)}


def test_positions_move_to_the_top_when_no_event_is_of_their_topics(app: Flowledger) -> None:
    register(app, 3, "users")  # no workflow events at all
    workflows = next(p for p in all_projections() if p.name == "workflows")

    ProjectionGroup(app, [workflows, Registrations()]).catch_up()

    assert position(app.db, "workflows") == position(app.db, Registrations.name) == top(app)


def test_a_failing_handler_rolls_back_every_member(app: Flowledger) -> None:
    register(app, 3, "before")
    workflows = next(p for p in all_projections() if p.name == "workflows")
    ProjectionGroup(app, [workflows]).catch_up()
    done = top(app)
    varied_log(app, 50)
    failing = Failing(fail_at=done + 5)
    group = ProjectionGroup(app, [*all_projections(), failing], batch=1000)  # tables made
    rows_before = tables(app.db)

    with pytest.raises(RuntimeError, match="boom"):
        group.catch_up()

    assert tables(app.db) == rows_before  # no projection's rows moved
    assert position(app.db, "workflows") == done
    assert {position(app.db, p.name) for p in all_projections() if p.name != "workflows"} == {0}
    assert app.db.query("SELECT * FROM test_failing") == []

    failing.fail_at = None
    group.catch_up()
    assert {position(app.db, n) for n in group.names} == {top(app)}
    assert len(app.db.query("SELECT * FROM test_failing")) == len(ids(app))


def test_the_running_group_restarts_after_a_crash_and_catches_up(app: Flowledger) -> None:
    """Embedded: one thread woken by the application's in-process condition; a handler that
    fails once crashes the loop, which `run_followers` restarts from the tracked positions."""
    register(app, 2, "first")
    failing = Failing(fail_at=top(app))
    group = ProjectionGroup(app, [Registrations(), failing])
    [thread] = run_followers([group])
    try:
        until(lambda: failing.failures >= 1, what="the handler to fail")
        failing.fail_at = None
        register(app, 3, "second")  # saves wake the group in-process
        until(lambda: {position(app.db, n) for n in group.names} == {top(app)}, what="catch up")
        assert group.active.is_set()
    finally:
        group.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
    # one row per event: the failed batch's rows were rolled back (a primary key), or the
    # retry would have failed on them
    assert len(app.db.query("SELECT * FROM test_failing")) == len(ids(app))


def test_projection_followers_is_one_group(app: Flowledger) -> None:
    [group] = projection_followers(app)
    assert isinstance(group, ProjectionGroup)
    assert sorted(group.names) == sorted(p.name for p in all_projections())
    [only] = projection_followers(app, ["executions", "workflows"])
    assert sorted(only.names) == ["executions", "workflows"]
    with pytest.raises(ValueError, match="no such projection: nope"):
        projection_followers(app, ["executions", "nope"])


def test_stop_ends_an_idle_group(app: Flowledger) -> None:
    group = ProjectionGroup(app, [Registrations()])
    thread = threading.Thread(target=group.run, daemon=True)
    thread.start()
    assert group.active.wait(5)
    group.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and not group.active.is_set()
