"""Domain events → the contract's webhook event types and their `data`.

One small table, so what a subscriber receives is decided in one place. The aggregate is
read as of the event's version, so a replay (or a late fan-out) describes the event as it
happened, not as things are now. The webhook event id is `projections.formats.event_id` of
the domain event; the credit warnings derived from a debit get their own ids from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.application import project_aggregate

from events.application import Flowledger
from events.automation_event import AutomationEvent
from events.credit_account import CreditAccount
from events.execution import Execution
from events.organization import Organization
from events.provider_key import ProviderKey
from events.workflow import Workflow
from projections.formats import event_id, iso


@dataclass(frozen=True)
class Outgoing:
    """One webhook event: what every matching endpoint of the organization receives."""

    id: UUID
    type: str
    organization_id: UUID
    timestamp: datetime
    data: dict[str, Any]


def as_of(app: Flowledger, event: Any) -> Any:
    """The event's aggregate as of the event (read only: it may be shared between threads).

    Fan-out usually runs right after the save, when the current aggregate (cached, brought
    up to date by one query) is still at the event's version: then that is it. Otherwise it
    is rolled forward from the latest earlier version this process described (a copy, and
    the few events since), or, the first time, rebuilt from the log: its snapshot and up to
    200 events for the hot credit account, which was a tenth of a webhook worker's CPU when
    every debit of a busy organization was described that way.
    """
    aggregate_id, version = event.originator_id, event.originator_version
    found: Any = app.repository.get(aggregate_id)
    if found.version != version:
        with _past_lock:
            past = _past.get(aggregate_id)
        if past is not None and past.version <= version:
            newer = app.events.get(aggregate_id, gt=past.version, lte=version)
            found = project_aggregate(deepcopy(past), newer)
        else:
            found = app.repository.get(aggregate_id, version=version)
    with _past_lock:
        known = _past.get(aggregate_id)
        if known is None or known.version < found.version:
            if len(_past) >= _PAST_MAX:
                _past.clear()
            _past[aggregate_id] = found  # never changed again: copies are rolled forward
    return found


_PAST_MAX = 10_000
_past: dict[UUID, Any] = {}
_past_lock = threading.Lock()


def _execution(app: Flowledger, event: Any, kind: str) -> list[Outgoing]:
    run: Execution = as_of(app, event)
    data = {
        "execution_id": str(run.id),
        "workflow_id": str(run.workflow_id),
        "status": run.status,
        "trigger": run.trigger,
        "credits_used": run.debited,
        "duration_ms": run.duration_ms,
    }
    if kind == "completed":
        data["output"] = run.output
    if run.error is not None:
        data["error"] = run.error
    return [
        Outgoing(event_id(event), f"execution.{kind}", run.organization_id, event.timestamp, data)
    ]


def _workflow(app: Flowledger, event: Any, kind: str) -> list[Outgoing]:
    workflow: Workflow = as_of(app, event)
    data: dict[str, Any] = {
        "workflow_id": str(workflow.id),
        "name": workflow.definition.get("name"),
    }
    if kind == "updated":
        data["changes"] = event.changes
    return [
        Outgoing(
            event_id(event), f"workflow.{kind}", workflow.organization_id, event.timestamp, data
        )
    ]


def _granted(app: Flowledger, event: CreditAccount.Granted) -> list[Outgoing]:
    account: CreditAccount = as_of(app, event)
    data = {"amount": event.amount, "kind": event.kind, "balance": account.balance}
    return [
        Outgoing(event_id(event), "credits.granted", account.organization_id, event.timestamp, data)
    ]


def _spent(app: Flowledger, event: Any) -> list[Outgoing]:
    """`credits.low_balance` when this debit crossed the threshold, `credits.depleted` at 0."""
    account: CreditAccount = as_of(app, event)
    after, before = account.balance, account.balance + event.amount
    org = app.find(account.organization_id, Organization)
    threshold = org.settings.get("low_balance_threshold") if org is not None else None
    data = {"balance": after, "previous_balance": before, "threshold": threshold}
    found: list[str] = []
    if threshold is not None and after < threshold <= before:
        found.append("credits.low_balance")
    if after == 0 < before:
        found.append("credits.depleted")
    base = event_id(event)
    return [
        Outgoing(uuid5(base, kind), kind, account.organization_id, event.timestamp, data)
        for kind in found
    ]


def _received(app: Flowledger, event: AutomationEvent.Received) -> list[Outgoing]:
    data = {
        "event_id": str(event.originator_id),
        "event_type": event.event_type,
        "event_data": event.event_data,
        "source": event.source,
    }
    return [
        Outgoing(event_id(event), "event.received", event.organization_id, event.timestamp, data)
    ]


def _limit_reached(app: Flowledger, event: ProviderKey.Paused) -> list[Outgoing]:
    """`api_key.limit_reached`: a provider key's month reached its limit; it is paused."""
    key: ProviderKey = as_of(app, event)
    data = {
        "key_id": str(key.id),
        "provider": key.provider,
        "key_name": key.key_name,
        "key_hint": key.key_hint,
        "month": event.month,
        "usage_current": event.cost_micros / 1_000_000,
        "usage_limit_monthly": event.limit_micros / 1_000_000,
        "paused_until": iso(event.until),
    }
    return [
        Outgoing(
            event_id(event), "api_key.limit_reached", key.organization_id, event.timestamp, data
        )
    ]


def _as(kind: str, describe: Callable[[Flowledger, Any, str], list[Outgoing]]) -> Mapper:
    return lambda app, event: describe(app, event, kind)


Mapper = Callable[[Flowledger, Any], list[Outgoing]]

MAPPERS: dict[type, Mapper] = {
    Execution.Started: _as("started", _execution),
    Execution.Completed: _as("completed", _execution),
    Execution.Failed: _as("failed", _execution),
    Execution.TimedOut: _as("timed_out", _execution),
    Execution.Cancelled: _as("cancelled", _execution),
    Execution.Rejected: _as("rejected", _execution),
    Workflow.Registered: _as("created", _workflow),
    Workflow.Updated: _as("updated", _workflow),
    CreditAccount.Granted: _granted,
    CreditAccount.Debited: _spent,
    CreditAccount.TransferredOut: _spent,
    AutomationEvent.Received: _received,
    ProviderKey.Paused: _limit_reached,
}
#: The domain events the dispatcher routes to `workers.webhooks.fan_out`.
ROUTED = tuple(MAPPERS)


def outgoing(app: Flowledger, event: Any) -> list[Outgoing]:
    mapper = MAPPERS.get(type(event))
    return mapper(app, event) if mapper else []


def body(item: Outgoing, tenant_id: str) -> dict[str, Any]:
    """The contract's delivery body (its key order is the order of the bytes sent)."""
    return {
        "id": str(item.id),
        "event": item.type,
        "timestamp": iso(item.timestamp),
        "organization_id": str(item.organization_id),
        "tenant_id": tenant_id,
        "data": item.data,
    }
