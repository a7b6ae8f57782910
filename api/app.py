"""The Falcon WSGI app: `create_app(deps)` for tests and embedding, `get_app()` for gunicorn.

    gunicorn -k gthread --threads 16 --timeout 0 'api.app:get_app()'

(threads, because sync executions and SSE streams hold a request open for long.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import falcon
import falcon.media

from api import (
    analytics,
    audit,
    auth_routes,
    automation_events,
    credits,
    docs,
    errors,
    executions,
    health,
    inbound,
    internal,
    keys,
    metrics,
    monitoring,
    organizations,
    stream,
    webhooks,
    workflows,
)
from api.auth import Authenticate, NonceStore
from api.idempotency import Idempotency, IdempotencyStore
from api.middleware import ParseJson, ReadBody, RequestId
from api.ratelimit import Counter, RateLimit
from api.shapes import ts
from events.application import Flowledger
from events.execution import Execution
from flowledger.db import Database
from flowledger.settings import Settings, load_settings
from projections.runner import wait_for

PREFIX = "/api/v1"


def _default_run_inline(app: Flowledger, execution: Execution) -> Execution:
    from workers.execution import run_inline

    return run_inline(app, execution)


@dataclass
class Deps:
    """Everything the resources need; tests build it around an embedded app."""

    settings: Settings
    app: Flowledger
    db: Database
    redis: Any = None  # a redis.Redis client, or None in the embedded mode
    run_inline: Callable[[Flowledger, Execution], Execution] = _default_run_inline
    nonces: NonceStore = field(init=False)
    idempotency: IdempotencyStore = field(init=False)
    limits: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.nonces = NonceStore(self.redis)
        self.limits = Counter(self.redis, self.settings.broker_namespace)
        self.idempotency = IdempotencyStore(self.db, self.settings.master_key_bytes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Deps:
        db = Database(settings)
        redis = None
        if settings.redis_url:
            import redis as redis_lib

            redis = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=2)
        return cls(settings=settings, app=Flowledger(settings, db), db=db, redis=redis)

    def position(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def settle(self, *projections: str, position: int | None = None) -> bool:
        """Read-your-writes: wait (bounded) until the projections have seen our writes."""
        position = self.position() if position is None else position
        timeout = self.settings.read_your_writes_timeout
        return all([wait_for(self.db, name, position, timeout) for name in projections])


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_handler() -> falcon.media.JSONHandler:
    dumps = functools.partial(json.dumps, default=_default, ensure_ascii=False)
    return falcon.media.JSONHandler(dumps=dumps, loads=json.loads)


def create_app(deps: Deps) -> falcon.App:
    http_metrics, metrics_resource = metrics.install(deps)  # first, so it times all
    middleware: list[Any] = [
        http_metrics,
        RequestId(),
        ReadBody(),
        Authenticate(deps),
        RateLimit(deps),
        ParseJson(),
        Idempotency(deps),
    ]
    app = falcon.App(media_type="application/json; charset=utf-8", middleware=middleware)
    handler = _json_handler()
    app.req_options.media_handlers.update({"application/json": handler})
    app.resp_options.media_handlers.update(
        {"application/json": handler, "application/json; charset=utf-8": handler}
    )
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    health.add_routes(app, deps)
    docs.add_routes(app, deps)  # /openapi.json and /docs (api/openapi.py lists every route)
    areas = (
        auth_routes, organizations, credits, workflows, executions, internal,
        automation_events, inbound, stream, webhooks, keys, audit, monitoring, analytics,
    )  # fmt: skip
    for area in areas:
        area.add_routes(app, deps, PREFIX)
    metrics.add_routes(app, metrics_resource)
    return app


def get_app() -> falcon.App:
    """For gunicorn: settings from `FLOWLEDGER_*`, the broker set up before any actor import."""
    from flowledger.logs import configure
    from workers.broker import setup

    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    setup(settings)
    metrics.use_multiprocess(settings.metrics_path)  # gunicorn: counters shared by workers
    return create_app(Deps.from_settings(settings))
