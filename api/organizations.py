"""`/organizations`: tenants, their members, API keys, client secret, usage and grants.

There is no organizations read model: answers come from the aggregates (and the credit
account), which are always current.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

import falcon

from api import shapes
from api.middleware import body, choice_param, page_params
from commands.credits import GrantCredits, account_of, grant_credits
from commands.organization import (
    AddMember,
    CreateOrganization,
    UpdateOrganization,
    add_member,
    create_organization,
    issue_api_key,
    revoke_api_key,
    rotate_secret,
    update_organization,
)
from events.errors import Forbidden
from events.execution import STATUSES
from events.organization import Organization
from projections.executions import usage_logs

if TYPE_CHECKING:
    from api.app import Deps


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def shape(self, org: Organization) -> dict[str, object]:
        return shapes.organization(org, account_of(self.deps.app, org.id))


class Collection(Resource):
    auth = {"GET": "user", "POST": "user"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user_id = req.context.principal.user_id
        created = create_organization(self.deps.app, user_id, body(req, CreateOrganization))
        org, account = created.organization, account_of(self.deps.app, created.organization.id)
        self.deps.settle("credit_transactions")
        resp.status = falcon.HTTP_201
        resp.media = shapes.created_organization(
            org, account, created.api_key, created.client_secret
        )

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        user = req.context.principal.user
        orgs = [self.deps.app.find(UUID(org_id), Organization) for org_id in user.memberships]
        items = [self.item(org, user.id) for org in orgs if org is not None]
        resp.media = shapes.page(items[offset : offset + limit], len(items), limit, offset)

    def item(self, org: Organization, user_id: UUID) -> dict[str, object]:
        return shapes.organization_item(
            org, account_of(self.deps.app, org.id), org.role_of(user_id)
        )


class Item(Resource):
    auth = {"GET": "member", "PATCH": "admin"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        resp.media = self.shape(req.context.principal.org)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        cmd = body(req, UpdateOrganization)
        if cmd.plan_type is not None and not req.context.principal.is_operator:
            raise Forbidden("only platform operators change plan_type")
        resp.media = self.shape(update_organization(self.deps.app, org_id, cmd))


class Members(Resource):
    auth = {"POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        cmd = body(req, AddMember)
        if cmd.role == "owner" and req.context.principal.role != "owner":
            raise Forbidden("only owners add owners")
        org, user = add_member(self.deps.app, org_id, cmd)
        resp.status = falcon.HTTP_201
        resp.media = {"organization_id": str(org.id), "user_id": str(user.id),
                      "email": user.email, "role": cmd.role}  # fmt: skip


class ApiKeys(Resource):
    auth = {"POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        key_id, api_key, prefix = issue_api_key(self.deps.app, org_id)
        resp.status = falcon.HTTP_201
        resp.media = {"id": str(key_id), "api_key": api_key, "prefix": prefix}


class ApiKey(Resource):
    auth = {"DELETE": "admin"}

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, org_id: UUID, key_id: UUID
    ) -> None:
        revoke_api_key(self.deps.app, org_id, key_id)
        resp.status = falcon.HTTP_204


class RotateSecret(Resource):
    auth = {"POST": "owner"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        resp.media = {"client_secret": rotate_secret(self.deps.app, org_id)}


class Usage(Resource):
    auth = {"GET": "member"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        limit, offset = page_params(req)
        status = choice_param(req, "status", STATUSES)
        logs, total = usage_logs(self.deps.db, org_id, status=status, limit=limit, offset=offset)
        balance = account_of(self.deps.app, org_id).balance
        resp.media = {"usage_logs": logs, "total": total, "credits_remaining": balance,
                      "limit": limit, "offset": offset}  # fmt: skip


class Credits(Resource):
    auth = {"POST": "operator"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, org_id: UUID) -> None:
        account, added = grant_credits(self.deps.app, org_id, body(req, GrantCredits))
        self.deps.settle("credit_transactions")
        resp.media = {"success": True, "new_balance": account.balance, "amount_added": added}


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    base = f"{prefix}/organizations"
    item = base + "/{org_id:uuid}"
    app.add_route(base, Collection(deps))
    app.add_route(item, Item(deps))
    app.add_route(f"{item}/members", Members(deps))
    app.add_route(f"{item}/api-keys", ApiKeys(deps))
    app.add_route(item + "/api-keys/{key_id:uuid}", ApiKey(deps))
    app.add_route(f"{item}/rotate-secret", RotateSecret(deps))
    app.add_route(f"{item}/usage", Usage(deps))
    app.add_route(f"{item}/credits", Credits(deps))
