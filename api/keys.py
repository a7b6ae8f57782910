"""`/keys`: the provider-key vault, and n8n's `/internal/keys/{key_id}/secret`.

No answer of `/keys` ever holds the key: only its hint (`...abcd`). The clear key leaves the
gateway only through the internal read, authenticated by the internal secret alone (the
per-execution callback token is not enough), and every such read is an event in the log.
Commands answer from the aggregate; the list and usage come from `provider_keys`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon

from api.internal import has_internal_secret
from api.middleware import body, choice_param, page_params
from api.shapes import page, ts
from commands.provider_key import (
    CreateProviderKey,
    RecordUsage,
    RotateProviderKey,
    UpdateProviderKey,
    create_provider_key,
    delete_provider_key,
    key_of,
    money,
    read_secret,
    record_usage,
    rotate_provider_key,
    update_provider_key,
)
from events.errors import Unauthorized
from events.provider_key import ProviderKey
from projections.provider_keys import GRANULARITIES, NAME, list_keys, usage

if TYPE_CHECKING:
    from api.app import Deps

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def key_json(key: ProviderKey, now: datetime) -> dict[str, Any]:
    """The key as the list shows it (same fields), from the aggregate."""
    return {
        "id": str(key.id),
        "provider": key.provider,
        "key_name": key.key_name,
        "key_hint": key.key_hint,
        "models": key.models,
        "is_active": key.is_active(now) and not key.is_expired(now),
        "usage_current": money(key.usage_micros(now)),
        "usage_limit_monthly": money(key.usage_limit_micros),
        "paused_until": ts(key.paused_until) if key.is_paused(now) else None,
        "expires_at": ts(key.expires_at),
        "rotated_at": ts(key.rotated_at),
        "last_used_at": ts(key.last_used_at),
        "created_at": ts(key.created_on),
        "updated_at": ts(key.modified_on),
    }


def _bound(req: falcon.Request, name: str) -> datetime | None:
    """`from`/`to` as a date (`to` then includes that whole day) or an RFC 3339 time."""
    value = req.get_param(name)
    if value is None:
        return None
    value = value.strip().replace(" ", "+")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise falcon.HTTPInvalidParam("a date or an RFC 3339 timestamp", name) from None
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment + timedelta(days=1) if name == "to" and DATE.match(value) else moment


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps


class Keys(Resource):
    auth = {"GET": "member", "POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        org_id = req.context.principal.org_id
        key = create_provider_key(self.deps.app, org_id, body(req, CreateProviderKey))
        self.deps.settle(NAME)
        resp.status = falcon.HTTP_201
        resp.media = key_json(key, datetime.now(UTC))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        org_id = req.context.principal.org_id
        items, total = list_keys(self.deps.db, org_id, datetime.now(UTC), limit, offset)
        resp.media = page(items, total, limit, offset)


class Key(Resource):
    auth = {"GET": "member", "PUT": "admin", "DELETE": "admin"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        key = key_of(self.deps.app, req.context.principal.org_id, key_id)
        resp.media = key_json(key, datetime.now(UTC))

    def on_put(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        org_id, cmd = req.context.principal.org_id, body(req, UpdateProviderKey)
        key = update_provider_key(self.deps.app, org_id, key_id, cmd)
        self.deps.settle(NAME)
        resp.media = key_json(key, datetime.now(UTC))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        delete_provider_key(self.deps.app, req.context.principal.org_id, key_id)
        self.deps.settle(NAME)
        resp.status = falcon.HTTP_204


class Rotate(Resource):
    auth = {"POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        org_id, cmd = req.context.principal.org_id, body(req, RotateProviderKey)
        key = rotate_provider_key(self.deps.app, org_id, key_id, cmd)
        self.deps.settle(NAME)
        resp.media = {
            "id": str(key.id),
            "status": "rotated",
            "rotated_at": ts(key.rotated_at),
            "key_hint": key.key_hint,
        }


class Usage(Resource):
    auth = {"GET": "member", "POST": "member"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        org_id, cmd = req.context.principal.org_id, body(req, RecordUsage)
        now = datetime.now(UTC)
        key, reached = record_usage(self.deps.app, org_id, key_id, cmd, now=now)
        self.deps.settle(NAME)
        resp.status = falcon.HTTP_201
        resp.media = {
            "key_id": str(key.id),
            "requests_count": cmd.requests_count,
            "tokens_used": cmd.tokens_used,
            "cost": float(cmd.cost),
            "at": ts(cmd.at or now),
            "usage_current": money(key.usage_micros(now)),
            "usage_limit_monthly": money(key.usage_limit_micros),
            "limit_reached": reached,
            "is_active": key.is_active(now) and not key.is_expired(now),
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        granularity = choice_param(req, "granularity", GRANULARITIES) or "day"
        from_, to = _bound(req, "from"), _bound(req, "to")
        if from_ is not None and to is not None and from_ >= to:
            raise falcon.HTTPInvalidParam("a time after `from`", "to")
        key_of(self.deps.app, req.context.principal.org_id, key_id)
        self.deps.settle(NAME)
        resp.media = usage(self.deps.db, key_id, granularity, from_, to)


class Secret(Resource):
    """n8n reads a clear key here: `X-N8N-Internal-Auth` only; every read is an event.

    `X-N8N-Workflow-ID` and `X-N8N-Execution-ID`, when sent, are recorded with the read.
    """

    auth = {"GET": "internal"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, key_id: UUID) -> None:
        if not has_internal_secret(self.deps, req):
            raise Unauthorized("X-N8N-Internal-Auth (the internal secret) is required")
        reader = {
            "via": "internal_secret",
            "request_id": req.context.request_id,
            "remote_addr": req.remote_addr or "",
            "workflow_id": (req.get_header("X-N8N-Workflow-ID") or "")[:200],
            "execution_id": (req.get_header("X-N8N-Execution-ID") or "")[:200],
        }
        clear = read_secret(self.deps.app, key_id, {k: v for k, v in reader.items() if v})
        resp.set_header("Cache-Control", "no-store")
        resp.media = {"api_key": clear}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    key = prefix + "/keys/{key_id:uuid}"
    app.add_route(f"{prefix}/keys", Keys(deps))
    app.add_route(key, Key(deps))
    app.add_route(f"{key}/rotate", Rotate(deps))
    app.add_route(f"{key}/usage", Usage(deps))
    app.add_route(f"{prefix}/internal/keys/{{key_id:uuid}}/secret", Secret(deps))
