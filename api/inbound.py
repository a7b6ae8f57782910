"""Inbound calls that carry their own proof: a workflow's trigger URL and Stripe's events.

`POST /webhooks/workflows/{workflow_id}/{token}`: anyone with the URL queues a run of a
workflow whose trigger is `webhook` (the body is the input) → 202 `{execution_id}`.
`POST /api/v1/webhooks/stripe`: `Stripe-Signature: t=...,v1=...` (HMAC-SHA256 of
`t.payload` with `FLOWLEDGER_STRIPE_WEBHOOK_SECRET`, 300 s tolerance); `invoice.paid` with
`metadata.tenant_id` and `metadata.credits` grants credits once per Stripe event id.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon
import structlog

from api.errors import ApiError
from commands.credits import GrantCredits, grant_credits
from commands.execution import ExecuteWorkflow, queue_execution
from commands.organization import organization_by_tenant
from commands.workflow import workflow_by_trigger_token
from events.errors import Unauthorized
from events.organization import Organization

if TYPE_CHECKING:
    from api.app import Deps

log = structlog.get_logger()
STRIPE_TOLERANCE = 300


class WorkflowTrigger:
    auth = {"POST": "public"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID, token: str
    ) -> None:
        app = self.deps.app
        workflow = workflow_by_trigger_token(app, workflow_id, token)
        data = req.context.json
        if data is not None and not isinstance(data, dict):
            raise ApiError(422, "VALIDATION_ERROR", "the body must be a JSON object",
                           fields=[{"field": "body", "message": "not an object"}])  # fmt: skip
        org = app.load(workflow.organization_id, Organization, "workflow")
        cmd = ExecuteWorkflow(input=data or {})
        execution = queue_execution(app, org.id, org.tenant_id, workflow.id, cmd, trigger="webhook")
        resp.status = falcon.HTTP_202
        resp.media = {"execution_id": str(execution.id)}


def verify_stripe(secret: str, header: str, payload: bytes, now: float | None = None) -> None:
    """Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v.strip() for k, _, v in parts if k.strip() == "t"]
    signatures = [v.strip() for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        raise Unauthorized("malformed Stripe-Signature")
    if abs((time.time() if now is None else now) - int(stamps[0])) > STRIPE_TOLERANCE:
        raise Unauthorized("Stripe-Signature timestamp is outside the tolerance of 300 seconds")
    signed = stamps[0].encode() + b"." + payload
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s.lower()) for s in signatures):
        raise Unauthorized("invalid Stripe-Signature")


class StripeWebhook:
    auth = {"POST": "public"}
    idempotent = False  # once per Stripe event id already, and the signature is checked first

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        secret = self.deps.settings.stripe_webhook_secret
        if not secret:
            raise falcon.HTTPNotFound()
        raw = req.context.raw_body
        verify_stripe(secret, req.get_header("Stripe-Signature") or "", raw)
        event = req.context.json if isinstance(req.context.json, dict) else {}
        resp.media = self.apply(event)

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        kind, event_id = event.get("type"), event.get("id")
        if kind != "invoice.paid":
            return {"received": True, "status": "ignored"}
        invoice = (event.get("data") or {}).get("object") or {}
        metadata = invoice.get("metadata") or {}
        org = organization_by_tenant(self.deps.app, str(metadata.get("tenant_id") or ""))
        credits = str(metadata.get("credits") or "")
        usable = credits.isdigit() and int(credits) > 0
        if not isinstance(event_id, str) or not event_id or org is None or not usable:
            # Not one of ours (no tenant or credits): answering an error would make Stripe
            # retry it for days; it is logged and acknowledged.
            log.warning("stripe.invoice_ignored", stripe_event_id=event_id)
            return {"received": True, "status": "ignored"}
        cmd = GrantCredits(
            amount=int(credits),
            invoice_id=event_id,
            description=f"Stripe invoice {invoice.get('id') or event_id}",
        )
        _, granted = grant_credits(self.deps.app, org.id, cmd, kind="purchase")
        log.info("stripe.invoice_paid", stripe_event_id=event_id, granted=granted)
        status = "applied" if granted else "duplicate"
        return {"received": True, "status": status, "credits_granted": granted}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route("/webhooks/workflows/{workflow_id:uuid}/{token}", WorkflowTrigger(deps))
    app.add_route(f"{prefix}/webhooks/stripe", StripeWebhook(deps))
