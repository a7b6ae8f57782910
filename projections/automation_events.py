"""The automation events read model (`GET /events`): one row per event, newest first.

Every row records the position of the last event applied to it, so replays change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from events.automation_event import AutomationEvent
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, iso_or_none, loads
from projections.runner import Projection, handles

TABLES = [
    """CREATE TABLE IF NOT EXISTS automation_events (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        event_data TEXT NOT NULL,
        source TEXT NOT NULL,
        processed INTEGER NOT NULL,
        workflow_ids TEXT NOT NULL,
        execution_ids TEXT NOT NULL,
        created_at TEXT NOT NULL,
        seq BIGINT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS automation_events_org_created "
    "ON automation_events (organization_id, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS automation_events_org_type "
    "ON automation_events (organization_id, event_type, created_at)",
]


class AutomationEventsProjection(Projection):
    name = "automation_events"
    tables = TABLES

    @handles(AutomationEvent.Received)
    def on_received(self, cur: Cursor, event: AutomationEvent.Received, position: int) -> None:
        processed = not (event.trigger_workflows and event.matched)
        cur.execute(
            "INSERT INTO automation_events (id, organization_id, event_type, event_data, source,"
            " processed, workflow_ids, execution_ids, created_at, seq, position)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, '[]', %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.organization_id),
                event.event_type,
                dumps(event.event_data),
                event.source,
                int(processed),
                dumps([str(w) for w in event.matched] if event.trigger_workflows else []),
                iso(event.timestamp),
                position,
                position,
            ),
        )

    @handles(AutomationEvent.ExecutionsTriggered)
    def on_triggered(
        self, cur: Cursor, event: AutomationEvent.ExecutionsTriggered, position: int
    ) -> None:
        rows = cur.execute(
            "SELECT execution_ids FROM automation_events WHERE id = %s AND position < %s",
            (str(event.originator_id), position),
        )
        if not rows:
            return
        known = loads(rows[0]["execution_ids"])
        added = [e for e in event.executions.values() if e not in known]
        cur.execute(
            "UPDATE automation_events SET execution_ids = %s, position = %s WHERE id = %s",
            (dumps([*known, *added]), position, str(event.originator_id)),
        )

    @handles(AutomationEvent.Processed)
    def on_processed(self, cur: Cursor, event: AutomationEvent.Processed, position: int) -> None:
        cur.execute(
            "UPDATE automation_events SET processed = 1, position = %s"
            " WHERE id = %s AND position < %s",
            (position, str(event.originator_id), position),
        )


# -- queries ---------------------------------------------------------------------------------


def list_events(
    db: Database,
    org_id: Any,
    *,
    event_type: str | None = None,
    processed: bool | None = None,
    from_: datetime | None = None,
    to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """The organization's automation events, newest first, and how many match in all."""
    where: list[str] = ["organization_id = %s"]
    params: list[Any] = [str(org_id)]
    if event_type is not None:
        where.append("event_type = %s")
        params.append(event_type)
    if processed is not None:
        where.append("processed = %s")
        params.append(int(processed))
    if from_ is not None:
        where.append("created_at >= %s")
        params.append(iso_or_none(from_) or "")
    if to is not None:
        where.append("created_at < %s")
        params.append(iso_or_none(to) or "")
    condition = " AND ".join(where)
    total = db.one(f"SELECT COUNT(*) AS n FROM automation_events WHERE {condition}", params)
    rows = db.query(
        "SELECT id, event_type, event_data, processed, workflow_ids, execution_ids, created_at"
        f" FROM automation_events WHERE {condition}"
        " ORDER BY created_at DESC, seq DESC LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return [event_json(row) for row in rows], int(total["n"]) if total else 0


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_type": row["event_type"],
        "event_data": loads(row["event_data"]),
        "processed": bool(row["processed"]),
        "workflow_ids": loads(row["workflow_ids"]),
        "execution_ids": loads(row["execution_ids"]),
        "created_at": row["created_at"],
    }
