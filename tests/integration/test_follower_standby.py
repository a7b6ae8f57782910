"""Two copies of a follower on PostgreSQL: one active (advisory lock), one hot standby; and
the projector's group, which leads each of its projections by that projection's own lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from commands.user import RegisterUser, register_user
from events.application import Flowledger
from events.user import User
from flowledger.db import Cursor
from flowledger.settings import Settings
from projections.runner import (
    Follower,
    Item,
    Projection,
    ProjectionGroup,
    handles,
    position,
    projection_follower,
    record_position,
)
from tests.conftest import fresh_database
from tests.support.waiting import until


@pytest.fixture
def app(pg_settings: Settings) -> Iterator[Flowledger]:
    application = Flowledger(pg_settings)
    yield application
    application.close()


class Copy:
    """A follower copy that remembers which positions it handled."""

    def __init__(self, app: Flowledger, name: str) -> None:
        self.seen: list[int] = []
        self.follower = Follower(app, name, self.handle)
        self.app = app
        self.thread = threading.Thread(target=self.follower.run, daemon=True)

    def handle(self, items: list[Item], last: int) -> None:
        self.seen.extend(i.position for i in items)
        with self.app.db.transaction() as cur:
            record_position(cur, self.follower.name, last)


def _register(app: Flowledger, n: int, tag: str) -> int:
    for i in range(n):
        register_user(
            app, RegisterUser(email=f"{tag}-{i}@example.com", password="x" * 12, full_name="S")
        )
    return int(app.recorder.max_notification_id() or 0)


def test_standby_takes_over_without_processing_twice(app: Flowledger) -> None:
    name = f"standby-{time.monotonic_ns()}"
    first, second = Copy(app, name), Copy(app, name)
    first.thread.start()
    assert first.follower.active.wait(10)
    second.thread.start()
    top = _register(app, 3, f"{name}-a")
    until(lambda: position(app.db, name) >= top)
    assert second.seen == [] and not second.follower.active.is_set()  # standby

    first.follower.stop()
    first.thread.join(timeout=5)
    assert second.follower.active.wait(10)
    top = _register(app, 3, f"{name}-b")
    until(lambda: position(app.db, name) >= top)
    assert second.seen and min(second.seen) > max(first.seen)  # took over where it stopped
    second.follower.stop()
    second.thread.join(timeout=5)


class Seen(Projection):
    """Records which copy handled each position; the primary key refuses a second time."""

    name = "test_seen"
    tables: ClassVar[list[str]] = [
        "CREATE TABLE IF NOT EXISTS test_seen (position BIGINT PRIMARY KEY, copy TEXT NOT NULL)"
    ]

    def __init__(self, copy: str) -> None:
        self.copy = copy

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        cur.executemany(
            "INSERT INTO test_seen (position, copy) VALUES (%s, %s)",
            [(i.position, self.copy) for i in items],
        )


class Users(Projection):
    """Follows only `User.Registered`; counts them in a table."""

    name = "test_users"
    tables: ClassVar[list[str]] = [
        "CREATE TABLE IF NOT EXISTS test_users (position BIGINT PRIMARY KEY)"
    ]

    @handles(User.Registered)
    def registered(self, cur: Cursor, event: Any, pos: int) -> None:
        cur.execute("INSERT INTO test_users (position) VALUES (%s)", (pos,))


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Flowledger]:
    """A database of its own: the test projections' names are fixed."""
    with fresh_database("flowledger_standby") as url:
        application = Flowledger(Settings(database_url=url, jwt_secret="x" * 32, var_dir=tmp_path))
        yield application
        application.close()
        application.db.close()


def _start(group: ProjectionGroup) -> threading.Thread:
    thread = threading.Thread(target=group.run, daemon=True)
    thread.start()
    return thread


def test_a_second_projector_group_is_a_standby_and_takes_over(fresh: Flowledger) -> None:
    app = fresh
    first = ProjectionGroup(app, [Seen("first"), Users()])
    second = ProjectionGroup(app, [Seen("second"), Users()])
    first_thread = _start(first)
    assert first.active.wait(10)
    second_thread = _start(second)
    top = _register(app, 3, "a")
    until(lambda: position(app.db, "test_seen") >= top and position(app.db, "test_users") >= top)
    assert second.leading == frozenset() and not second.active.is_set()  # standby
    assert {r["copy"] for r in app.db.query("SELECT copy FROM test_seen")} == {"first"}

    first.stop()
    first_thread.join(timeout=5)
    assert second.active.wait(10)
    top = _register(app, 3, "b")
    until(lambda: position(app.db, "test_seen") >= top and position(app.db, "test_users") >= top)
    second.stop()
    second_thread.join(timeout=5)

    rows = app.db.query("SELECT position, copy FROM test_seen ORDER BY position")
    assert [r["position"] for r in rows] == [
        n.id for n in app.recorder.select_notifications(1, 10**6)
    ]
    by_first = [r["position"] for r in rows if r["copy"] == "first"]
    by_second = [r["position"] for r in rows if r["copy"] == "second"]
    assert by_second and min(by_second) > max(by_first)  # took over where it stopped
    assert len(app.db.query("SELECT * FROM test_users")) == 6


def test_a_group_leads_the_members_it_can_and_takes_the_others_when_freed(
    fresh: Flowledger,
) -> None:
    """A projection led elsewhere (another copy, or an offline rebuild) stays there; the group
    goes on with the others and takes it over once its lock is free."""
    app = fresh
    alone = projection_follower(app, Users())
    alone_thread = threading.Thread(target=alone.run, daemon=True)
    alone_thread.start()
    assert alone.active.wait(10)
    group = ProjectionGroup(app, [Seen("group"), Users()])
    group_thread = _start(group)
    until(lambda: group.leading == frozenset({"test_seen"}), what="the free member's lock")
    top = _register(app, 2, "c")
    until(lambda: position(app.db, "test_seen") >= top and position(app.db, "test_users") >= top)
    assert not group.active.is_set()

    alone.stop()
    alone_thread.join(timeout=5)
    until(lambda: group.active.is_set(), what="the group to take the freed lock")
    top = _register(app, 2, "d")
    until(lambda: position(app.db, "test_users") >= top)
    group.stop()
    group_thread.join(timeout=5)
    assert len(app.db.query("SELECT * FROM test_users")) == 4  # each once (primary key)
