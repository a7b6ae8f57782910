"""Outgoing webhooks read model: the endpoints list and the deliveries log with every attempt.

The API lists endpoints and deliveries from here (fan-out reads the write side's
`WebhookSubscriptions` instead, so it never waits for this projection). Every row records
the position of the last event applied to it, so a replay changes nothing.
"""

from __future__ import annotations

from typing import Any

from events.delivery import Delivery
from events.webhook_endpoint import WebhookEndpoint
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, iso_or_none, loads
from projections.runner import Projection, handles, update_row

NAME = "webhook_deliveries"
TABLES = [
    """CREATE TABLE IF NOT EXISTS webhook_endpoints (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        url TEXT NOT NULL,
        event_types TEXT NOT NULL,
        description TEXT,
        max_attempts INTEGER NOT NULL,
        is_active INTEGER NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        seq BIGINT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS webhook_endpoints_org "
    "ON webhook_endpoints (organization_id, archived, created_at)",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts TEXT NOT NULL,
        next_attempt_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        seq BIGINT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_org "
    "ON webhook_deliveries (organization_id, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint "
    "ON webhook_deliveries (endpoint_id, status, created_at)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_pending "
    "ON webhook_deliveries (status, next_attempt_at, updated_at)",
]


class DeliveriesProjection(Projection):
    name = NAME
    tables = TABLES

    @handles(WebhookEndpoint.Registered)
    def on_registered(self, cur: Cursor, event: WebhookEndpoint.Registered, position: int) -> None:
        at = iso(event.timestamp)
        cur.execute(
            "INSERT INTO webhook_endpoints (id, organization_id, url, event_types, description,"
            " max_attempts, is_active, created_at, updated_at, seq, position)"
            " VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.organization_id),
                event.url,
                dumps(event.event_types),
                event.description,
                event.max_attempts,
                at,
                at,
                position,
                position,
            ),
        )

    @handles(WebhookEndpoint.Updated)
    def on_updated(self, cur: Cursor, event: WebhookEndpoint.Updated, position: int) -> None:
        columns = {k: v for k, v in event.changes.items() if k in _EDITABLE}
        if "event_types" in columns:
            columns["event_types"] = dumps(columns["event_types"])
        _endpoint(cur, event, position, **columns)

    @handles(WebhookEndpoint.Enabled)
    def on_enabled(self, cur: Cursor, event: WebhookEndpoint.Enabled, position: int) -> None:
        _endpoint(cur, event, position, is_active=1)

    @handles(WebhookEndpoint.Disabled)
    def on_disabled(self, cur: Cursor, event: WebhookEndpoint.Disabled, position: int) -> None:
        _endpoint(cur, event, position, is_active=0)

    @handles(WebhookEndpoint.SecretRotated)
    def on_rotated(self, cur: Cursor, event: WebhookEndpoint.SecretRotated, position: int) -> None:
        _endpoint(cur, event, position)

    @handles(WebhookEndpoint.Archived)
    def on_archived(self, cur: Cursor, event: WebhookEndpoint.Archived, position: int) -> None:
        _endpoint(cur, event, position, is_active=0, archived=1)

    @handles(Delivery.Created)
    def on_created(self, cur: Cursor, event: Delivery.Created, position: int) -> None:
        at = iso(event.timestamp)
        cur.execute(
            "INSERT INTO webhook_deliveries (id, organization_id, endpoint_id, event_id,"
            " event_type, status, attempts, created_at, updated_at, seq, position)"
            " VALUES (%s, %s, %s, %s, %s, 'pending', '[]', %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.organization_id),
                str(event.endpoint_id),
                str(event.event_id),
                event.event_type,
                at,
                at,
                position,
                position,
            ),
        )

    @handles(Delivery.Attempted)
    def on_attempted(self, cur: Cursor, event: Delivery.Attempted, position: int) -> None:
        """Append the attempt to the row's JSON array in one statement (text: the array is
        `dumps` output, so `[]` or `[...]`; `substr`/`length` exist in both dialects)."""
        status = "succeeded" if event.succeeded else "pending"
        if not event.succeeded and event.next_attempt_at is None:
            status = "failed"
        attempt = dumps(_attempt(event))
        cur.execute(
            "UPDATE webhook_deliveries SET attempts = CASE WHEN attempts = '[]'"
            " THEN '[' || %s || ']'"
            " ELSE substr(attempts, 1, length(attempts) - 1) || ',' || %s || ']' END,"
            " status = %s, next_attempt_at = %s, updated_at = %s, position = %s"
            " WHERE id = %s AND position < %s",
            (
                attempt,
                attempt,
                status,
                event.next_attempt_at,
                iso(event.timestamp),
                position,
                str(event.originator_id),
                position,
            ),
        )

    @handles(Delivery.RedeliveryRequested)
    def on_redelivery(
        self, cur: Cursor, event: Delivery.RedeliveryRequested, position: int
    ) -> None:
        _delivery(cur, event, position, status="pending", next_attempt_at=None)


_EDITABLE = ("url", "event_types", "description", "max_attempts")


def _attempt(event: Delivery.Attempted) -> dict[str, Any]:
    return {
        "at": event.at,
        "status_code": event.status_code,
        "duration_ms": event.duration_ms,
        "error": event.error,
    }


def _endpoint(cur: Cursor, event: Any, position: int, **columns: Any) -> None:
    update_row(cur, "webhook_endpoints", event, position, **columns)


def _delivery(cur: Cursor, event: Any, position: int, **columns: Any) -> None:
    update_row(cur, "webhook_deliveries", event, position, **columns)


# -- queries ---------------------------------------------------------------------------------

ENDPOINT_COLUMNS = (
    "id, url, event_types, description, max_attempts, is_active, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, created_at"
)


def endpoint_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "event_types": loads(row["event_types"]),
        "is_active": bool(row["is_active"]),
    }


def delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "attempts": loads(row["attempts"])}


def list_endpoints(
    db: Database, org_id: Any, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """The organization's endpoints (not archived), newest first."""
    where = "organization_id = %s AND archived = 0"
    total = db.one(f"SELECT COUNT(*) AS n FROM webhook_endpoints WHERE {where}", (str(org_id),))
    rows = db.query(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE {where}"
        " ORDER BY created_at DESC, seq DESC LIMIT %s OFFSET %s",
        (str(org_id), limit, offset),
    )
    return [endpoint_json(r) for r in rows], int(total["n"]) if total else 0


def get_endpoint(db: Database, org_id: Any, endpoint_id: Any) -> dict[str, Any] | None:
    row = db.one(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
        " WHERE id = %s AND organization_id = %s AND archived = 0",
        (str(endpoint_id), str(org_id)),
    )
    return endpoint_json(row) if row else None


def list_deliveries(
    db: Database,
    org_id: Any,
    *,
    endpoint_id: Any = None,
    status: str | None = None,
    event_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """The organization's deliveries, newest first, with every attempt."""
    where = ["organization_id = %s"]
    params: list[Any] = [str(org_id)]
    for column, value in (("endpoint_id", endpoint_id), ("status", status)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(str(value))
    if event_type is not None:
        where.append("event_type = %s")
        params.append(event_type)
    condition = " AND ".join(where)
    total = db.one(f"SELECT COUNT(*) AS n FROM webhook_deliveries WHERE {condition}", params)
    rows = db.query(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {condition}"
        " ORDER BY created_at DESC, seq DESC LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return [delivery_json(r) for r in rows], int(total["n"]) if total else 0


def failed_since(db: Database, org_id: Any, endpoint_id: Any, since: Any) -> list[str]:
    """Ids of the endpoint's dead deliveries created at or after `since`."""
    rows = db.query(
        "SELECT id FROM webhook_deliveries WHERE organization_id = %s AND endpoint_id = %s"
        " AND status = 'failed' AND created_at >= %s ORDER BY created_at",
        (str(org_id), str(endpoint_id), iso_or_none(since)),
    )
    return [r["id"] for r in rows]


def overdue(db: Database, before: str, limit: int = 1000) -> list[str]:
    """Pending deliveries whose next attempt (or first one) is due since before `before`:
    what the recovery sweep re-sends when a delayed message was lost."""
    rows = db.query(
        "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND"
        " ((next_attempt_at IS NOT NULL AND next_attempt_at < %s)"
        " OR (next_attempt_at IS NULL AND updated_at < %s))"
        " ORDER BY updated_at LIMIT %s",
        (before, before, limit),
    )
    return [r["id"] for r in rows]
