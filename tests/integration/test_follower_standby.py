"""Two copies of a follower on PostgreSQL: one active (advisory lock), one hot standby."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from commands.user import RegisterUser, register_user
from events.application import Flowledger
from flowledger.settings import Settings
from projections.runner import Follower, Item, position, record_position
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
