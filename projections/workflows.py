"""The workflows read model: one row per workflow, shaped as the contract's workflow JSON.

Archived workflows keep their row (executions still name them) but no query returns them.
Every row records the position of the last event applied to it, so a replay from position 0
over existing rows changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from events.execution import Execution
from events.workflow import Workflow
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, like, loads
from projections.rows import Rows
from projections.runner import Item, Projection, handles

TABLES = [
    """CREATE TABLE IF NOT EXISTS workflows (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        project_id TEXT,
        category TEXT,
        definition TEXT NOT NULL,
        is_active INTEGER NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0,
        execution_count BIGINT NOT NULL DEFAULT 0,
        last_executed_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        seq BIGINT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS workflows_org_created "
    "ON workflows (organization_id, archived, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS workflows_org_category ON workflows (organization_id, category)",
    "CREATE INDEX IF NOT EXISTS workflows_org_project ON workflows (organization_id, project_id)",
]

FIELDS = (
    "name",
    "description",
    "project_id",
    "n8n_connection_id",
    "n8n_workflow_id",
    "n8n_webhook_path",
    "webhook_url",
    "response_mode",
)
SETTINGS = ("credits_per_execution", "timeout_seconds", "retry", "input_schema", "trigger")


class WorkflowsProjection(Projection):
    """A batch's workflow rows are read once, changed in memory and written once (every
    queued execution bumps its workflow's counter: many events, few rows)."""

    name = "workflows"
    tables = TABLES

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        keys = [_key(item.event) for item in items]
        rows = Rows(cur, "workflows", "id", keys=keys)
        for item in items:
            handler = self.handlers.get(type(item.event))
            if handler is not None:
                handler(self, rows, item.event, item.position)
        rows.write()

    @handles(Workflow.Registered)
    def on_registered(self, rows: Rows, event: Workflow.Registered, position: int) -> None:
        definition = dict(event.definition)
        at = iso(event.timestamp)
        name, description, project_id, category = _columns(definition)
        rows.insert(
            {
                "id": str(event.originator_id),
                "organization_id": str(event.organization_id),
                "name": name,
                "description": description,
                "project_id": project_id,
                "category": category,
                "definition": dumps(definition),
                "is_active": 1,
                "archived": 0,
                "execution_count": 0,
                "last_executed_at": None,
                "created_at": at,
                "updated_at": at,
                "seq": position,
                "position": position,
            }
        )

    @handles(Workflow.Updated)
    def on_updated(self, rows: Rows, event: Workflow.Updated, position: int) -> None:
        row = rows.after(event.originator_id, position)
        if row is None:
            return
        definition = {**loads(row["definition"]), **event.changes}
        name, description, project_id, category = _columns(definition)
        rows.update(
            row,
            name=name,
            description=description,
            project_id=project_id,
            category=category,
            definition=dumps(definition),
            updated_at=iso(event.timestamp),
            position=position,
        )

    @handles(Workflow.Activated)
    def on_activated(self, rows: Rows, event: Workflow.Activated, position: int) -> None:
        self._set(rows, event, position, is_active=1)

    @handles(Workflow.Deactivated)
    def on_deactivated(self, rows: Rows, event: Workflow.Deactivated, position: int) -> None:
        self._set(rows, event, position, is_active=0)

    @handles(Workflow.Archived)
    def on_archived(self, rows: Rows, event: Workflow.Archived, position: int) -> None:
        self._set(rows, event, position, is_active=0, archived=1)

    @handles(Workflow.TriggerTokenIssued)
    def on_trigger_token(
        self, rows: Rows, event: Workflow.TriggerTokenIssued, position: int
    ) -> None:
        # The token itself stays out of the read model; the answer's URL changed, though.
        self._set(rows, event, position)

    @handles(Execution.Queued)
    def on_execution_queued(self, rows: Rows, event: Execution.Queued, position: int) -> None:
        row = rows.after(event.workflow_id, position)
        if row is not None:
            rows.update(
                row,
                execution_count=int(row["execution_count"]) + 1,
                last_executed_at=iso(event.timestamp),
                position=position,
            )

    @staticmethod
    def _set(rows: Rows, event: Any, position: int, **columns: Any) -> None:
        row = rows.after(event.originator_id, position)
        if row is not None:
            rows.update(row, **columns, updated_at=iso(event.timestamp), position=position)


def _key(event: Any) -> str:
    """The workflow an event changes: its own, or the one a queued execution runs."""
    if isinstance(event, Execution.Queued):
        return str(event.workflow_id)
    return str(event.originator_id)


def _columns(definition: dict[str, Any]) -> tuple[Any, ...]:
    """The definition's fields that queries filter on: name, description, project, category."""
    project_id = definition.get("project_id")
    return (
        definition.get("name") or "",
        definition.get("description"),
        None if project_id is None else str(project_id),
        definition.get("category"),
    )


# -- queries ---------------------------------------------------------------------------------

COLUMNS = "id, definition, is_active, execution_count, last_executed_at, created_at, updated_at"


def list_workflows(
    db: Database,
    org_id: Any,
    *,
    active_only: bool = False,
    category: str | None = None,
    search: str | None = None,
    project_id: Any = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """The organization's workflows, newest first, and how many match in all."""
    where = ["organization_id = %s", "archived = 0"]
    params: list[Any] = [str(org_id)]
    if active_only:
        where.append("is_active = 1")
    if category is not None:
        where.append("category = %s")
        params.append(category)
    if project_id is not None:
        where.append("project_id = %s")
        params.append(str(project_id))
    if search:
        where.append(
            "(LOWER(name) LIKE %s ESCAPE '\\' OR LOWER(COALESCE(description, '')) LIKE %s"
            " ESCAPE '\\')"
        )
        params += [like(search), like(search)]
    condition = " AND ".join(where)
    total = db.one(f"SELECT COUNT(*) AS n FROM workflows WHERE {condition}", params)
    rows = db.query(
        f"SELECT {COLUMNS} FROM workflows WHERE {condition}"
        " ORDER BY created_at DESC, seq DESC LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return [workflow_json(row) for row in rows], int(total["n"]) if total else 0


def get_workflow(db: Database, org_id: Any, workflow_id: Any) -> dict[str, Any] | None:
    """One workflow of the organization; None if unknown, another tenant's or archived."""
    row = db.one(
        f"SELECT {COLUMNS} FROM workflows WHERE id = %s AND organization_id = %s AND archived = 0",
        (str(workflow_id), str(org_id)),
    )
    return workflow_json(row) if row else None


def event_triggered_ids(db: Database, org_id: Any) -> list[str]:
    """Active workflows of the organization with an `event` trigger (candidates to match)."""
    rows = db.query(
        "SELECT id FROM workflows WHERE organization_id = %s AND archived = 0 AND is_active = 1"
        " AND definition LIKE %s",
        (str(org_id), '%"trigger":{"type":"event"%'),
    )
    return [row["id"] for row in rows]


def workflow_json(row: dict[str, Any]) -> dict[str, Any]:
    definition = loads(row["definition"])
    return {
        "id": row["id"],
        **{name: definition.get(name) for name in FIELDS},
        "is_active": bool(row["is_active"]),
        **{name: definition.get(name) for name in SETTINGS},
        "tags": definition.get("tags") or [],
        "category": definition.get("category"),
        "trigger_url": None,
        "execution_count": int(row["execution_count"]),
        "last_executed_at": row["last_executed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
