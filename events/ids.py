"""Deterministic ids, so that "the same thing twice" collides in the event store.

Saving a second aggregate with an id that already exists fails atomically, which is how
uniqueness (emails, tenant ids, invoice ids) is enforced without any read model.
"""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = UUID("5b0c2f1e-8a61-4f3e-9d0a-6c1f0e7a2b11")


def index_id(kind: str, key: str) -> UUID:
    return uuid5(NAMESPACE, f"{kind}:{key}")


def credit_account_id(organization_id: UUID) -> UUID:
    return uuid5(NAMESPACE, f"credit-account:{organization_id}")


def keyed_execution_id(key: str) -> UUID:
    """The id of the one run a deterministic `key` may queue (see `Execution.create_id`)."""
    return uuid5(NAMESPACE, f"execution:{key}")
