"""Provider keys read model: the keys list (never a secret) and one row per usage record.

Usage rows carry their day, ISO week (its Monday) and month precomputed, so the
`?granularity=` queries are a plain GROUP BY on both PostgreSQL and SQLite. Money is integer
micro-units (see `events.provider_key`); rows are keyed by (key, version), so a replay adds
nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from events.provider_key import ProviderKey, month_of
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, loads
from projections.runner import Projection, handles, update_row

NAME = "provider_keys"
GRANULARITIES = ("day", "week", "month")
TABLES = [
    """CREATE TABLE IF NOT EXISTS provider_keys (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        key_name TEXT NOT NULL,
        key_hint TEXT NOT NULL,
        models TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        paused_until TEXT,
        usage_limit_micros BIGINT,
        expires_at TEXT,
        rotated_at TEXT,
        last_used_at TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        seq BIGINT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS provider_keys_org "
    "ON provider_keys (organization_id, deleted, created_at)",
    """CREATE TABLE IF NOT EXISTS provider_key_usage (
        key_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        organization_id TEXT NOT NULL,
        at TEXT NOT NULL,
        day TEXT NOT NULL,
        week TEXT NOT NULL,
        month TEXT NOT NULL,
        requests_count BIGINT NOT NULL,
        tokens_used BIGINT NOT NULL,
        cost_micros BIGINT NOT NULL,
        PRIMARY KEY (key_id, version)
    )""",
    "CREATE INDEX IF NOT EXISTS provider_key_usage_at ON provider_key_usage (key_id, at)",
    "CREATE INDEX IF NOT EXISTS provider_key_usage_month "
    "ON provider_key_usage (organization_id, month, key_id)",
]


def periods(at: datetime) -> dict[str, str]:
    """The day, week (its Monday) and month (its first day) `at` falls in, as dates."""
    day = at.astimezone(UTC).date()
    monday = day - timedelta(days=day.weekday())
    return {"day": day.isoformat(), "week": monday.isoformat(), "month": f"{month_of(at)}-01"}


class ProviderKeysProjection(Projection):
    name = NAME
    tables = TABLES

    @handles(ProviderKey.Created)
    def on_created(self, cur: Cursor, event: ProviderKey.Created, position: int) -> None:
        at = iso(event.timestamp)
        cur.execute(
            "INSERT INTO provider_keys (id, organization_id, provider, key_name, key_hint,"
            " models, enabled, usage_limit_micros, expires_at, created_at, updated_at, seq,"
            " position) VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(event.originator_id),
                str(event.organization_id),
                event.provider,
                event.key_name,
                event.key_hint,
                dumps(event.models),
                event.usage_limit_micros,
                _iso(event.expires_at),
                at,
                at,
                position,
                position,
            ),
        )

    @handles(ProviderKey.Updated)
    def on_updated(self, cur: Cursor, event: ProviderKey.Updated, position: int) -> None:
        columns = {k: v for k, v in event.changes.items() if k in _EDITABLE}
        if "models" in columns:
            columns["models"] = dumps(columns["models"])
        if "expires_at" in columns:
            columns["expires_at"] = _iso(columns["expires_at"])
        _key(cur, event, position, **columns)

    @handles(ProviderKey.Rotated)
    def on_rotated(self, cur: Cursor, event: ProviderKey.Rotated, position: int) -> None:
        _key(cur, event, position, key_hint=event.key_hint, rotated_at=iso(event.at))

    @handles(ProviderKey.Enabled)
    def on_enabled(self, cur: Cursor, event: ProviderKey.Enabled, position: int) -> None:
        _key(cur, event, position, enabled=1, paused_until=None)

    @handles(ProviderKey.Disabled)
    def on_disabled(self, cur: Cursor, event: ProviderKey.Disabled, position: int) -> None:
        _key(cur, event, position, enabled=0)

    @handles(ProviderKey.Paused)
    def on_paused(self, cur: Cursor, event: ProviderKey.Paused, position: int) -> None:
        until = iso(event.until)
        cur.execute(
            "UPDATE provider_keys SET paused_until = CASE WHEN paused_until IS NULL"
            " OR paused_until < %s THEN %s ELSE paused_until END,"
            " updated_at = %s, position = %s WHERE id = %s AND position < %s",
            (until, until, iso(event.timestamp), position, str(event.originator_id), position),
        )

    @handles(ProviderKey.UsageRecorded)
    def on_usage(self, cur: Cursor, event: ProviderKey.UsageRecorded, position: int) -> None:
        rows = cur.execute(
            "SELECT organization_id FROM provider_keys WHERE id = %s",
            (str(event.originator_id),),
        )
        if not rows:
            return
        cur.execute(
            "INSERT INTO provider_key_usage (key_id, version, organization_id, at, day, week,"
            " month, requests_count, tokens_used, cost_micros)"
            " VALUES (%(key_id)s, %(version)s, %(org)s, %(at)s, %(day)s, %(week)s, %(month)s,"
            " %(requests)s, %(tokens)s, %(cost)s) ON CONFLICT (key_id, version) DO NOTHING",
            {
                "key_id": str(event.originator_id),
                "version": event.originator_version,
                "org": rows[0]["organization_id"],
                "at": iso(event.at),
                **periods(event.at),
                "requests": event.requests_count,
                "tokens": event.tokens_used,
                "cost": event.cost_micros,
            },
        )
        _used(cur, event, event.at, position)

    @handles(ProviderKey.SecretRead)
    def on_read(self, cur: Cursor, event: ProviderKey.SecretRead, position: int) -> None:
        _used(cur, event, event.at, position)

    @handles(ProviderKey.Deleted)
    def on_deleted(self, cur: Cursor, event: ProviderKey.Deleted, position: int) -> None:
        _key(cur, event, position, enabled=0, deleted=1)


_EDITABLE = ("key_name", "models", "usage_limit_micros", "expires_at")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _key(cur: Cursor, event: Any, position: int, **columns: Any) -> None:
    update_row(cur, "provider_keys", event, position, **columns)


def _used(cur: Cursor, event: Any, at: datetime, position: int) -> None:
    """`last_used_at` only moves forward (a late, back-dated usage record leaves it)."""
    when = iso(at)
    cur.execute(
        "UPDATE provider_keys SET last_used_at = CASE WHEN last_used_at IS NULL"
        " OR last_used_at < %s THEN %s ELSE last_used_at END, position = %s"
        " WHERE id = %s AND position < %s",
        (when, when, position, str(event.originator_id), position),
    )


# -- queries ---------------------------------------------------------------------------------

KEY_COLUMNS = (
    "k.id, k.provider, k.key_name, k.key_hint, k.models, k.enabled, k.paused_until,"
    " k.usage_limit_micros, k.expires_at, k.rotated_at, k.last_used_at, k.created_at,"
    " k.updated_at, COALESCE(u.cost, 0) AS usage_micros"
)
MONTH_COST = (
    "LEFT JOIN (SELECT key_id, SUM(cost_micros) AS cost FROM provider_key_usage"
    " WHERE organization_id = %s AND month = %s GROUP BY key_id) u ON u.key_id = k.id"
)


def key_json(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A list item: `usage_current` is this month's cost; `is_active` is as of `now`."""
    paused = row["paused_until"] is not None and iso(now) < row["paused_until"]
    expired = row["expires_at"] is not None and iso(now) >= row["expires_at"]
    limit = row["usage_limit_micros"]
    return {
        "id": row["id"],
        "provider": row["provider"],
        "key_name": row["key_name"],
        "key_hint": row["key_hint"],
        "models": loads(row["models"]),
        "is_active": bool(row["enabled"]) and not paused and not expired,
        "usage_current": int(row["usage_micros"]) / 1_000_000,
        "usage_limit_monthly": None if limit is None else int(limit) / 1_000_000,
        "paused_until": row["paused_until"] if paused else None,
        "expires_at": row["expires_at"],
        "rotated_at": row["rotated_at"],
        "last_used_at": row["last_used_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def list_keys(
    db: Database, org_id: Any, now: datetime, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """The organization's keys (not deleted), newest first."""
    where = "k.organization_id = %s AND k.deleted = 0"
    total = db.one(f"SELECT COUNT(*) AS n FROM provider_keys k WHERE {where}", (str(org_id),))
    rows = db.query(
        f"SELECT {KEY_COLUMNS} FROM provider_keys k {MONTH_COST} WHERE {where}"
        " ORDER BY k.created_at DESC, k.seq DESC LIMIT %s OFFSET %s",
        (str(org_id), f"{month_of(now)}-01", str(org_id), limit, offset),
    )
    return [key_json(r, now) for r in rows], int(total["n"]) if total else 0


def usage(
    db: Database,
    key_id: Any,
    granularity: str = "day",
    from_: datetime | None = None,
    to: datetime | None = None,
) -> dict[str, Any]:
    """Usage per day, week (dated by its Monday) or month (by its first day), oldest first,
    with the totals of the range; `from_` inclusive, `to` exclusive."""
    assert granularity in GRANULARITIES
    where, params = ["key_id = %s"], [str(key_id)]
    if from_ is not None:
        where.append("at >= %s")
        params.append(iso(from_))
    if to is not None:
        where.append("at < %s")
        params.append(iso(to))
    condition = " AND ".join(where)
    rows = db.query(
        f"SELECT {granularity} AS date, SUM(requests_count) AS requests,"
        f" SUM(tokens_used) AS tokens, SUM(cost_micros) AS cost FROM provider_key_usage"
        f" WHERE {condition} GROUP BY {granularity} ORDER BY {granularity}",
        params,
    )
    items = [
        {
            "date": r["date"],
            "requests_count": int(r["requests"]),
            "tokens_used": int(r["tokens"]),
            "cost": int(r["cost"]) / 1_000_000,
        }
        for r in rows
    ]
    summary = {
        "total_requests": sum(i["requests_count"] for i in items),
        "total_tokens": sum(i["tokens_used"] for i in items),
        "total_cost": sum(int(r["cost"]) for r in rows) / 1_000_000,
    }
    return {"usage": items, "summary": summary}
