"""Which organizations have webhook endpoints, as the dispatcher reads the log.

Most organizations have none, and a `fan_out_many` message per batch of their events was a
fifth of a worker's CPU spent finding that out again (loading each event's aggregate and
the organization's registry). The dispatcher asks here first and fans out only the events
of organizations that may have a subscriber; the worker still matches each endpoint's
event types and creation time.

An answer is loaded from the write side (the organization's `WebhookSubscriptions`, one
query) and kept until the dispatcher reads one of that registry's events in the log. What
is loaded is never older than the event being dispatched (the log is read in order), so an
organization that has had no endpoint added since is known to have none; one whose
endpoints were all removed later is treated as the worker would treat it at fan-out time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from uuid import UUID

from events.application import Flowledger
from events.webhook_endpoint import WebhookSubscriptions, subscriptions_id
from projections.runner import topic_of

#: Registry events: any of them (in the log) forgets what is known of its organization.
TOPICS = frozenset(
    topic_of(c)
    for c in (WebhookSubscriptions.Opened, WebhookSubscriptions.Added, WebhookSubscriptions.Removed)
)
#: Remembered aggregate → organization pairs; beyond this the memory starts again.
MAX_REMEMBERED = 200_000
#: An organization's registry id (a uuid5, asked for every event of a batch).
_registry_id = lru_cache(maxsize=MAX_REMEMBERED)(subscriptions_id)


class Subscribers:
    """`wanted(event)`: whether the event's organization may have a webhook endpoint."""

    def __init__(self, app: Flowledger) -> None:
        self.app = app
        self._has: dict[UUID, bool] = {}  # by registry id
        self._org_of: dict[UUID, UUID | None] = {}  # aggregate id → its organization

    def read(self, event: Any) -> None:
        """Take note of an event of the log, in log order (every event the dispatcher reads)."""
        if isinstance(event, WebhookSubscriptions.Event):
            self._has.pop(event.originator_id, None)
            return
        org = getattr(event, "organization_id", None)
        if isinstance(org, UUID):  # created events name their organization
            self._remember(event.originator_id, org)

    def wanted(self, event: Any) -> bool:
        org = self.organization_of(event)
        if org is None:
            return True  # not known: let the worker find out
        registry_id = _registry_id(org)
        has = self._has.get(registry_id)
        if has is None:
            registry = self.app.current(registry_id, WebhookSubscriptions)
            has = bool(registry is not None and registry.endpoint_ids)
            self._has[registry_id] = has
        return has

    def organization_of(self, event: Any) -> UUID | None:
        org = getattr(event, "organization_id", None)
        if isinstance(org, UUID):
            return org
        aggregate_id = event.originator_id
        if aggregate_id not in self._org_of:
            aggregate = self.app.current(aggregate_id, object)
            self._remember(aggregate_id, getattr(aggregate, "organization_id", None))
        return self._org_of[aggregate_id]

    def _remember(self, aggregate_id: UUID, org: UUID | None) -> None:
        if len(self._org_of) >= MAX_REMEMBERED:
            self._org_of.clear()
        self._org_of[aggregate_id] = org
