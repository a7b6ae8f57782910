"""`/health` and `/api/v1/health`: the database, Redis and n8n, without authentication."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import falcon
import structlog

from api.shapes import now
from flowledger.settings import VERSION

if TYPE_CHECKING:
    from api.app import Deps

log = structlog.get_logger()


def probe(check: Callable[[], Any], name: str) -> str:
    try:
        check()
    except Exception as e:  # any failure of a dependency means "error", never a 500
        log.warning("health.check_failed", check=name, error=type(e).__name__)
        return "error"
    return "ok"


class Health:
    auth: dict[str, str] = {}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {
            "database": probe(self.database, "database"),
            "redis": self.redis(),
            "n8n": "not_configured",
        }
        status = "unhealthy" if "error" in (checks["database"], checks["redis"]) else "healthy"
        resp.status = falcon.HTTP_503 if status == "unhealthy" else falcon.HTTP_200
        resp.media = {"status": status, "version": VERSION, "timestamp": now(), "checks": checks}

    def database(self) -> None:
        self.deps.db.one("SELECT 1 AS ok")
        self.deps.app.recorder.max_notification_id()

    def redis(self) -> str:
        client = self.deps.redis
        return "not_configured" if client is None else probe(client.ping, "redis")


def add_routes(app: falcon.App, deps: Deps) -> None:
    resource = Health(deps)
    app.add_route("/health", resource)
    app.add_route("/api/v1/health", resource)
