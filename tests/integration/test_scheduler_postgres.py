"""The scheduler on PostgreSQL: the unit suite's cases, and two copies racing for real.

Each test gets a database of its own: a scheduler fires every schedule it finds, so tests
sharing one would fire each other's workflows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events.application import Flowledger
from flowledger.settings import Settings
from tests.conftest import fresh_database
from tests.support.waiting import until
from tests.unit.test_projections import new_org
from tests.unit.test_scheduler import (
    Clock,
    runs,
    scheduled,
    slots,
    test_2am_in_paris_fires_once_a_day_across_both_2027_dst_changes,
    test_a_restart_right_after_a_slot_does_not_fire_it_again,
    test_fires_each_slot_once_with_the_schedule_trigger_and_its_price,
    test_fires_nothing_for_deactivated_or_archived_workflows,
    test_restart_after_three_missed_slots_with_catchup_latest_fires_one,
    test_restart_after_three_missed_slots_with_catchup_none_fires_none,
    test_two_copies_queue_one_execution_per_slot,
    utc,
)
from workers.scheduler import Fired, Scheduler

__all__ = [
    "test_2am_in_paris_fires_once_a_day_across_both_2027_dst_changes",
    "test_a_restart_right_after_a_slot_does_not_fire_it_again",
    "test_fires_each_slot_once_with_the_schedule_trigger_and_its_price",
    "test_fires_nothing_for_deactivated_or_archived_workflows",
    "test_restart_after_three_missed_slots_with_catchup_latest_fires_one",
    "test_restart_after_three_missed_slots_with_catchup_none_fires_none",
    "test_two_copies_queue_one_execution_per_slot",
]


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with fresh_database("flowledger_sched") as url:
        yield Settings(database_url=url, jwt_secret="scheduler-test-" + "x" * 32, var_dir=tmp_path)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flowledger]:
    application = Flowledger(settings)
    yield application
    application.close()
    application.db.close()


@pytest.fixture
def other(settings: Settings, app: Flowledger) -> Iterator[Flowledger]:
    """A second application on the same database: another scheduler process's."""
    application = Flowledger(settings)
    yield application
    application.close()
    application.db.close()


def at_once(copies: list[Scheduler]) -> list[list[Fired]]:
    """One tick of every copy, started together (a barrier), each in its own thread."""
    start = threading.Barrier(len(copies))
    fired: list[list[Fired]] = [[] for _ in copies]

    def tick(i: int) -> None:
        start.wait()
        fired[i] = copies[i].tick()

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(copies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return fired


def test_two_copies_ticking_at_the_same_instant_queue_one_run_per_slot(
    app: Flowledger, other: Flowledger
) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "* * * * *", credits_per_execution=1)
    clock = Clock(utc(2027, 1, 10, 9))
    copies = [Scheduler(app, clock), Scheduler(other, clock)]
    for minute in range(6):
        clock.set(utc(2027, 1, 10, 9, minute, 1))
        first, second = at_once(copies)
        assert first == second  # the loser of the race found the winner's run
    assert len(runs(app, workflow_id)) == 6
    assert slots(app, workflow_id) == [utc(2027, 1, 10, 9, m) for m in range(6)]


def test_one_copy_is_active_and_the_standby_takes_over_without_a_gap(
    app: Flowledger, other: Flowledger
) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "* * * * * *", credits_per_execution=0)  # every second
    first, second = Scheduler(app), Scheduler(other)
    threads = [threading.Thread(target=s.run, daemon=True) for s in (first, second)]
    threads[0].start()
    assert first.active.wait(10)
    threads[1].start()
    time.sleep(2.5)
    assert not second.active.is_set()  # a hot standby, waiting on the advisory lock
    first.stop()
    threads[0].join(timeout=10)
    stopped_at = datetime.now(UTC)
    assert second.active.wait(10)
    until(lambda: any(s > stopped_at + timedelta(seconds=1) for s in slots(app, workflow_id)))
    second.stop()
    threads[1].join(timeout=10)

    fired = slots(app, workflow_id)
    assert len(fired) == len(set(fired)) == len(runs(app, workflow_id))  # one run per slot
    expected = [fired[0] + timedelta(seconds=i) for i in range(len(fired))]
    assert fired == expected  # the standby fired the slots of the takeover too: no gap
