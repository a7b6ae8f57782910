"""The workflows read model: one row per workflow, shaped as the contract's workflow JSON.

Archived workflows keep their row (executions still name them) but no query returns them.
Every row records the position of the last event applied to it, so a replay from position 0
over existing rows changes nothing.
"""

from __future__ import annotations

from typing import Any

from events.execution import Execution
from events.workflow import Workflow
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, like, loads
from projections.runner import Projection, handles

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
    name = "workflows"
    tables = TABLES

    @handles(Workflow.Registered)
    def on_registered(self, cur: Cursor, event: Workflow.Registered, position: int) -> None:
        definition = dict(event.definition)
        at = iso(event.timestamp)
        cur.execute(
            "INSERT INTO workflows (id, organization_id, name, description, project_id, category,"
            " definition, is_active, archived, execution_count, created_at, updated_at, seq,"
            " position) VALUES (%s, %s, %s, %s, %s, %s, %s, 1, 0, 0, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.organization_id),
                *_columns(definition),
                dumps(definition),
                at,
                at,
                position,
                position,
            ),
        )

    @handles(Workflow.Updated)
    def on_updated(self, cur: Cursor, event: Workflow.Updated, position: int) -> None:
        rows = cur.execute(
            "SELECT definition FROM workflows WHERE id = %s AND position < %s",
            (str(event.originator_id), position),
        )
        if not rows:
            return
        definition = {**loads(rows[0]["definition"]), **event.changes}
        cur.execute(
            "UPDATE workflows SET name = %s, description = %s, project_id = %s, category = %s,"
            " definition = %s, updated_at = %s, position = %s WHERE id = %s",
            (
                *_columns(definition),
                dumps(definition),
                iso(event.timestamp),
                position,
                str(event.originator_id),
            ),
        )

    @handles(Workflow.Activated)
    def on_activated(self, cur: Cursor, event: Workflow.Activated, position: int) -> None:
        self._set(cur, event, position, "is_active = 1")

    @handles(Workflow.Deactivated)
    def on_deactivated(self, cur: Cursor, event: Workflow.Deactivated, position: int) -> None:
        self._set(cur, event, position, "is_active = 0")

    @handles(Workflow.Archived)
    def on_archived(self, cur: Cursor, event: Workflow.Archived, position: int) -> None:
        self._set(cur, event, position, "is_active = 0, archived = 1")

    @handles(Workflow.TriggerTokenIssued)
    def on_trigger_token(
        self, cur: Cursor, event: Workflow.TriggerTokenIssued, position: int
    ) -> None:
        # The token itself stays out of the read model; the answer's URL changed, though.
        self._set(cur, event, position, "archived = archived")

    @handles(Execution.Queued)
    def on_execution_queued(self, cur: Cursor, event: Execution.Queued, position: int) -> None:
        cur.execute(
            "UPDATE workflows SET execution_count = execution_count + 1, last_executed_at = %s,"
            " position = %s WHERE id = %s AND position < %s",
            (iso(event.timestamp), position, str(event.workflow_id), position),
        )

    @staticmethod
    def _set(cur: Cursor, event: Any, position: int, assignments: str) -> None:
        cur.execute(
            f"UPDATE workflows SET {assignments}, updated_at = %s, position = %s"
            " WHERE id = %s AND position < %s",
            (iso(event.timestamp), position, str(event.originator_id), position),
        )


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
