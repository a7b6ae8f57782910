"""The credits read model: one transaction row per balance change, and the running balance.

The row and the balance it leads to are written in the same transaction, so the balance is
always the sum of the organization's rows. The account's events carry no organization id
after `Opened`; the balance row maps the account id to it. The balance row records the
position of the last event applied, so replays change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from events.credit_account import CreditAccount
from flowledger.db import Cursor, Database
from projections.formats import event_id, iso
from projections.rows import Rows
from projections.runner import Item, Projection, handles

TABLES = [
    """CREATE TABLE IF NOT EXISTS credit_balances (
        account_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL UNIQUE,
        balance BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        position BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS credit_transactions (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        type TEXT NOT NULL,
        amount BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        execution_id TEXT,
        description TEXT,
        created_at TEXT NOT NULL,
        position BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS credit_transactions_org "
    "ON credit_transactions (organization_id, position)",
    "CREATE INDEX IF NOT EXISTS credit_transactions_org_type "
    "ON credit_transactions (organization_id, type, position)",
]

TYPES = ("grant", "purchase", "debit", "refund", "transfer_out", "transfer_in")


class CreditsProjection(Projection):
    """A batch's balance rows are read once, changed in memory and written once; the
    transaction rows of the batch go in one `executemany`."""

    name = "credit_transactions"
    tables = TABLES

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        batch = _Batch(cur, [str(item.event.originator_id) for item in items])
        for item in items:
            handler = self.handlers.get(type(item.event))
            if handler is not None:
                handler(self, batch, item.event, item.position)
        batch.write()

    @handles(CreditAccount.Opened)
    def on_opened(self, batch: _Batch, event: CreditAccount.Opened, position: int) -> None:
        batch.balances.insert(
            {
                "account_id": str(event.originator_id),
                "organization_id": str(event.organization_id),
                "balance": 0,
                "updated_at": iso(event.timestamp),
                "position": position,
            }
        )

    @handles(CreditAccount.Granted)
    def on_granted(self, batch: _Batch, event: CreditAccount.Granted, position: int) -> None:
        kind = "purchase" if event.kind == "purchase" else "grant"
        description = event.description
        if not description:
            description = "Credits purchased" if kind == "purchase" else "Credits granted"
            if event.invoice_id:
                description += f" (invoice {event.invoice_id})"
        _record(batch, event, position, kind, event.amount, None, description)

    @handles(CreditAccount.Debited)
    def on_debited(self, batch: _Batch, event: CreditAccount.Debited, position: int) -> None:
        note = f"Execution {event.execution_id}"
        _record(batch, event, position, "debit", -event.amount, event.execution_id, note)

    @handles(CreditAccount.Refunded)
    def on_refunded(self, batch: _Batch, event: CreditAccount.Refunded, position: int) -> None:
        note = f"Refund of execution {event.execution_id}"
        _record(batch, event, position, "refund", event.amount, event.execution_id, note)

    @handles(CreditAccount.TransferredOut)
    def on_transferred_out(
        self, batch: _Batch, event: CreditAccount.TransferredOut, position: int
    ) -> None:
        note = _with_message(f"Transfer to organization {event.to_organization_id}", event.message)
        _record(batch, event, position, "transfer_out", -event.amount, None, note)

    @handles(CreditAccount.TransferredIn)
    def on_transferred_in(
        self, batch: _Batch, event: CreditAccount.TransferredIn, position: int
    ) -> None:
        note = _with_message(
            f"Transfer from organization {event.from_organization_id}", event.message
        )
        _record(batch, event, position, "transfer_in", event.amount, None, note)


class _Batch:
    """The balance rows the batch touches and the transaction rows it adds."""

    def __init__(self, cur: Cursor, accounts: list[str]) -> None:
        self.cur = cur
        self.balances = Rows(cur, "credit_balances", "account_id", keys=accounts)
        self.transactions: list[tuple[Any, ...]] = []

    def write(self) -> None:
        self.cur.executemany(
            "INSERT INTO credit_transactions (id, organization_id, type, amount, balance_after,"
            " execution_id, description, created_at, position)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            self.transactions,
        )
        self.balances.write()


def _with_message(text: str, message: str | None) -> str:
    return f"{text}: {message}" if message else text


def _record(
    batch: _Batch,
    event: Any,
    position: int,
    kind: str,
    amount: int,
    execution_id: Any,
    description: str,
) -> None:
    """One transaction row and the new running balance, unless already applied."""
    row = batch.balances.after(event.originator_id, position)
    if row is None:
        return
    balance = int(row["balance"]) + amount
    at = iso(event.timestamp)
    batch.transactions.append(
        (
            str(event_id(event)),
            row["organization_id"],
            kind,
            amount,
            balance,
            None if execution_id is None else str(execution_id),
            description,
            at,
            position,
        )
    )
    batch.balances.update(row, balance=balance, updated_at=at, position=position)


# -- queries ---------------------------------------------------------------------------------


def list_transactions(
    db: Database, org_id: Any, *, type: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """The organization's balance changes, newest first (the ledger's order)."""
    where = "organization_id = %s"
    params: list[Any] = [str(org_id)]
    if type is not None:
        where += " AND type = %s"
        params.append(type)
    total = db.one(f"SELECT COUNT(*) AS n FROM credit_transactions WHERE {where}", params)
    rows = db.query(
        "SELECT id, type, amount, balance_after, execution_id, description, created_at"
        f" FROM credit_transactions WHERE {where} ORDER BY position DESC LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    items = [
        {**row, "amount": int(row["amount"]), "balance_after": int(row["balance_after"])}
        for row in rows
    ]
    return items, int(total["n"]) if total else 0


def balance(db: Database, org_id: Any) -> dict[str, Any] | None:
    """`{balance, updated_at}` of the organization; None before its account is projected."""
    row = db.one(
        "SELECT balance, updated_at FROM credit_balances WHERE organization_id = %s",
        (str(org_id),),
    )
    return {"balance": int(row["balance"]), "updated_at": row["updated_at"]} if row else None
