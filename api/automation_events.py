"""Automation events: `/events` (record, list) and n8n's signed `/webhooks/n8n/{event_type}`.

Both record an `AutomationEvent` the same way: the workflows whose `event` trigger matches
are named at once, their runs are queued by a worker (`workers/automation_events.py`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon
from pydantic import BaseModel, ConfigDict, Field

from api import shapes
from api.auth import verify_signature
from api.middleware import body, page_params, timestamp_param
from commands.automation_event import EVENT_TYPE, RecordEvent, record_event
from commands.organization import organization_by_tenant
from events.automation_event import AutomationEvent
from events.errors import Unauthorized
from projections.automation_events import list_events
from projections.workflows import event_triggered_ids

if TYPE_CHECKING:
    from api.app import Deps


def received(
    deps: Deps, org_id: UUID, tenant_id: str, cmd: RecordEvent, **how: Any
) -> AutomationEvent:
    """Record `cmd` with the workflows whose event trigger may match (read model, settled)."""
    candidates: list[UUID] = []
    if cmd.trigger_workflows:
        deps.settle("workflows")
        candidates = [UUID(i) for i in event_triggered_ids(deps.db, org_id)]
    return record_event(deps.app, org_id, tenant_id, cmd, candidates, **how)


def answer(event: AutomationEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "event_type": event.event_type,
        "created_at": shapes.ts(event.created_on),
        "triggered_workflows": [str(w) for w in event.matched] if event.trigger_workflows else [],
        "status": "processing",
    }


class Collection:
    auth = {"GET": "member", "POST": "member"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = req.context.principal
        event = received(self.deps, who.org_id, who.tenant_id, body(req, RecordEvent))
        resp.status = falcon.HTTP_201
        resp.media = answer(event)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        filters: dict[str, Any] = {
            "event_type": req.get_param("event_type"),
            "processed": req.get_param_as_bool("processed"),
            "from_": timestamp_param(req, "from"),
            "to": timestamp_param(req, "to"),
        }
        org_id = req.context.principal.org_id
        items, total = list_events(self.deps.db, org_id, **filters, limit=limit, offset=offset)
        resp.media = shapes.page(items, total, limit, offset)


class N8nEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    workflow_id: str | None = Field(None, max_length=200)
    execution_id: str | None = Field(None, max_length=200)
    event_type: str | None = Field(None, pattern=EVENT_TYPE)
    data: dict[str, Any] = Field(default_factory=dict)


class N8nWebhook:
    """n8n's signed events: X-Tenant-ID, X-N8N-Timestamp, X-N8N-Signature (as for API keys,
    with the organization's client secret); a replayed signature is refused."""

    auth = {"POST": "public"}
    idempotent = False  # a signature works once; a cached answer must not replay it

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response, event_type: str) -> None:
        tenant = req.get_header("X-Tenant-ID") or ""
        org = organization_by_tenant(self.deps.app, tenant) if tenant else None
        if org is None or not org.is_active:
            raise Unauthorized("unknown X-Tenant-ID")
        signature = req.get_header("X-N8N-Signature")
        if not signature:
            raise Unauthorized("X-N8N-Signature is required")
        stamp = req.get_header("X-N8N-Timestamp") or ""
        raw = req.context.raw_body
        verify_signature(self.deps, org, stamp, signature, raw, "X-N8N-Timestamp")
        if not re.match(EVENT_TYPE, event_type):
            raise falcon.HTTPNotFound(description="not a valid event type")
        sent = body(req, N8nEvent)
        cmd = RecordEvent(event_type=event_type, event_data=sent.data)
        context = {
            "workflow_id": sent.workflow_id or req.get_header("X-N8N-Workflow-ID"),
            "execution_id": sent.execution_id,
        }
        how = {"source": "n8n", "context": {k: v for k, v in context.items() if v}}
        event = received(self.deps, org.id, org.tenant_id, cmd, **how)
        resp.media = {"status": "received", "event_id": str(event.id)}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route(f"{prefix}/events", Collection(deps))
    app.add_route("/webhooks/n8n/{event_type}", N8nWebhook(deps))
