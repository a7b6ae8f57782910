"""The scheduler: each due slot of every active `schedule` workflow becomes one execution.

A slot is a cron time read on the wall clock of the trigger's IANA time zone, fired at its
instant in UTC. Daylight-saving changes follow PEP 495 (`fold=0`):

* a wall time that does not exist (spring forward: 02:00-02:59 on 2027-03-28 in
  Europe/Paris) fires at the instant it is shifted to, by the length of the gap: `0 2 * * *`
  fires once, at 03:00 CEST; `30 2 * * *` at 03:30. Slots landing on the same instant
  (`*/15` in the gap and the real 03:xx) are one slot, fired once;
* a wall time that happens twice (fall back: 02:00-02:59 on 2027-10-31) fires once, at its
  first occurrence (CEST). A sub-hourly cron therefore pauses during the repeated hour.

Each (workflow, slot) has one execution: its id is derived from the key
`schedule:{workflow_id}:{slot as UTC ISO 8601}` (`queue_execution(key=...)`), so a second
scheduler copy, a restart or a retried tick finds the run already recorded and adds none.
One copy is active at a time (the advisory lock of `flowledger.leader`); standbys wait.

No "last fired" table: what was fired is in the event log (the deterministic ids), and what
the scheduler keeps in memory is only how far it has looked (`_seen`, per workflow) so each
tick checks just the slots since the previous one. After a restart, or a tick later than
the grace:

* every slot at most `grace` (30 s) old is on time and fires, in both modes;
* `catchup: latest` also fires the most recent older slot when no slot is on time (a slot
  already fired before the restart is found by its id: nothing new is recorded);
* `catchup: none` fires nothing older than the grace.

Only slots after the schedule took effect count (the workflow registered, activated, or its
trigger changed, read from the workflow's events): a daily 09:00 workflow created at 10:00
waits for tomorrow, and a workflow reactivated after a week does not fire for that week.
Inactive or archived workflows fire nothing (checked on the aggregate, not only on the read
model). Runs are `trigger: "schedule"`, with `metadata.scheduled_for`, priced as usual; a
refused slot (credits, input schema) is logged and skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from croniter import croniter

from commands.execution import ExecuteWorkflow, queue_execution
from events.application import Flowledger
from events.errors import DomainError
from events.organization import Organization
from events.workflow import Workflow
from flowledger.leader import leadership
from projections.formats import loads
from projections.workflows import WorkflowsProjection

log = structlog.get_logger()

NAME = "scheduler"
GRACE = timedelta(seconds=30)
REFRESH_SECONDS = 1.0  # how soon a new or changed schedule is seen (from the read model)
_DAY = timedelta(days=1)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- cron slots --------------------------------------------------------------------------------


def instant(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of a wall time: fold=0 (first of a repeated time, gaps shifted)."""
    return wall.replace(tzinfo=tz).astimezone(UTC)


def _offsets(tz: tzinfo, *instants: datetime) -> tuple[timedelta, timedelta]:
    """The smallest and largest UTC offset of `tz` within a day of any of `instants`."""
    found = [
        (at + shift).astimezone(tz).utcoffset() or timedelta(0)
        for at in instants
        for shift in (-_DAY, timedelta(0), _DAY)
    ]
    return min(found), max(found)


def _wall(at: datetime, offset: timedelta) -> datetime:
    """`at` (aware) as a naive wall time at `offset`, to whole seconds."""
    return (at.astimezone(UTC) + offset).replace(tzinfo=None, microsecond=0)


def slots_between(cron: str, tz: tzinfo, after: datetime, until: datetime) -> list[datetime]:
    """The slots in (after, until], in UTC, oldest first, each instant once."""
    low, high = _offsets(tz, after, until)
    # A wall time w is the instant w - offset(w), so a slot after `after` has w > after + low.
    it = croniter(cron, _wall(after, low) - timedelta(seconds=1))
    stop = _wall(until, high) + timedelta(seconds=1)
    found: set[datetime] = set()
    while (wall := it.get_next(datetime)) <= stop:
        at = instant(wall, tz)
        if after < at <= until:
            found.add(at)
    return sorted(found)


def next_slot(cron: str, tz: tzinfo, after: datetime) -> datetime:
    """The first slot after `after`."""
    low, _ = _offsets(tz, after)
    it = croniter(cron, _wall(after, low))
    while (at := instant(it.get_next(datetime), tz)) <= after:
        pass
    return at


def latest_slot(cron: str, tz: tzinfo, at: datetime) -> datetime:
    """The last slot at or before `at`."""
    _, high = _offsets(tz, at)
    it = croniter(cron, _wall(at, high) + timedelta(seconds=1))
    best: datetime | None = None
    stop: datetime | None = None
    while True:
        wall = it.get_prev(datetime)
        if best is not None and stop is not None and wall < stop:
            return best
        slot = instant(wall, tz)
        if slot <= at:
            if best is None:  # earlier wall times may still be later instants near a DST change
                low, high = _offsets(tz, slot)
                stop = wall - (high - low)
            best = slot if best is None else max(best, slot)


def slot_key(workflow_id: UUID | str, slot: datetime) -> str:
    """The execution key of one slot: one run per (workflow, instant) whoever fires it."""
    return f"schedule:{workflow_id}:{slot.astimezone(UTC).isoformat()}"


# -- the schedules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """An active workflow's schedule trigger, and since when it applies."""

    workflow_id: UUID
    organization_id: UUID
    trigger: dict[str, Any]
    since: datetime

    @property
    def cron(self) -> str:
        return str(self.trigger["cron"])

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.trigger.get("timezone") or "UTC")

    @property
    def catchup(self) -> str:
        return str(self.trigger.get("catchup") or "latest")


@dataclass(frozen=True)
class Fired:
    workflow_id: UUID
    slot: datetime
    execution_id: UUID


def schedule_since(app: Flowledger, workflow_id: UUID) -> datetime | None:
    """When the workflow's current schedule took effect: registered, activated, or its
    trigger changed, whichever came last (None if the workflow has no events)."""
    since: datetime | None = None
    trigger: Any = None
    for event in app.repository.event_store.get(workflow_id):
        if isinstance(event, Workflow.Registered):
            since, trigger = event.timestamp, event.definition.get("trigger")
        elif isinstance(event, Workflow.Activated):
            since = event.timestamp
        elif (
            isinstance(event, Workflow.Updated) and event.changes.get("trigger", trigger) != trigger
        ):
            since, trigger = event.timestamp, event.changes["trigger"]
    return since


class Scheduler:
    """Fires due slots; `run()` holds the leadership and ticks until `stop()`.

    `now` is the clock (injected by tests); `tick()` is one pass, usable on its own.
    """

    def __init__(
        self,
        app: Flowledger,
        now: Clock = utc_now,
        *,
        grace: timedelta = GRACE,
        refresh_seconds: float = REFRESH_SECONDS,
        name: str = NAME,
    ) -> None:
        self.app = app
        self.now = now
        self.grace = grace
        self.refresh_seconds = refresh_seconds
        self.name = name
        self.stopped = threading.Event()
        self.active = threading.Event()  # set while this copy holds the lock
        self._seen: dict[UUID, datetime] = {}  # per workflow: slots up to here are handled
        self._since: dict[str, tuple[str, datetime | None]] = {}  # id: (updated_at, since)
        self._tenants: dict[UUID, str] = {}
        self._next_wake: datetime | None = None
        app.db.script(WorkflowsProjection.tables)  # read before the projector made it

    # -- the loop ------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        """Take the lock, then tick at each slot (or every `refresh_seconds`) until stopped."""
        with leadership(self.app.db, self.name, self.stopped) as conn:
            if self.stopped.is_set():
                return
            self.active.set()
            log.info("scheduler.active", name=self.name)
            try:
                while not self.stopped.is_set():
                    self.tick()
                    if conn is not None:
                        conn.execute("SELECT 1")  # the lock lives as long as this session
                    self.stopped.wait(self._sleep_seconds())
            finally:
                self.active.clear()

    def _sleep_seconds(self) -> float:
        if self._next_wake is None:
            return self.refresh_seconds
        until = (self._next_wake - self.now()).total_seconds()
        return max(0.0, min(self.refresh_seconds, until))

    # -- one pass ------------------------------------------------------------------------------

    def tick(self) -> list[Fired]:
        """Fire every slot due now; remember how far each schedule was looked at."""
        now = self.now()
        fired: list[Fired] = []
        next_wake: datetime | None = None
        schedules = list(self.schedules())
        for schedule in schedules:
            try:
                fired += self._fire_due(schedule, now)
                self._seen[schedule.workflow_id] = now
                upcoming = next_slot(schedule.cron, schedule.tz, now)
            except Exception:  # one broken schedule or a lost connection: the others go on
                log.exception("scheduler.failed", workflow_id=str(schedule.workflow_id))
                continue
            next_wake = upcoming if next_wake is None else min(next_wake, upcoming)
        current = {s.workflow_id for s in schedules}
        for workflow_id in set(self._seen) - current:  # deactivated: start afresh if back
            del self._seen[workflow_id]
        for key in set(self._since) - {str(w) for w in current}:
            del self._since[key]
        self._next_wake = next_wake
        return fired

    def due(self, schedule: Schedule, now: datetime) -> list[datetime]:
        """The slots to fire now (see the module's docstring)."""
        cron, tz = schedule.cron, schedule.tz
        seen = self._seen.get(schedule.workflow_id)
        if seen is not None and seen >= now - self.grace:  # the usual case: since last tick
            return slots_between(cron, tz, max(seen, schedule.since), now)
        start = max(seen or schedule.since, schedule.since)
        on_time = slots_between(cron, tz, max(start, now - self.grace), now)
        if on_time or schedule.catchup == "none":
            return on_time
        latest = latest_slot(cron, tz, now)
        return [latest] if latest > start else []

    def _fire_due(self, schedule: Schedule, now: datetime) -> list[Fired]:
        fired = []
        for slot in self.due(schedule, now):
            execution_id = self.fire(schedule, slot)
            if execution_id is not None:
                fired.append(Fired(schedule.workflow_id, slot, execution_id))
        return fired

    def fire(self, schedule: Schedule, slot: datetime) -> UUID | None:
        """Queue the slot's run (or find it queued already); None if it must not run."""
        workflow = self.app.find(schedule.workflow_id, Workflow)
        if workflow is None or not workflow.is_active or workflow.archived:
            return None
        if workflow.definition.get("trigger") != schedule.trigger:
            return None  # changed since the read model was read: the next tick sees it
        scheduled_for = slot.astimezone(UTC).isoformat()
        cmd = ExecuteWorkflow(input={}, metadata={"scheduled_for": scheduled_for})
        try:
            execution = queue_execution(
                self.app,
                schedule.organization_id,
                self._tenant(schedule.organization_id),
                schedule.workflow_id,
                cmd,
                trigger="schedule",
                key=slot_key(schedule.workflow_id, slot),
            )
        except DomainError as e:  # no credits, an input schema it cannot meet, ...
            log.warning(
                "scheduler.refused",
                workflow_id=str(schedule.workflow_id),
                slot=scheduled_for,
                code=e.code,
                reason=e.message,
            )
            return None
        log.info(
            "scheduler.fired",
            workflow_id=str(schedule.workflow_id),
            slot=scheduled_for,
            execution_id=str(execution.id),
        )
        return execution.id

    # -- reading -------------------------------------------------------------------------------

    def schedules(self) -> Iterable[Schedule]:
        """Active, unarchived workflows with a schedule trigger (from the read model)."""
        rows = self.app.db.query(
            "SELECT id, organization_id, definition, updated_at FROM workflows"
            " WHERE archived = 0 AND is_active = 1 AND definition LIKE %s",
            ('%"trigger":{"type":"schedule"%',),
        )
        for row in rows:
            trigger = (loads(row["definition"]) or {}).get("trigger") or {}
            if trigger.get("type") != "schedule" or not trigger.get("cron"):
                continue
            since = self._since_of(row["id"], row["updated_at"])
            if since is not None:
                yield Schedule(UUID(row["id"]), UUID(row["organization_id"]), trigger, since)

    def _since_of(self, workflow_id: str, updated_at: str) -> datetime | None:
        """`schedule_since`, cached until the workflow's row changes."""
        cached = self._since.get(workflow_id)
        if cached is None or cached[0] != updated_at:
            cached = (updated_at, schedule_since(self.app, UUID(workflow_id)))
            self._since[workflow_id] = cached
        return cached[1]

    def _tenant(self, org_id: UUID) -> str:
        if org_id not in self._tenants:
            self._tenants[org_id] = self.app.load(org_id, Organization, "organization").tenant_id
        return self._tenants[org_id]
