"""`/webhooks/endpoints` and `/webhooks/deliveries`: outgoing webhooks, admin only.

Endpoints answer from the aggregate (the secret appears only in the answers of create and
rotate-secret); lists come from the `webhook_deliveries` read model. `POST .../test` sends a
`webhook.test` event (`data: {"ping": true}`) to that one endpoint, whatever its event
types, and answers 202 with the delivery id to look up in `/webhooks/deliveries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon

from api.middleware import body, choice_param, page_params
from api.shapes import page, ts
from commands.base import Command
from commands.webhook import (
    CreateEndpoint,
    UpdateEndpoint,
    archive_endpoint,
    create_endpoint,
    endpoint_of,
    request_redelivery,
    rotate_endpoint_secret,
    update_endpoint,
)
from events.webhook_endpoint import WebhookEndpoint
from projections.deliveries import NAME, failed_since, list_deliveries, list_endpoints

if TYPE_CHECKING:
    from api.app import Deps

STATUSES = ("pending", "succeeded", "failed")


class Recover(Command):
    since: datetime


def endpoint_json(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "max_attempts": endpoint.max_attempts,
        "is_active": endpoint.is_active,
        "created_at": ts(endpoint.created_on),
        "updated_at": ts(endpoint.modified_on),
    }
    if secret is not None:
        shape["secret"] = secret
    return shape


def _deliver(delivery_id: Any) -> None:
    from workers.webhooks import deliver  # actors bind to the broker set up at start

    deliver.send(str(delivery_id))


class Resource:
    auth = {"GET": "admin", "POST": "admin", "PATCH": "admin", "DELETE": "admin"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps


class Endpoints(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        org_id = req.context.principal.org_id
        endpoint, secret = create_endpoint(self.deps.app, org_id, body(req, CreateEndpoint))
        self.deps.settle(NAME)  # so fan-out and lists see it at once
        resp.status = falcon.HTTP_201
        resp.media = endpoint_json(endpoint, secret)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        items, total = list_endpoints(self.deps.db, req.context.principal.org_id, limit, offset)
        resp.media = page(items, total, limit, offset)


class Endpoint(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, endpoint_id: UUID) -> None:
        org_id = req.context.principal.org_id
        resp.media = endpoint_json(endpoint_of(self.deps.app, org_id, endpoint_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, endpoint_id: UUID) -> None:
        org_id = req.context.principal.org_id
        cmd = body(req, UpdateEndpoint)
        resp.media = endpoint_json(update_endpoint(self.deps.app, org_id, endpoint_id, cmd))
        self.deps.settle(NAME)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, endpoint_id: UUID) -> None:
        archive_endpoint(self.deps.app, req.context.principal.org_id, endpoint_id)
        self.deps.settle(NAME)
        resp.status = falcon.HTTP_204


class RotateSecret(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, endpoint_id: UUID) -> None:
        org_id = req.context.principal.org_id
        endpoint, secret = rotate_endpoint_secret(self.deps.app, org_id, endpoint_id)
        resp.media = endpoint_json(endpoint, secret)


class Test(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, endpoint_id: UUID) -> None:
        from workers.webhooks import send_test

        endpoint = endpoint_of(self.deps.app, req.context.principal.org_id, endpoint_id)
        delivery_id = send_test(self.deps.app, endpoint)
        resp.status = falcon.HTTP_202
        resp.media = {"delivery_id": str(delivery_id), "event": "webhook.test"}


class RecoverSince(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, endpoint_id: UUID) -> None:
        org_id = req.context.principal.org_id
        since = body(req, Recover).since
        endpoint_of(self.deps.app, org_id, endpoint_id)
        self.deps.settle(NAME)
        ids = failed_since(self.deps.db, org_id, endpoint_id, since)
        for delivery_id in ids:
            request_redelivery(self.deps.app, org_id, UUID(delivery_id))
            _deliver(delivery_id)
        resp.status = falcon.HTTP_202
        resp.media = {"redelivered": len(ids)}


class Deliveries(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        status = choice_param(req, "status", STATUSES)
        filters: dict[str, Any] = {
            "endpoint_id": req.get_param_as_uuid("endpoint_id"),
            "status": status,
            "event_type": req.get_param("event_type"),
        }
        org_id = req.context.principal.org_id
        items, total = list_deliveries(self.deps.db, org_id, **filters, limit=limit, offset=offset)
        resp.media = page(items, total, limit, offset)


class Redeliver(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, delivery_id: UUID) -> None:
        request_redelivery(self.deps.app, req.context.principal.org_id, delivery_id)
        _deliver(delivery_id)
        resp.status = falcon.HTTP_202
        resp.media = {"delivery_id": str(delivery_id), "status": "pending"}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    endpoint = prefix + "/webhooks/endpoints/{endpoint_id:uuid}"
    app.add_route(f"{prefix}/webhooks/endpoints", Endpoints(deps))
    app.add_route(endpoint, Endpoint(deps))
    app.add_route(f"{endpoint}/rotate-secret", RotateSecret(deps))
    app.add_route(f"{endpoint}/test", Test(deps))
    app.add_route(f"{endpoint}/recover", RecoverSince(deps))
    app.add_route(f"{prefix}/webhooks/deliveries", Deliveries(deps))
    app.add_route(f"{prefix}/webhooks/deliveries/{{delivery_id:uuid}}/redeliver", Redeliver(deps))
