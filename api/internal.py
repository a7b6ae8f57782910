"""Callbacks from n8n: `/internal/update-status` and `/internal/log-error`.

Authenticated by `X-Callback-Token` (the execution's own token, derived from the JWT key)
or `X-N8N-Internal-Auth` (the settings' internal secret, when one is configured).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from uuid import UUID

import falcon

from api.middleware import body
from commands.base import callback_token
from commands.execution import (
    LogExecutionError,
    RecordExecutionStatus,
    log_execution_error,
    record_execution_status,
)
from events.errors import Unauthorized

if TYPE_CHECKING:
    from api.app import Deps


def has_internal_secret(deps: Deps, req: falcon.Request) -> bool:
    """`X-N8N-Internal-Auth` matches the configured internal secret (none configured: no)."""
    secret, given = deps.settings.internal_secret, req.get_header("X-N8N-Internal-Auth")
    return bool(secret and given and hmac.compare_digest(given.encode(), secret.encode()))


def authorize(deps: Deps, req: falcon.Request) -> None:
    if has_internal_secret(deps, req):
        return
    token = req.get_header("X-Callback-Token") or ""
    data = req.context.json if isinstance(req.context.json, dict) else {}
    try:
        expected = callback_token(deps.settings.jwt_key, UUID(str(data.get("execution_id"))))
    except ValueError:
        expected = None
    if not token or expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("X-Callback-Token or X-N8N-Internal-Auth required")


class UpdateStatus:
    auth = {"POST": "internal"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        authorize(self.deps, req)
        execution = record_execution_status(self.deps.app, body(req, RecordExecutionStatus))
        resp.media = {"execution_id": str(execution.id), "status": execution.status}


class LogError:
    auth = {"POST": "internal"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        authorize(self.deps, req)
        execution = log_execution_error(self.deps.app, body(req, LogExecutionError))
        resp.media = {"execution_id": str(execution.id), "status": execution.status}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route(f"{prefix}/internal/update-status", UpdateStatus(deps))
    app.add_route(f"{prefix}/internal/log-error", LogError(deps))
