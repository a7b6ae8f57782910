"""The dashboard (`/n8n/monitor/dashboard`, alias `/monitoring/dashboard`) and the operational
numbers it shares with `/metrics`: queue depth (from the broker) and lag (tracking positions
against the head of the notification log).

Queue depth counts messages waiting in Redis (`ready`: the queue's list; `delayed`: the
hash of its `.DQ` delay queue, retries included) or, in the embedded mode, in the
in-process broker's queues. Messages a worker has fetched but not acknowledged are
`in_progress` and not part of the depth. Lag is how many positions of the log a follower
has not processed yet: every read model (`projection_lag` is the largest) and the dispatcher.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dramatiq
import falcon
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from api.analytics import COUNTS, number, success_rate
from flowledger.db import Database
from projections.alerts import active_alerts
from projections.formats import iso

if TYPE_CHECKING:
    from api.app import Deps

DISPATCHER = "dispatcher"  # workers/dispatcher.py's tracking name
RECENT = 10
WORKFLOWS = 50


# -- operational numbers ---------------------------------------------------------------------


def queue_names(broker: dramatiq.Broker) -> list[str]:
    """The application's queues, whether or not this process declared their actors yet."""
    from workers.execution import QUEUE as EXECUTIONS  # after broker setup (actors bind)
    from workers.webhooks import QUEUE as WEBHOOKS

    names = {EXECUTIONS, WEBHOOKS, *broker.get_declared_queues()}
    return sorted(name for name in names if not name.endswith((".DQ", ".XQ")))


def queue_depths(broker: dramatiq.Broker | None = None) -> dict[str, dict[str, int]]:
    """Per queue: `ready`, `delayed` and `in_progress` messages."""
    broker = broker or dramatiq.get_broker()
    names = queue_names(broker)
    if isinstance(broker, RedisBroker):
        pipe = broker.client.pipeline(transaction=False)
        for name in names:
            key = f"{broker.namespace}:{name}"
            pipe.llen(key)
            pipe.hlen(f"{key}.msgs")
            pipe.hlen(f"{broker.namespace}:{dq_name(name)}.msgs")
        answers = pipe.execute()
        depths = {}
        for i, name in enumerate(names):
            ready, stored, delayed = (int(v) for v in answers[3 * i : 3 * i + 3])
            depths[name] = {"ready": ready, "delayed": delayed, "in_progress": stored - ready}
        return depths
    if isinstance(broker, StubBroker):
        return {
            name: {
                "ready": _stub_size(broker, name),
                "delayed": _stub_size(broker, dq_name(name)),
                "in_progress": 0,
            }
            for name in names
        }
    return {}


def _stub_size(broker: StubBroker, name: str) -> int:
    queue = broker.queues.get(name)
    return 0 if queue is None else int(queue.qsize())


def queue_depth(depths: dict[str, dict[str, int]]) -> int:
    return sum(d["ready"] + d["delayed"] for d in depths.values())


def follower_names() -> list[str]:
    from projections import all_projections

    return [p.name for p in all_projections()]


def lags(deps: Deps) -> tuple[int, dict[str, int], int]:
    """(head of the log, lag of each read model, lag of the dispatcher)."""
    head = deps.position()
    rows = deps.db.query("SELECT name, position FROM tracking")
    positions = {row["name"]: int(row["position"]) for row in rows}
    projections = {name: max(0, head - positions.get(name, 0)) for name in follower_names()}
    return head, projections, max(0, head - positions.get(DISPATCHER, 0))


# -- the dashboard ---------------------------------------------------------------------------


def summary(db: Database, org_id: Any, since: str) -> dict[str, Any]:
    workflows = db.one(
        "SELECT COUNT(*) AS total, SUM(CASE WHEN is_active = 1 THEN 1 ELSE 0 END) AS active"
        " FROM workflows WHERE organization_id = %s AND archived = 0",
        (str(org_id),),
    ) or {"total": 0, "active": 0}
    runs = db.one(
        f"SELECT {COUNTS}, AVG(duration_ms) AS average FROM executions"
        " WHERE organization_id = %s AND queued_at >= %s",
        (str(org_id), since),
    ) or {"executions": 0, "completed": 0, "failed": 0, "credits_used": 0, "average": None}
    average = runs["average"]
    return {
        "total_workflows": number(workflows["total"]),
        "active_workflows": number(workflows["active"]),
        "executions_24h": number(runs["executions"]),
        "completed_24h": number(runs["completed"]),
        "failed_24h": number(runs["failed"]),
        "success_rate": success_rate(number(runs["completed"]), number(runs["failed"])),
        "average_duration_ms": None if average is None else round(float(average)),
        "credits_used_24h": number(runs["credits_used"]),
    }


def workflows(db: Database, org_id: Any, since: str) -> list[dict[str, Any]]:
    """The organization's live workflows, most recently run first, with their last 24 h."""
    rows = db.query(
        "SELECT w.id, w.name, w.is_active, w.execution_count, w.last_executed_at, a.*"
        " FROM workflows w LEFT JOIN ("
        f" SELECT workflow_id, {COUNTS} FROM executions"
        " WHERE organization_id = %s AND queued_at >= %s GROUP BY workflow_id"
        ") a ON a.workflow_id = w.id WHERE w.organization_id = %s AND w.archived = 0"
        " ORDER BY CASE WHEN w.last_executed_at IS NULL THEN 1 ELSE 0 END,"
        " w.last_executed_at DESC, w.created_at DESC, w.id LIMIT %s",
        (str(org_id), since, str(org_id), WORKFLOWS),
    )
    return [
        {
            "id": row["id"],
            "name": row["name"],
            "is_active": bool(row["is_active"]),
            "execution_count": number(row["execution_count"]),
            "last_executed_at": row["last_executed_at"],
            "executions_24h": number(row["executions"]),
            "failed_24h": number(row["failed"]),
            "success_rate_24h": success_rate(number(row["completed"]), number(row["failed"])),
            "credits_used_24h": number(row["credits_used"]),
        }
        for row in rows
    ]


def recent_executions(db: Database, org_id: Any) -> list[dict[str, Any]]:
    rows = db.query(
        "SELECT e.id, e.workflow_id, n.name AS workflow_name, e.status, e.trigger, e.queued_at,"
        " e.finished_at, e.duration_ms, e.debited, e.refunded FROM executions e"
        " LEFT JOIN execution_workflow_names n ON n.workflow_id = e.workflow_id"
        " WHERE e.organization_id = %s ORDER BY e.queued_at DESC, e.seq DESC LIMIT %s",
        (str(org_id), RECENT),
    )
    return [
        {
            "id": row["id"],
            "workflow_id": row["workflow_id"],
            "workflow_name": row["workflow_name"],
            "status": row["status"],
            "trigger": row["trigger"],
            "queued_at": row["queued_at"],
            "finished_at": row["finished_at"],
            "duration_ms": None if row["duration_ms"] is None else int(row["duration_ms"]),
            "credits_used": int(row["debited"]) - int(row["refunded"]),
        }
        for row in rows
    ]


class Dashboard:
    """Members and auditors read it (a GET needs the `member` rank, which auditors have)."""

    auth = {"GET": "member"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        db, org_id = self.deps.db, req.context.principal.org_id
        since = iso(datetime.now(UTC) - timedelta(hours=24))
        alerts, alerts_active = active_alerts(db, org_id)
        depths = queue_depths()
        head, projections, dispatcher_lag = lags(self.deps)
        resp.media = {
            "summary": {**summary(db, org_id, since), "alerts_active": alerts_active},
            "workflows": workflows(db, org_id, since),
            "recent_executions": recent_executions(db, org_id),
            "performance_metrics": {
                "queue_depth": queue_depth(depths),
                "projection_lag": max(projections.values(), default=0),
                "dispatcher_lag": dispatcher_lag,
                "log_position": head,
                "queues": depths,
                "projections": projections,
            },
            "alerts": alerts,
        }


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    resource = Dashboard(deps)
    app.add_route(f"{prefix}/n8n/monitor/dashboard", resource)
    app.add_route(f"{prefix}/monitoring/dashboard", resource)
