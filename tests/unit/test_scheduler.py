"""The scheduler with an injected clock: cron slots in IANA time zones, DST, catch-up, copies.

Each test drives the real command handlers on an embedded application (SQLite file); the
workflows read model is caught up by hand, the clock is a plain object the test moves.
`tests/integration/test_scheduler_postgres.py` runs the same tests on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from commands.workflow import archive_workflow, set_workflow_active
from events.application import Flowledger
from events.execution import Execution
from projections.runner import projection_follower, topic_of
from projections.workflows import WorkflowsProjection
from tests.unit.test_projections import Org, new_org, new_workflow
from workers.scheduler import Scheduler, latest_slot, next_slot, slot_key, slots_between

PARIS = ZoneInfo("Europe/Paris")
QUEUED = topic_of(Execution.Queued)


class Clock:
    """The scheduler's `now`: stands still until the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        self.at = at


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def scheduled(
    app: Flowledger, org: Org, cron: str, timezone: str = "UTC", catchup: str = "latest", **kw: Any
) -> UUID:
    """A workflow with a schedule trigger, visible in the read model."""
    trigger = {"type": "schedule", "cron": cron, "timezone": timezone, "catchup": catchup}
    workflow_id = new_workflow(app, org, name=f"cron {cron}", trigger=trigger, **kw)
    sync(app)
    return workflow_id


def sync(app: Flowledger) -> None:
    projection_follower(app, WorkflowsProjection()).catch_up()


def runs(app: Flowledger, workflow_id: UUID) -> list[Execution.Queued]:
    """Every execution queued for the workflow, as recorded in the event log."""
    notifications = app.recorder.select_notifications(start=1, limit=1_000_000, topics=[QUEUED])
    events = [app.mapper.to_domain_event(n) for n in notifications]
    return [e for e in events if isinstance(e, Execution.Queued) and e.workflow_id == workflow_id]


def slots(app: Flowledger, workflow_id: UUID) -> list[datetime]:
    return sorted(
        datetime.fromisoformat(e.metadata["scheduled_for"]) for e in runs(app, workflow_id)
    )


def walk(
    scheduler: Scheduler, clock: Clock, start: datetime, end: datetime, step: timedelta
) -> None:
    """Tick at every `step` from `start` to `end`, as a running scheduler would."""
    clock.set(start)
    while clock.at <= end:
        scheduler.tick()
        clock.set(clock.at + step)


# -- slots, without a database -------------------------------------------------------------------


def test_a_2am_paris_cron_has_one_slot_per_day_across_both_2027_dst_changes() -> None:
    spring = slots_between("0 2 * * *", PARIS, utc(2027, 3, 26), utc(2027, 3, 30, 12))
    assert [s.astimezone(PARIS).isoformat() for s in spring] == [
        "2027-03-26T02:00:00+01:00",
        "2027-03-27T02:00:00+01:00",
        "2027-03-28T03:00:00+02:00",  # 02:00 does not exist: shifted by the gap
        "2027-03-29T02:00:00+02:00",
        "2027-03-30T02:00:00+02:00",
    ]
    autumn = slots_between("0 2 * * *", PARIS, utc(2027, 10, 29, 12), utc(2027, 11, 2, 12))
    assert [s.astimezone(PARIS).isoformat() for s in autumn] == [
        "2027-10-30T02:00:00+02:00",
        "2027-10-31T02:00:00+02:00",  # 02:00 happens twice: the first one only
        "2027-11-01T02:00:00+01:00",
        "2027-11-02T02:00:00+01:00",
    ]


def test_slots_in_the_spring_gap_land_once_on_the_instants_after_it() -> None:
    found = slots_between("*/30 * * * *", PARIS, utc(2027, 3, 28, 0, 15), utc(2027, 3, 28, 2, 15))
    assert [s.astimezone(PARIS).strftime("%H:%M%z") for s in found] == [
        "01:30+0100",
        "03:00+0200",  # 02:00 shifted, and the real 03:00: one slot
        "03:30+0200",  # 02:30 shifted, and the real 03:30: one slot
        "04:00+0200",
    ]


def test_next_and_latest_slots_step_over_the_dst_changes() -> None:
    assert next_slot("0 2 * * *", PARIS, utc(2027, 3, 27, 12)) == utc(2027, 3, 28, 1)
    assert latest_slot("0 2 * * *", PARIS, utc(2027, 3, 28, 1)) == utc(2027, 3, 28, 1)
    assert latest_slot("0 2 * * *", PARIS, utc(2027, 3, 28, 0, 59)) == utc(2027, 3, 27, 1)
    # In the repeated hour (02:10 CET), the latest 15-minute slot is 02:45 CEST.
    assert latest_slot("*/15 * * * *", PARIS, utc(2027, 10, 31, 1, 10)) == utc(2027, 10, 31, 0, 45)
    assert next_slot("*/15 * * * *", PARIS, utc(2027, 10, 31, 0, 45)) == utc(2027, 10, 31, 2)


def test_a_seconds_field_gives_sub_minute_slots() -> None:
    found = slots_between("* * * * * */10", ZoneInfo("UTC"), utc(2027, 1, 1), utc(2027, 1, 1, 0, 1))
    assert len(found) == 6 and found[0] == utc(2027, 1, 1, 0, 0, 10)


def test_the_slot_key_names_the_workflow_and_the_utc_instant() -> None:
    key = slot_key("w", datetime(2027, 3, 28, 3, tzinfo=PARIS))
    assert key == "schedule:w:2027-03-28T01:00:00+00:00"


# -- the scheduler ------------------------------------------------------------------------------


def test_2am_in_paris_fires_once_a_day_across_both_2027_dst_changes(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "0 2 * * *", "Europe/Paris", catchup="none")
    clock = Clock(utc(2027, 3, 26, 12))  # (none: the jump from March to October fires nothing)
    scheduler = Scheduler(app, clock)
    walk(scheduler, clock, utc(2027, 3, 26, 12), utc(2027, 3, 30, 12), timedelta(minutes=10))
    walk(scheduler, clock, utc(2027, 10, 29, 12), utc(2027, 11, 2, 12), timedelta(minutes=10))
    local = [s.astimezone(PARIS) for s in slots(app, workflow_id)]
    assert [s.date().isoformat() for s in local] == [
        "2027-03-27", "2027-03-28", "2027-03-29", "2027-03-30",
        "2027-10-30", "2027-10-31", "2027-11-01", "2027-11-02",
    ]  # fmt: skip
    assert local[1].isoformat() == "2027-03-28T03:00:00+02:00"
    assert local[5].isoformat() == "2027-10-31T02:00:00+02:00"


def test_the_fall_back_hour_does_not_fire_its_slots_twice(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "*/20 * * * *", "Europe/Paris", catchup="none")
    clock = Clock(utc(2027, 10, 30, 23, 30, 30))  # 01:30:30 CEST
    scheduler = Scheduler(app, clock)
    walk(scheduler, clock, clock.at, utc(2027, 10, 31, 2, 30), timedelta(seconds=20))
    wall = [s.astimezone(PARIS).strftime("%H:%M%z") for s in slots(app, workflow_id)]
    assert wall == [
        "01:40+0200", "02:00+0200", "02:20+0200", "02:40+0200",  # not again at 02:xx CET
        "03:00+0100", "03:20+0100",
    ]  # fmt: skip


def test_fires_each_slot_once_with_the_schedule_trigger_and_its_price(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "*/5 * * * *", credits_per_execution=3)
    clock = Clock(utc(2027, 1, 10, 9, 0, 1))
    scheduler = Scheduler(app, clock)
    [fired] = scheduler.tick()
    assert scheduler.tick() == []  # same instant again: nothing new
    clock.set(utc(2027, 1, 10, 9, 4, 59))
    assert scheduler.tick() == []
    [run] = runs(app, workflow_id)
    assert run.originator_id == fired.execution_id and fired.slot == utc(2027, 1, 10, 9)
    assert run.trigger == "schedule" and run.credits == 3 and run.input == {}
    assert run.metadata == {"scheduled_for": "2027-01-10T09:00:00+00:00"}
    assert run.key == "schedule:" + f"{workflow_id}:2027-01-10T09:00:00+00:00"


def test_restart_after_three_missed_slots_with_catchup_latest_fires_one(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "0 * * * *", catchup="latest")
    clock = Clock(utc(2027, 1, 10, 9, 0, 5))
    Scheduler(app, clock).tick()  # fires 09:00, then the process stops
    clock.set(utc(2027, 1, 10, 12, 30))  # 10:00, 11:00 and 12:00 were missed
    restarted = Scheduler(app, clock)
    restarted.tick()
    restarted.tick()
    assert slots(app, workflow_id) == [utc(2027, 1, 10, 9), utc(2027, 1, 10, 12)]
    clock.set(utc(2027, 1, 10, 13, 0, 1))
    restarted.tick()
    assert slots(app, workflow_id)[-1] == utc(2027, 1, 10, 13)
    assert len(runs(app, workflow_id)) == 3


def test_restart_after_three_missed_slots_with_catchup_none_fires_none(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "0 * * * *", catchup="none")
    clock = Clock(utc(2027, 1, 10, 9, 0, 5))
    Scheduler(app, clock).tick()
    clock.set(utc(2027, 1, 10, 12, 30))
    restarted = Scheduler(app, clock)
    restarted.tick()
    assert slots(app, workflow_id) == [utc(2027, 1, 10, 9)]
    clock.set(utc(2027, 1, 10, 13, 0, 1))  # the next slot fires as usual
    restarted.tick()
    assert slots(app, workflow_id) == [utc(2027, 1, 10, 9), utc(2027, 1, 10, 13)]


def test_a_restart_right_after_a_slot_does_not_fire_it_again(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "0 * * * *")
    clock = Clock(utc(2027, 1, 10, 9, 0, 1))
    Scheduler(app, clock).tick()
    for at in (utc(2027, 1, 10, 9, 0, 10), utc(2027, 1, 10, 9, 40)):  # on time, then late
        clock.set(at)
        Scheduler(app, clock).tick()
    assert len(runs(app, workflow_id)) == 1


def test_two_copies_queue_one_execution_per_slot(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "* * * * *")
    clock = Clock(utc(2027, 1, 10, 9))
    copies = [Scheduler(app, clock), Scheduler(app, clock)]
    for minute in range(5):
        clock.set(utc(2027, 1, 10, 9, minute, 2))
        fired = [f for copy in copies for f in copy.tick()]
        assert len({f.execution_id for f in fired}) == 1  # both found the same run
    assert len(runs(app, workflow_id)) == 5


def test_a_new_schedule_does_not_fire_slots_from_before_it_existed(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = scheduled(app, org, "0 * * * *")  # the last slot was before it existed
    now = datetime.now(UTC)
    clock = Clock(now + timedelta(seconds=1))
    scheduler = Scheduler(app, clock)
    scheduler.tick()
    assert runs(app, workflow_id) == []
    clock.set(next_slot("0 * * * *", ZoneInfo("UTC"), now) + timedelta(seconds=1))
    scheduler.tick()
    assert len(runs(app, workflow_id)) == 1


def test_fires_nothing_for_deactivated_or_archived_workflows(app: Flowledger) -> None:
    org = new_org(app)
    paused = scheduled(app, org, "* * * * *")
    archived = scheduled(app, org, "* * * * *")
    clock = Clock(utc(2027, 1, 10, 9, 0, 1))
    scheduler = Scheduler(app, clock)
    set_workflow_active(app, org.id, paused, False)
    archive_workflow(app, org.id, archived)
    scheduler.tick()  # the read model has not seen it yet: the aggregate says no
    sync(app)
    clock.set(utc(2027, 1, 10, 9, 1, 1))
    scheduler.tick()
    assert runs(app, paused) == [] and runs(app, archived) == []


def test_a_slot_refused_for_credits_is_skipped_and_the_others_fire(app: Flowledger) -> None:
    org = new_org(app)
    too_dear = scheduled(app, org, "* * * * *", credits_per_execution=1_000_000)
    cheap = scheduled(app, org, "* * * * *")
    clock = Clock(utc(2027, 1, 10, 9, 0, 1))
    Scheduler(app, clock).tick()
    assert runs(app, too_dear) == [] and len(runs(app, cheap)) == 1
