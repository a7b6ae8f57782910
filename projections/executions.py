"""The executions read model: the contract's execution JSON, its log lines and usage logs.

One row per execution, with its human log as a JSON list and a `version` counter that grows
with every change (the SSE stream polls it). Refunds come from the credit account's
`Refunded` event, which carries the execution id. Workflow names for usage logs come from
this projection's own small lookup table, so it never waits on another read model.
Every row records the position of the last event applied to it, so replays change nothing.
A batch of events is folded into its rows in memory and each row written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from events.credit_account import CreditAccount
from events.execution import Execution
from events.ids import NAMESPACE
from events.workflow import Workflow
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, iso_or_none, loads
from projections.rows import Rows
from projections.runner import Item, Projection, handles

TABLES = [
    """CREATE TABLE IF NOT EXISTS executions (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT,
        metadata TEXT,
        output TEXT,
        error TEXT,
        debited BIGINT NOT NULL DEFAULT 0,
        refunded BIGINT NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        retry_of TEXT,
        trigger TEXT NOT NULL,
        timeout_seconds INTEGER,
        queued_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        duration_ms BIGINT,
        logs TEXT NOT NULL,
        version BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS executions_org_queued "
    "ON executions (organization_id, queued_at, seq)",
    "CREATE INDEX IF NOT EXISTS executions_unfinished ON executions (status, queued_at)",
    "CREATE INDEX IF NOT EXISTS executions_org_workflow "
    "ON executions (organization_id, workflow_id, queued_at)",
    "CREATE INDEX IF NOT EXISTS executions_org_status "
    "ON executions (organization_id, status, queued_at)",
    """CREATE TABLE IF NOT EXISTS execution_workflow_names (
        workflow_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        name TEXT NOT NULL,
        position BIGINT NOT NULL
    )""",
]

ATTEMPT_LEVELS = {"retryable": "warning", "refused": "error"}


#: The events of an execution, each about its own row (keyed by the execution's id).
EXECUTION_EVENTS = frozenset(
    {
        Execution.Queued,
        Execution.Started,
        Execution.AttemptMade,
        Execution.Completed,
        Execution.Failed,
        Execution.TimedOut,
        Execution.Cancelled,
        Execution.Rejected,
        Execution.Logged,
    }
)
#: The events that change an `executions` row (the others go to the name lookup table).
ROW_EVENTS = EXECUTION_EVENTS | {CreditAccount.Refunded}


class ExecutionsProjection(Projection):
    """Execution events fold into their rows in memory (`projections.rows`), one write per
    row and batch; the handlers below get that batch's `Rows`, or the cursor for the
    workflow-name lookup table."""

    name = "executions"
    tables = TABLES
    by_originator = EXECUTION_EVENTS

    def partition_key(self, event: Any) -> UUID | None:
        """An execution's row depends only on its own events and the refunds naming it; the
        workflow-name lookup table goes with no key."""
        return _key(event) if type(event) in ROW_EVENTS else None

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        keys = [_key(item.event) for item in items if type(item.event) in ROW_EVENTS]
        rows = Rows(cur, "executions", "id", json=("logs",), keys=keys)
        for item in items:
            handler = self.handlers.get(type(item.event))
            if handler is not None:
                target = rows if type(item.event) in ROW_EVENTS else cur
                handler(self, target, item.event, item.position)
        rows.write()

    @handles(Execution.Queued)
    def on_queued(self, rows: Rows, event: Execution.Queued, position: int) -> None:
        at = iso(event.timestamp)
        note = f"queued by {event.trigger}"
        if event.retry_of is not None:
            note += f" (retry of {event.retry_of})"
        rows.insert(
            {
                "id": str(event.originator_id),
                "organization_id": str(event.organization_id),
                "workflow_id": str(event.workflow_id),
                "status": "queued",
                "input": dumps(event.input),
                "metadata": dumps(event.metadata),
                "output": None,
                "error": None,
                "debited": 0,
                "refunded": 0,
                "attempts": 0,
                "retry_of": None if event.retry_of is None else str(event.retry_of),
                "trigger": event.trigger,
                "timeout_seconds": event.timeout_seconds,
                "queued_at": at,
                "started_at": None,
                "finished_at": None,
                "duration_ms": None,
                "logs": [_line(at, "info", note)],
                "version": 1,
                "seq": position,
                "position": position,
            }
        )

    @handles(Execution.Started)
    def on_started(self, rows: Rows, event: Execution.Started, position: int) -> None:
        at = iso(event.timestamp)
        note = f"started, {event.debited} credits debited"
        _change(
            rows,
            event,
            position,
            "info",
            note,
            at=at,
            status="running",
            started_at=at,
            debited=event.debited,
        )

    @handles(Execution.AttemptMade)
    def on_attempt(self, rows: Rows, event: Execution.AttemptMade, position: int) -> None:
        answer = f"HTTP {event.status_code}" if event.status_code is not None else "no answer"
        note = f"n8n call attempt {event.attempt}: {event.outcome} ({answer})"
        level = ATTEMPT_LEVELS.get(event.outcome, "info")
        _change(rows, event, position, level, note, attempts=event.attempt)

    @handles(Execution.Completed)
    def on_completed(self, rows: Rows, event: Execution.Completed, position: int) -> None:
        _finish(rows, event, position, "completed", "info", output=dumps(event.output))

    @handles(Execution.Failed)
    def on_failed(self, rows: Rows, event: Execution.Failed, position: int) -> None:
        _finish(rows, event, position, "failed", "error", error=event.error)

    @handles(Execution.TimedOut)
    def on_timed_out(self, rows: Rows, event: Execution.TimedOut, position: int) -> None:
        _finish(rows, event, position, "timed_out", "error")

    @handles(Execution.Cancelled)
    def on_cancelled(self, rows: Rows, event: Execution.Cancelled, position: int) -> None:
        _finish(rows, event, position, "cancelled", "warning")

    @handles(Execution.Rejected)
    def on_rejected(self, rows: Rows, event: Execution.Rejected, position: int) -> None:
        error = {
            "code": "INSUFFICIENT_CREDITS",
            "credits_required": event.credits_required,
            "credits_available": event.credits_available,
        }
        _finish(rows, event, position, "rejected", "error", error=error)

    @handles(Execution.Logged)
    def on_logged(self, rows: Rows, event: Execution.Logged, position: int) -> None:
        _change(rows, event, position, event.level, event.message)

    @handles(CreditAccount.Refunded)
    def on_refunded(self, rows: Rows, event: CreditAccount.Refunded, position: int) -> None:
        note = f"{event.amount} credits refunded"
        _change(
            rows,
            event,
            position,
            "info",
            note,
            execution_id=event.execution_id,
            refund=event.amount,
        )

    @handles(Workflow.Registered)
    def on_workflow_registered(
        self, cur: Cursor, event: Workflow.Registered, position: int
    ) -> None:
        _name(cur, event.originator_id, event.organization_id, event.definition, position)

    @handles(Workflow.Updated)
    def on_workflow_updated(self, cur: Cursor, event: Workflow.Updated, position: int) -> None:
        if "name" in event.changes:
            _name(cur, event.originator_id, None, event.changes, position)


def _key(event: Any) -> UUID:
    """The execution a row event is about (a refund names it; the others are it)."""
    if isinstance(event, CreditAccount.Refunded):
        return event.execution_id
    return event.originator_id


def _line(at: str, level: str, message: str) -> dict[str, str]:
    return {"at": at, "level": level, "message": message}


def _change(
    rows: Rows,
    event: Any,
    position: int,
    level: str,
    message: str,
    *,
    execution_id: Any = None,
    refund: int = 0,
    at: str | None = None,
    **columns: Any,
) -> None:
    """Apply one event to its execution's row: set `columns`, add a log line, bump version.

    Nothing happens when the row is unknown or already past `position` (a replay). `at` is
    the event's `iso(timestamp)` when the caller has it already.
    """
    row = rows.after(execution_id or event.originator_id, position)
    if row is None:
        return
    at = at or iso(event.timestamp)
    columns["logs"] = [*row["logs"], _line(at, level, message)]
    if refund:
        columns["refunded"] = int(row["refunded"]) + refund
    rows.update(row, **columns, version=int(row["version"]) + 1, position=position)


def _finish(
    rows: Rows,
    event: Any,
    position: int,
    status: str,
    level: str,
    *,
    error: dict[str, Any] | None = None,
    output: str | None = None,
) -> None:
    row = rows.after(event.originator_id, position)
    if row is None:
        return
    started_at, timeout = row["started_at"], row["timeout_seconds"]
    duration_ms = getattr(event, "duration_ms", None)
    if duration_ms is None and started_at is not None:
        elapsed = event.timestamp - datetime.fromisoformat(started_at)
        duration_ms = max(0, int(elapsed.total_seconds() * 1000))
    if status == "timed_out":
        error = {"code": "TIMEOUT", "message": f"not finished after {timeout}s"}
    note = status.replace("_", " ")
    if duration_ms is not None:
        note += f" after {duration_ms} ms"
    if error is not None:
        note += f": {_describe(error)}"
    at = iso(event.timestamp)
    _change(
        rows,
        event,
        position,
        level,
        note,
        at=at,
        status=status,
        finished_at=at,
        duration_ms=duration_ms,
        error=dumps(error),
        output=output,
    )


def _describe(error: dict[str, Any]) -> str:
    parts = [str(error.get("code") or "error")]
    if error.get("status") is not None:
        parts.append(f"HTTP {error['status']}")
    if error.get("message"):
        parts.append(str(error["message"]))
    if "credits_required" in error:
        parts.append(
            f"required {error['credits_required']}, available {error.get('credits_available')}"
        )
    return ", ".join(parts)


def _name(
    cur: Cursor, workflow_id: Any, org_id: Any, definition: dict[str, Any], position: int
) -> None:
    name = str(definition.get("name") or "")
    if org_id is None:
        cur.execute(
            "UPDATE execution_workflow_names SET name = %s, position = %s"
            " WHERE workflow_id = %s AND position < %s",
            (name, position, str(workflow_id), position),
        )
        return
    cur.execute(
        "INSERT INTO execution_workflow_names (workflow_id, organization_id, name, position)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (workflow_id) DO NOTHING",
        (str(workflow_id), str(org_id), name, position),
    )


# -- queries ---------------------------------------------------------------------------------

COLUMNS = (
    "e.id, e.workflow_id, e.status, e.input, e.metadata, e.output, e.error, e.debited,"
    " e.refunded, e.attempts, e.retry_of, e.trigger, e.queued_at, e.started_at, e.finished_at,"
    " e.duration_ms"
)


def list_executions(
    db: Database,
    org_id: Any,
    *,
    workflow_id: Any = None,
    status: str | None = None,
    from_: datetime | str | None = None,
    to: datetime | str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """The organization's executions, newest first; `from_` ≤ queued_at ≤ `to`."""
    where = ["e.organization_id = %s"]
    params: list[Any] = [str(org_id)]
    if workflow_id is not None:
        where.append("e.workflow_id = %s")
        params.append(str(workflow_id))
    if status is not None:
        where.append("e.status = %s")
        params.append(status)
    if from_ is not None:
        where.append("e.queued_at >= %s")
        params.append(iso_or_none(from_))
    if to is not None:
        where.append("e.queued_at <= %s")
        params.append(iso_or_none(to))
    condition = " AND ".join(where)
    total = db.one(f"SELECT COUNT(*) AS n FROM executions e WHERE {condition}", params)
    rows = db.query(
        f"SELECT {COLUMNS}, e.logs FROM executions e WHERE {condition}"
        " ORDER BY e.queued_at DESC, e.seq DESC LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return [execution_json(row) for row in rows], int(total["n"]) if total else 0


def get_execution(db: Database, org_id: Any, execution_id: Any) -> dict[str, Any] | None:
    """One execution of the organization, with its logs; None if unknown or another's."""
    row = db.one(
        f"SELECT {COLUMNS}, e.logs FROM executions e WHERE e.id = %s AND e.organization_id = %s",
        (str(execution_id), str(org_id)),
    )
    return execution_json(row) if row else None


def execution_version(db: Database, execution_id: Any) -> int | None:
    """A counter that grows with every change of the execution (None if unknown yet)."""
    row = db.one("SELECT version FROM executions WHERE id = %s", (str(execution_id),))
    return int(row["version"]) if row else None


def usage_logs(
    db: Database, org_id: Any, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One usage line per execution, newest first, with the workflow's current name."""
    where = ["e.organization_id = %s"]
    params: list[Any] = [str(org_id)]
    if status is not None:
        where.append("e.status = %s")
        params.append(status)
    condition = " AND ".join(where)
    total = db.one(f"SELECT COUNT(*) AS n FROM executions e WHERE {condition}", params)
    rows = db.query(
        "SELECT e.id, e.workflow_id, w.name AS workflow_name, e.debited, e.refunded, e.status,"
        " e.duration_ms, e.queued_at, e.finished_at FROM executions e"
        " LEFT JOIN execution_workflow_names w"
        " ON w.workflow_id = e.workflow_id AND w.organization_id = e.organization_id"
        f" WHERE {condition} ORDER BY e.queued_at DESC, e.seq DESC LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return [_usage_json(row) for row in rows], int(total["n"]) if total else 0


def execution_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workflow_id": row["workflow_id"],
        "status": row["status"],
        "input": loads(row["input"]),
        "metadata": loads(row["metadata"]),
        "output": loads(row["output"]),
        "error": loads(row["error"]),
        "credits_used": int(row["debited"]) - int(row["refunded"]),
        "attempts": int(row["attempts"]),
        "retry_of": row["retry_of"],
        "trigger": row["trigger"],
        "queued_at": row["queued_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_ms": None if row["duration_ms"] is None else int(row["duration_ms"]),
        "logs": loads(row["logs"]),
    }


def _usage_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid5(NAMESPACE, f"usage:{row['id']}")),
        "execution_id": row["id"],
        "workflow_id": row["workflow_id"],
        "workflow_name": row["workflow_name"],
        "credits_used": int(row["debited"]) - int(row["refunded"]),
        "status": row["status"],
        "execution_time_ms": None if row["duration_ms"] is None else int(row["duration_ms"]),
        "created_at": row["queued_at"],
        "completed_at": row["finished_at"],
    }


def unfinished(db: Database, queued_before: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Runs still queued or running that were queued before `queued_before` (RFC 3339),
    oldest first: what the recovery sweep looks at."""
    return db.query(
        "SELECT id, status, queued_at, timeout_seconds FROM executions "
        "WHERE status IN ('queued', 'running') AND queued_at < %s "
        "ORDER BY queued_at LIMIT %s",
        (queued_before, limit),
    )
