"""Granting and transferring credits. Debits and refunds live with executions."""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError
from pydantic import Field

from commands.base import Command, retry_on_conflict
from commands.organization import organization_by_tenant
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.errors import NotFound
from events.ids import credit_account_id
from events.index import Index


class GrantCredits(Command):
    amount: int = Field(ge=1, le=10**9)
    invoice_id: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=500)


def account_of(app: Flowledger, org_id: UUID) -> CreditAccount:
    return app.load(credit_account_id(org_id), CreditAccount, "organization")


@retry_on_conflict()
def grant_credits(
    app: Flowledger, org_id: UUID, cmd: GrantCredits, kind: str = "grant"
) -> tuple[CreditAccount, int]:
    """Add credits; with an invoice id, the same invoice adds once (returns amount 0 then)."""
    account = account_of(app, org_id)
    claim = None
    if cmd.invoice_id is not None:
        claim = Index(kind="invoice", key=f"{org_id}:{cmd.invoice_id}", ref=account.id)
        if app.find(claim.id, Index) is not None:
            return account, 0
    account.grant(cmd.amount, kind=kind, description=cmd.description, invoice_id=cmd.invoice_id)
    try:
        app.save(account, claim)
    except IntegrityError:
        if claim is not None and app.find(claim.id, Index) is not None:
            return account_of(app, org_id), 0
        raise
    return account, cmd.amount


class TransferCredits(Command):
    to_tenant_id: str = Field(min_length=1, max_length=63)
    amount: int = Field(ge=1, le=10**9)
    message: str | None = Field(None, max_length=500)


@retry_on_conflict()
def transfer_credits(
    app: Flowledger, org_id: UUID, cmd: TransferCredits
) -> tuple[UUID, CreditAccount]:
    target = organization_by_tenant(app, cmd.to_tenant_id)
    if target is None or target.id == org_id:
        raise NotFound("no organization with this tenant_id", field="to_tenant_id")
    source, destination = account_of(app, org_id), account_of(app, target.id)
    transfer_id = uuid4()
    source.transfer_out(transfer_id, target.id, cmd.amount, cmd.message)
    destination.transfer_in(transfer_id, org_id, cmd.amount, cmd.message)
    app.save(source, destination)
    return transfer_id, source
