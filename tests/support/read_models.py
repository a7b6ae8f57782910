"""Whole read-model tables, row for row, and a log with every kind of change, for the
rebuild tests (a rebuilt model must equal the live one exactly, not just answer the same)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from bench.big_log import fill
from commands.automation_event import RecordEvent, record_event
from commands.credits import GrantCredits, TransferCredits, grant_credits, transfer_credits
from commands.webhook import CreateEndpoint, create_deliveries, create_endpoint
from commands.workflow import (
    UpdateWorkflow,
    archive_workflow,
    set_workflow_active,
    update_workflow,
)
from events.application import Flowledger
from flowledger.db import Database
from projections import all_projections
from projections.rebuild import _table_names
from tests.unit.test_projections import new_org, new_workflow, run


def tables(db: Database, schema: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every row of every read-model table (of `schema`, PostgreSQL), in key order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for projection in all_projections():
        for table in _table_names(projection):
            name = f'"{schema}"."{table}"' if schema else table
            out[table] = db.query(f"SELECT * FROM {name} ORDER BY 1")
    return out


def varied_log(app: Flowledger, events: int = 2000) -> None:
    """`events` events of executions (completed, failed and refunded) over 4 organizations,
    plus workflow edits, deactivation, archiving, grants, a transfer, automation events, a
    webhook endpoint and its deliveries: a row in every read-model table."""
    fill(app, events, label=f"rebuild-{uuid4().hex[:8]}")

    org, other = new_org(app), new_org(app)
    grant_credits(app, org.id, GrantCredits(amount=50, description=None))
    workflow = new_workflow(app, org, name="First name")
    for outcome in ("completed", "failed", "cancelled", "timed_out"):
        run(app, org, workflow, outcome)
    update_workflow(app, org.id, workflow, UpdateWorkflow(name="Second name"))
    set_workflow_active(app, org.id, workflow, False)
    archive_workflow(app, org.id, new_workflow(app, org, name="Gone"))
    transfer_credits(app, org.id, TransferCredits(to_tenant_id=other.tenant, amount=7))
    record_event(app, org.id, org.tenant, RecordEvent(event_type="lead.created"), [])
    endpoint, _ = create_endpoint(
        app, org.id, CreateEndpoint(url="https://hooks.example.com/x", event_types=["*"])
    )
    create_deliveries(app, [endpoint], uuid4(), "credits.granted", {"amount": 1})


def reference(app: Flowledger, schema: str = "reference") -> dict[str, list[dict[str, Any]]]:
    """The read models replayed from scratch the ordinary way (batches of 500, one
    transaction each, like a `Follower`) into a schema of their own (PostgreSQL); their rows."""
    from flowledger.db import pg_cursor
    from projections.runner import BATCH, Item

    head = int(app.recorder.max_notification_id() or 0)
    with app.db.dedicated_connection(dict_rows=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}", public')
        cur = pg_cursor(conn)
        for projection in all_projections():
            with conn.transaction():
                for statement in projection.tables:
                    conn.execute(statement)
            at = 0
            while at < head:
                got = app.recorder.select_notifications(
                    start=at, limit=BATCH, stop=head, topics=sorted(projection.topics),
                    inclusive_of_start=False,
                )  # fmt: skip
                if not got:
                    break
                items = [Item(n.id, app.mapper.to_domain_event(n), n) for n in got]
                with conn.transaction():
                    projection.process(cur, items)
                at = got[-1].id
    return tables(app.db, schema)
