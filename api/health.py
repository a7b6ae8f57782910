"""`/health` and `/api/v1/health`: each dependency, without authentication.

`checks`: `database` (a query and the event store's head), `redis` (PING; the broker,
rate limits and nonces live there; `not_configured` in the embedded mode) and `n8n`
(`GET <FLOWLEDGER_N8N_URL>/healthz` answers 2xx; `not_configured` when unset), each
`ok`, `error` or `not_configured`. `status`: `unhealthy` (503) when the database or Redis
fails, since nothing can be recorded or queued; `degraded` (200) when only n8n fails,
since commands are still recorded and runs wait in the queue; else `healthy`.

Each check runs in its own small thread pool and gets `TIMEOUT` seconds: a dependency that
hangs (a pool waiting for a dead PostgreSQL, a black-holed address) is reported as `error`
and the answer still comes back in about that time, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import falcon
import httpx
import structlog

from api.shapes import now
from flowledger.settings import VERSION

if TYPE_CHECKING:
    from api.app import Deps

log = structlog.get_logger()

TIMEOUT = 2.0  # seconds each check may take


def wait(future: Future[Any], name: str) -> str:
    try:
        future.result(timeout=TIMEOUT)
    except FutureTimeout:
        log.warning("health.check_failed", check=name, error="timeout")
        return "error"
    except Exception as e:  # any failure of a dependency means "error", never a 500
        log.warning("health.check_failed", check=name, error=type(e).__name__)
        return "error"
    return "ok"


class Health:
    auth: dict[str, str] = {}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # One pool per check, so a hung database cannot hold up the Redis or n8n check.
        self.pools = {
            name: ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"health-{name}")
            for name in ("database", "redis", "n8n")
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, Callable[[], Any] | None] = {
            "database": self.database,
            "redis": None if self.deps.redis is None else self.deps.redis.ping,
            "n8n": None if not self.deps.settings.n8n_url else self.n8n,
        }
        started = {name: self.pools[name].submit(check) for name, check in checks.items() if check}
        results = {
            name: wait(started[name], name) if name in started else "not_configured"
            for name in checks
        }
        if "error" in (results["database"], results["redis"]):
            status = "unhealthy"
        elif results["n8n"] == "error":
            status = "degraded"
        else:
            status = "healthy"
        resp.status = falcon.HTTP_503 if status == "unhealthy" else falcon.HTTP_200
        resp.media = {"status": status, "version": VERSION, "timestamp": now(), "checks": results}

    def database(self) -> None:
        self.deps.db.one("SELECT 1 AS ok")
        self.deps.app.recorder.max_notification_id()

    def n8n(self) -> None:
        url = f"{str(self.deps.settings.n8n_url).rstrip('/')}/healthz"
        answer = httpx.get(url, timeout=TIMEOUT, follow_redirects=False)
        answer.raise_for_status()
        if not answer.is_success:  # 1xx/3xx: not n8n's health answer
            raise httpx.HTTPStatusError("not 2xx", request=answer.request, response=answer)


def add_routes(app: falcon.App, deps: Deps) -> None:
    resource = Health(deps)
    app.add_route("/health", resource)
    app.add_route("/api/v1/health", resource)
