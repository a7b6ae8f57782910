"""The credits read model: one transaction row per balance change, and the running balance.

The row and the balance it leads to are written in the same transaction, so the balance is
always the sum of the organization's rows. The account's events carry no organization id
after `Opened`; the balance row maps the account id to it. The balance row records the
position of the last event applied, so replays change nothing.
"""

from __future__ import annotations

from typing import Any

from events.credit_account import CreditAccount
from flowledger.db import Cursor, Database
from projections.formats import event_id, iso
from projections.runner import Projection, handles

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
    name = "credit_transactions"
    tables = TABLES

    @handles(CreditAccount.Opened)
    def on_opened(self, cur: Cursor, event: CreditAccount.Opened, position: int) -> None:
        cur.execute(
            "INSERT INTO credit_balances (account_id, organization_id, balance, updated_at,"
            " position) VALUES (%s, %s, 0, %s, %s) ON CONFLICT (account_id) DO NOTHING",
            (str(event.originator_id), str(event.organization_id), iso(event.timestamp), position),
        )

    @handles(CreditAccount.Granted)
    def on_granted(self, cur: Cursor, event: CreditAccount.Granted, position: int) -> None:
        kind = "purchase" if event.kind == "purchase" else "grant"
        description = event.description
        if not description:
            description = "Credits purchased" if kind == "purchase" else "Credits granted"
            if event.invoice_id:
                description += f" (invoice {event.invoice_id})"
        _record(cur, event, position, kind, event.amount, None, description)

    @handles(CreditAccount.Debited)
    def on_debited(self, cur: Cursor, event: CreditAccount.Debited, position: int) -> None:
        note = f"Execution {event.execution_id}"
        _record(cur, event, position, "debit", -event.amount, event.execution_id, note)

    @handles(CreditAccount.Refunded)
    def on_refunded(self, cur: Cursor, event: CreditAccount.Refunded, position: int) -> None:
        note = f"Refund of execution {event.execution_id}"
        _record(cur, event, position, "refund", event.amount, event.execution_id, note)

    @handles(CreditAccount.TransferredOut)
    def on_transferred_out(
        self, cur: Cursor, event: CreditAccount.TransferredOut, position: int
    ) -> None:
        note = _with_message(f"Transfer to organization {event.to_organization_id}", event.message)
        _record(cur, event, position, "transfer_out", -event.amount, None, note)

    @handles(CreditAccount.TransferredIn)
    def on_transferred_in(
        self, cur: Cursor, event: CreditAccount.TransferredIn, position: int
    ) -> None:
        note = _with_message(
            f"Transfer from organization {event.from_organization_id}", event.message
        )
        _record(cur, event, position, "transfer_in", event.amount, None, note)


def _with_message(text: str, message: str | None) -> str:
    return f"{text}: {message}" if message else text


def _record(
    cur: Cursor,
    event: Any,
    position: int,
    kind: str,
    amount: int,
    execution_id: Any,
    description: str,
) -> None:
    """One transaction row and the new running balance, unless already applied."""
    account_id = str(event.originator_id)
    rows = cur.execute(
        "SELECT organization_id, balance FROM credit_balances"
        " WHERE account_id = %s AND position < %s",
        (account_id, position),
    )
    if not rows:
        return
    balance = int(rows[0]["balance"]) + amount
    at = iso(event.timestamp)
    cur.execute(
        "INSERT INTO credit_transactions (id, organization_id, type, amount, balance_after,"
        " execution_id, description, created_at, position)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (
            str(event_id(event)),
            rows[0]["organization_id"],
            kind,
            amount,
            balance,
            None if execution_id is None else str(execution_id),
            description,
            at,
            position,
        ),
    )
    cur.execute(
        "UPDATE credit_balances SET balance = %s, updated_at = %s, position = %s"
        " WHERE account_id = %s",
        (balance, at, position, account_id),
    )


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
