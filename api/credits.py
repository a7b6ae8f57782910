"""`/credits`: the balance (from the account, always current), the ledger, transfers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from api import shapes
from api.middleware import body, choice_param, page_params
from commands.credits import TransferCredits, account_of, transfer_credits
from projections.credits import list_transactions

if TYPE_CHECKING:
    from api.app import Deps

TYPES = ("grant", "purchase", "debit", "refund", "transfer_out", "transfer_in")


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps


class Balance(Resource):
    auth = {"GET": "member"}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        org = req.context.principal.org
        resp.media = shapes.balance(account_of(self.deps.app, org.id), org)


class Transactions(Resource):
    auth = {"GET": "member"}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        kind = choice_param(req, "type", TYPES)
        org_id = req.context.principal.org_id
        items, total = list_transactions(
            self.deps.db, org_id, type=kind, limit=limit, offset=offset
        )
        resp.media = shapes.page(items, total, limit, offset)


class Transfers(Resource):
    auth = {"POST": "admin"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        cmd = body(req, TransferCredits)
        transfer_id, account = transfer_credits(self.deps.app, req.context.principal.org_id, cmd)
        self.deps.settle("credit_transactions")
        resp.status = falcon.HTTP_201
        resp.media = {"transfer_id": str(transfer_id), "status": "completed",
                      "amount": cmd.amount, "balance": account.balance}  # fmt: skip


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route(f"{prefix}/credits/balance", Balance(deps))
    app.add_route(f"{prefix}/credits/transactions", Transactions(deps))
    app.add_route(f"{prefix}/credits/transfers", Transfers(deps))
