"""The alerts read model: a workflow failing 3 times in a row raises a `workflow_failure` alert.

Follows executions to their end. `failed` and `timed_out` extend the workflow's streak of
failures; `completed` ends it and resolves the streak's alert; `cancelled` and `rejected`
(a user's or the ledger's decision, not the workflow's) leave it as it is. One alert per
streak: further failures update its count and message, they do not raise another.

Terminal events carry only the execution id, so the projection keeps its own small maps
(execution → workflow while the run is in flight, workflow → name) and never waits on
another read model. Rows record the position of the last event applied (replays change
nothing); an alert's id derives from the position that raised it, so it is the same on
every rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid5

from events.execution import Execution
from events.ids import NAMESPACE
from events.workflow import Workflow
from flowledger.db import Cursor, Database
from projections.formats import iso
from projections.rows import Rows
from projections.runner import Item, Projection, handles

NAME = "alerts"
THRESHOLD = 3  # failures in a row that raise an alert
SEVERITY = "high"

TABLES = [
    """CREATE TABLE IF NOT EXISTS alert_runs (
        execution_id TEXT PRIMARY KEY,
        workflow_id TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS alert_streaks (
        workflow_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        name TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        alert_id TEXT,
        position BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        type TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        failures INTEGER NOT NULL,
        last_execution_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resolved_at TEXT,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS alerts_org_open"
    " ON alerts (organization_id, resolved_at, created_at)",
]


@dataclass
class Batch:
    """The rows one batch of events touches, read once and written back once (`Rows`)."""

    runs: Rows  # execution -> workflow, while the run is in flight
    streaks: Rows  # per workflow: its name, failures in a row and open alert
    alerts: Rows


class AlertsProjection(Projection):
    name = NAME
    tables = TABLES

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        events = [item.event for item in items]
        runs = Rows(
            cur,
            "alert_runs",
            "execution_id",
            keys=[e.originator_id for e in events if isinstance(e, Execution.Finished)],
        )
        workflows = {str(r["workflow_id"]) for r in runs.rows.values()}
        for e in events:
            if isinstance(e, Workflow.Registered | Workflow.Updated):
                workflows.add(str(e.originator_id))
            elif isinstance(e, Execution.Queued):
                workflows.add(str(e.workflow_id))
        streaks = Rows(cur, "alert_streaks", "workflow_id", keys=workflows)
        open_alerts = [s["alert_id"] for s in streaks.rows.values() if s["alert_id"]]
        batch = Batch(runs, streaks, Rows(cur, "alerts", "id", keys=open_alerts))
        super().process(batch, items)  # type: ignore[arg-type]
        for rows in (batch.runs, batch.streaks, batch.alerts):
            rows.write()

    @handles(Workflow.Registered)
    def on_registered(self, batch: Batch, event: Workflow.Registered, position: int) -> None:
        batch.streaks.insert(
            {
                "workflow_id": str(event.originator_id),
                "organization_id": str(event.organization_id),
                "name": str(event.definition.get("name") or ""),
                "failures": 0,
                "alert_id": None,
                "position": position,
            }
        )

    @handles(Workflow.Updated)
    def on_updated(self, batch: Batch, event: Workflow.Updated, position: int) -> None:
        streak = batch.streaks.after(event.originator_id, position)
        if streak is not None and "name" in event.changes:
            batch.streaks.update(streak, name=str(event.changes["name"] or ""), position=position)

    @handles(Execution.Queued)
    def on_queued(self, batch: Batch, event: Execution.Queued, position: int) -> None:
        batch.runs.insert(
            {"execution_id": str(event.originator_id), "workflow_id": str(event.workflow_id)}
        )

    @handles(Execution.Completed)
    def on_completed(self, batch: Batch, event: Execution.Completed, position: int) -> None:
        streak = _streak_of(batch, event, position)
        if streak is None:
            return
        alert = batch.alerts.get(streak["alert_id"]) if streak["alert_id"] else None
        if alert is not None:
            at = iso(event.timestamp)
            batch.alerts.update(alert, resolved_at=at, updated_at=at, position=position)
        batch.streaks.update(streak, failures=0, alert_id=None, position=position)

    @handles(Execution.Failed, Execution.TimedOut)
    def on_failed(self, batch: Batch, event: Execution.Finished, position: int) -> None:
        streak = _streak_of(batch, event, position)
        if streak is None:
            return
        failures, alert_id = int(streak["failures"]) + 1, streak["alert_id"]
        at, execution_id = iso(event.timestamp), str(event.originator_id)
        message = f"Workflow '{streak['name']}' failed {failures} times in a row"
        alert = batch.alerts.get(alert_id) if alert_id is not None else None
        if alert is not None:
            batch.alerts.update(
                alert,
                failures=failures,
                message=message,
                last_execution_id=execution_id,
                updated_at=at,
                position=position,
            )
        elif failures >= THRESHOLD:
            alert_id = str(uuid5(NAMESPACE, f"alert:{streak['workflow_id']}:{position}"))
            batch.alerts.insert(
                {
                    "id": alert_id,
                    "organization_id": streak["organization_id"],
                    "workflow_id": streak["workflow_id"],
                    "type": "workflow_failure",
                    "severity": SEVERITY,
                    "message": message,
                    "failures": failures,
                    "last_execution_id": execution_id,
                    "created_at": at,
                    "updated_at": at,
                    "resolved_at": None,
                    "position": position,
                }
            )
        batch.streaks.update(streak, failures=failures, alert_id=alert_id, position=position)

    @handles(Execution.Cancelled, Execution.Rejected)
    def on_neutral(self, batch: Batch, event: Execution.Finished, position: int) -> None:
        batch.runs.delete(event.originator_id)


def _streak_of(batch: Batch, event: Any, position: int) -> dict[str, Any] | None:
    """The streak of the execution's workflow, forgetting the run; None if already applied."""
    run = batch.runs.get(event.originator_id)
    if run is None:
        return None
    batch.runs.delete(event.originator_id)
    return batch.streaks.after(run["workflow_id"], position)


# -- queries ---------------------------------------------------------------------------------


def active_alerts(db: Database, org_id: Any, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
    """The organization's unresolved alerts, newest first, and how many there are."""
    total = db.one(
        "SELECT COUNT(*) AS n FROM alerts WHERE organization_id = %s AND resolved_at IS NULL",
        (str(org_id),),
    )
    rows = db.query(
        "SELECT id, workflow_id, type, severity, message, failures, last_execution_id,"
        " created_at, updated_at, resolved_at FROM alerts"
        " WHERE organization_id = %s AND resolved_at IS NULL"
        " ORDER BY created_at DESC, id LIMIT %s",
        (str(org_id), limit),
    )
    return [alert_json(row) for row in rows], int(total["n"]) if total else 0


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "message": row["message"],
        "severity": row["severity"],
        "created_at": row["created_at"],
        "workflow_id": row["workflow_id"],
        "failures": int(row["failures"]),
        "last_execution_id": row["last_execution_id"],
        "updated_at": row["updated_at"],
        "resolved_at": row["resolved_at"],
    }
