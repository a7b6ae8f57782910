"""An organization's credits. Every change is one event; the balance is their sum."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.errors import InsufficientCredits
from events.ids import credit_account_id


class CreditAccount(Aggregate):
    @staticmethod
    def create_id(organization_id: UUID) -> UUID:
        return credit_account_id(organization_id)

    class Opened(Aggregate.Created):
        organization_id: UUID

    @event(Opened)
    def __init__(self, organization_id: UUID) -> None:
        self.organization_id = organization_id
        self.balance = 0

    def check_can_spend(self, amount: int, scope: str = "organization") -> None:
        if amount > self.balance:
            raise InsufficientCredits(
                f"Insufficient credits. Required: {amount}, Available: {self.balance}",
                credits_required=amount,
                credits_available=self.balance,
            )

    class Granted(Aggregate.Event):
        amount: int
        kind: str
        description: str | None
        invoice_id: str | None

    @event(Granted)
    def grant(
        self, amount: int, kind: str, description: str | None = None, invoice_id: str | None = None
    ) -> None:
        """`kind` is grant (operator, plan) or purchase (Stripe)."""
        self.balance += amount

    def debit(self, amount: int, execution_id: UUID) -> None:
        self.check_can_spend(amount)
        self._debited(amount=amount, execution_id=execution_id)

    class Debited(Aggregate.Event):
        amount: int
        execution_id: UUID

    @event(Debited)
    def _debited(self, amount: int, execution_id: UUID) -> None:
        self.balance -= amount

    class Refunded(Aggregate.Event):
        amount: int
        execution_id: UUID

    @event(Refunded)
    def refund(self, amount: int, execution_id: UUID) -> None:
        self.balance += amount

    def transfer_out(
        self, transfer_id: UUID, to_organization_id: UUID, amount: int, message: str | None
    ) -> None:
        self.check_can_spend(amount)
        self._transferred_out(
            transfer_id=transfer_id,
            to_organization_id=to_organization_id,
            amount=amount,
            message=message,
        )

    class TransferredOut(Aggregate.Event):
        transfer_id: UUID
        to_organization_id: UUID
        amount: int
        message: str | None

    @event(TransferredOut)
    def _transferred_out(
        self, transfer_id: UUID, to_organization_id: UUID, amount: int, message: str | None
    ) -> None:
        self.balance -= amount

    class TransferredIn(Aggregate.Event):
        transfer_id: UUID
        from_organization_id: UUID
        amount: int
        message: str | None

    @event(TransferredIn)
    def transfer_in(
        self, transfer_id: UUID, from_organization_id: UUID, amount: int, message: str | None
    ) -> None:
        self.balance += amount
