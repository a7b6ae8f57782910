"""`/workflows`: register, list, read, change, activate, deactivate and archive workflows.

Reads come from the `workflows` read model; after a change the answer waits (bounded) for
the projection, and falls back to the aggregate when the projection lags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon

from api import shapes
from api.middleware import body, page_params
from commands.workflow import (
    RegisterWorkflow,
    UpdateWorkflow,
    archive_workflow,
    register_workflow,
    rotate_trigger_token,
    set_workflow_active,
    trigger_url,
    update_workflow,
    workflow_of,
)
from events.workflow import Workflow
from projections.workflows import get_workflow, list_workflows

if TYPE_CHECKING:
    from api.app import Deps


def with_trigger_url(deps: Deps, document: dict[str, Any]) -> dict[str, Any]:
    """A webhook trigger's URL holds a secret token, so it comes from the aggregate (sealed
    in the vault), never from the read model."""
    if (document.get("trigger") or {}).get("type") != "webhook":
        return document
    workflow = deps.app.find(UUID(str(document["id"])), Workflow)
    url = trigger_url(deps.app, workflow) if workflow is not None else None
    return {**document, "trigger_url": url}


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def fresh(self, org_id: UUID, workflow: Workflow) -> dict[str, Any]:
        """The read model once it has seen our write, else the aggregate's shape."""
        if self.deps.settle("workflows"):
            row = get_workflow(self.deps.db, org_id, workflow.id)
            if row is not None:
                return with_trigger_url(self.deps, row)
        return with_trigger_url(self.deps, shapes.workflow(workflow))


class Collection(Resource):
    auth = {"GET": "member", "POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        org_id = req.context.principal.org_id
        workflow = register_workflow(self.deps.app, org_id, body(req, RegisterWorkflow))
        resp.status = falcon.HTTP_201
        resp.media = self.fresh(org_id, workflow)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        filters: dict[str, Any] = {
            "active_only": req.get_param_as_bool("active_only", default=False),
            "category": req.get_param("category"),
            "search": req.get_param("search"),
            "project_id": req.get_param_as_uuid("project_id"),
        }
        org_id = req.context.principal.org_id
        items, total = list_workflows(self.deps.db, org_id, **filters, limit=limit, offset=offset)
        items = [with_trigger_url(self.deps, item) for item in items]
        resp.media = shapes.page(items, total, limit, offset)


class Item(Resource):
    auth = {"GET": "member", "PATCH": "admin", "DELETE": "admin"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID) -> None:
        org_id = req.context.principal.org_id
        workflow = workflow_of(self.deps.app, org_id, workflow_id)
        row = get_workflow(self.deps.db, org_id, workflow_id)
        current = row is not None and row["updated_at"] == shapes.ts(workflow.modified_on)
        if row is not None and current:
            resp.media = with_trigger_url(self.deps, row)
        else:
            resp.media = self.fresh(org_id, workflow)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID) -> None:
        org_id = req.context.principal.org_id
        workflow = update_workflow(self.deps.app, org_id, workflow_id, body(req, UpdateWorkflow))
        resp.media = self.fresh(org_id, workflow)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID) -> None:
        archive_workflow(self.deps.app, req.context.principal.org_id, workflow_id)
        self.deps.settle("workflows")
        resp.status = falcon.HTTP_204


class Activation(Resource):
    """`/activate` and `/deactivate`: the same resource with another `active` flag."""

    auth = {"POST": "admin"}

    def __init__(self, deps: Deps, active: bool) -> None:
        super().__init__(deps)
        self.active = active

    def on_post(self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID) -> None:
        org_id = req.context.principal.org_id
        workflow = set_workflow_active(self.deps.app, org_id, workflow_id, self.active)
        resp.media = self.fresh(org_id, workflow)


class RotateTriggerToken(Resource):
    """`/rotate-trigger-token`: a new trigger URL; the previous one answers 404 from now."""

    auth = {"POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID) -> None:
        org_id = req.context.principal.org_id
        workflow = rotate_trigger_token(self.deps.app, org_id, workflow_id)
        resp.media = self.fresh(org_id, workflow)


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    item = prefix + "/workflows/{workflow_id:uuid}"
    app.add_route(f"{prefix}/workflows", Collection(deps))
    app.add_route(item, Item(deps))
    app.add_route(f"{item}/activate", Activation(deps, True))
    app.add_route(f"{item}/deactivate", Activation(deps, False))
    app.add_route(f"{item}/rotate-trigger-token", RotateTriggerToken(deps))
