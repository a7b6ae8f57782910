"""`/analytics/usage` and `/analytics/workflows`: what analysts ask of the read models.

Both read the executions read model (and the workflows one for names), in a window of
queue times: `from` and `to` take an RFC 3339 timestamp or a date (`to` as a date means
the end of that day). A run counts in the bucket it was queued in; its credits are what it
cost after refunds (`debited - refunded`), so a refunded failure costs 0. `success_rate` is
the share of `completed` among the finished runs that could succeed or fail (`completed`,
`failed`, `timed_out`); cancelled and rejected runs are counted but do not move it; `null`
when nothing finished. Percentiles are nearest-rank (`percentile_disc` in PostgreSQL, the
same rule in Python for SQLite) over the runs that have a duration.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import falcon

from api import shapes
from api.errors import ApiError
from api.middleware import choice_param, page_params
from flowledger.db import Database
from projections.formats import iso

if TYPE_CHECKING:
    from api.app import Deps

GRANULARITIES = ("day", "week", "month")
DEFAULT_SPAN = {
    "day": timedelta(days=30),
    "week": timedelta(weeks=12),
    "month": timedelta(days=365),
}
MAX_SPAN = timedelta(days=3 * 366)
FAILED = "('failed', 'timed_out')"
COUNTS = (
    "COUNT(*) AS executions,"
    " SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed,"
    f" SUM(CASE WHEN status IN {FAILED} THEN 1 ELSE 0 END) AS failed,"
    " SUM(debited - refunded) AS credits_used"
)


def success_rate(completed: int, failed: int) -> float | None:
    return None if completed + failed == 0 else round(completed / (completed + failed), 4)


def number(value: Any) -> int:
    """An aggregate as an int (PostgreSQL's SUM of BIGINT is NUMERIC; NULL when no rows)."""
    return 0 if value is None else int(value)


# -- parameters ------------------------------------------------------------------------------


def moment(req: falcon.Request, name: str, *, end_of_day: bool = False) -> datetime | None:
    """An optional `name` parameter: RFC 3339 timestamp, or a date (start or end of day)."""
    value = req.get_param(name)
    if value is None:
        return None
    text = value.strip().replace(" ", "+")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            at = time.max if end_of_day else time.min
            parsed = datetime.combine(day, at, tzinfo=UTC)
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or not 1970 <= parsed.year <= 9000:  # no overflow in the arithmetic below
        raise falcon.HTTPInvalidParam("an RFC 3339 timestamp or a date (YYYY-MM-DD)", name)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(req: falcon.Request, default_span: timedelta) -> tuple[datetime, datetime]:
    """`from` and `to` (default: the last `default_span`), checked: from ≤ to, ≤ 3 years."""
    to = moment(req, "to", end_of_day=True) or datetime.now(UTC)
    from_ = moment(req, "from") or to - default_span
    if from_ > to:
        raise ApiError(400, "BAD_REQUEST", "`from` must not be after `to`", field="from")
    if to - from_ > MAX_SPAN:
        raise ApiError(400, "BAD_REQUEST", "the window may span at most 3 years", field="from")
    return from_, to


# -- usage -----------------------------------------------------------------------------------


def bucket(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if granularity == "month":
        return day.replace(day=1)
    return day


def next_bucket(start: date, granularity: str) -> date:
    if granularity == "week":
        return start + timedelta(weeks=1)
    if granularity == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def usage(
    db: Database, org_id: Any, from_: datetime, to: datetime, granularity: str
) -> dict[str, Any]:
    """Runs per bucket (zero-filled from `from_` to `to`), and the totals of the window."""
    rows = db.query(
        f"SELECT SUBSTR(queued_at, 1, 10) AS day, {COUNTS} FROM executions"
        " WHERE organization_id = %s AND queued_at >= %s AND queued_at <= %s"
        " GROUP BY SUBSTR(queued_at, 1, 10)",
        (str(org_id), iso(from_), iso(to)),
    )
    keys = ("executions", "completed", "failed", "credits_used")
    buckets: dict[date, dict[str, int]] = {}
    start, last = bucket(from_.date(), granularity), bucket(to.date(), granularity)
    while start <= last:
        buckets[start] = dict.fromkeys(keys, 0)
        start = next_bucket(start, granularity)
    for row in rows:
        counts = buckets[bucket(date.fromisoformat(row["day"]), granularity)]
        for key in keys:
            counts[key] += number(row[key])
    totals = {key: sum(b[key] for b in buckets.values()) for key in keys}
    return {
        "from": iso(from_),
        "to": iso(to),
        "granularity": granularity,
        "series": [{"date": day.isoformat(), **counts} for day, counts in buckets.items()],
        "totals": {**totals, "success_rate": success_rate(totals["completed"], totals["failed"])},
    }


# -- per workflow ----------------------------------------------------------------------------


def _percentiles_sql(dialect: str) -> str:
    if dialect == "postgres":
        return (
            ", percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
            " percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95"
        )
    return ""


def nearest_rank(ordered: list[int], fraction: float) -> int | None:
    """The smallest value with at least `fraction` of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def workflow_stats(
    db: Database, org_id: Any, from_: datetime, to: datetime, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Per workflow (live ones, and archived ones that ran in the window), busiest first."""
    window_params = (str(org_id), iso(from_), iso(to))
    per_workflow = (
        f"SELECT workflow_id, {COUNTS}{_percentiles_sql(db.dialect)} FROM executions"
        " WHERE organization_id = %s AND queued_at >= %s AND queued_at <= %s"
        " GROUP BY workflow_id"
    )
    joined = (
        f"FROM workflows w LEFT JOIN ({per_workflow}) a ON a.workflow_id = w.id"
        " WHERE w.organization_id = %s AND (w.archived = 0 OR a.executions IS NOT NULL)"
    )
    total = db.one(f"SELECT COUNT(*) AS n {joined}", (*window_params, str(org_id)))
    rows = db.query(
        f"SELECT w.id, w.name, w.is_active, w.archived, a.* {joined}"
        " ORDER BY COALESCE(a.executions, 0) DESC, w.name, w.id LIMIT %s OFFSET %s",
        (*window_params, str(org_id), limit, offset),
    )
    if db.dialect != "postgres" and rows:
        durations = _durations(db, window_params, [row["id"] for row in rows])
        for row in rows:
            ordered = durations.get(row["id"], [])
            row["p50"], row["p95"] = nearest_rank(ordered, 0.5), nearest_rank(ordered, 0.95)
    items = [
        {
            "workflow_id": row["id"],
            "name": row["name"],
            "is_active": bool(row["is_active"]),
            "archived": bool(row["archived"]),
            "executions": number(row["executions"]),
            "completed": number(row["completed"]),
            "failed": number(row["failed"]),
            "success_rate": success_rate(number(row["completed"]), number(row["failed"])),
            "p50_duration_ms": None if row.get("p50") is None else int(row["p50"]),
            "p95_duration_ms": None if row.get("p95") is None else int(row["p95"]),
            "credits_used": number(row["credits_used"]),
        }
        for row in rows
    ]
    return items, number(total["n"]) if total else 0


def _durations(
    db: Database, window_params: tuple[str, str, str], workflow_ids: list[str]
) -> dict[str, list[int]]:
    marks = ", ".join(["%s"] * len(workflow_ids))
    rows = db.query(
        "SELECT workflow_id, duration_ms FROM executions"
        " WHERE organization_id = %s AND queued_at >= %s AND queued_at <= %s"
        f" AND duration_ms IS NOT NULL AND workflow_id IN ({marks})"
        " ORDER BY workflow_id, duration_ms",
        (*window_params, *workflow_ids),
    )
    found: dict[str, list[int]] = {}
    for row in rows:
        found.setdefault(row["workflow_id"], []).append(int(row["duration_ms"]))
    return found


# -- resources -------------------------------------------------------------------------------


class Usage:
    auth = {"GET": "member"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        granularity = choice_param(req, "granularity", GRANULARITIES) or "day"
        from_, to = window(req, DEFAULT_SPAN[granularity])
        org_id = req.context.principal.org_id
        resp.media = usage(self.deps.db, org_id, from_, to, granularity)


class Workflows:
    auth = {"GET": "member"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        from_, to = window(req, DEFAULT_SPAN["day"])
        org_id = req.context.principal.org_id
        items, total = workflow_stats(self.deps.db, org_id, from_, to, limit, offset)
        resp.media = {**shapes.page(items, total, limit, offset), "from": iso(from_), "to": iso(to)}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route(f"{prefix}/analytics/usage", Usage(deps))
    app.add_route(f"{prefix}/analytics/workflows", Workflows(deps))
