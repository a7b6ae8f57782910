"""A subscriber's URL for outgoing webhooks, with its signing secret sealed by the vault.

The secret enters the log only sealed (`events.vault`), so the clear text is shown once, at
creation or rotation. `failing_since` marks the first failure after the last success: an
endpoint whose deliveries have all failed for 24 h is disabled (only the transitions are
events, so a failing endpoint does not grow one event per attempt).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from events.ids import NAMESPACE


class WebhookEndpoint(Aggregate):
    class Registered(Aggregate.Created):
        organization_id: UUID
        url: str
        event_types: list[str]
        description: str | None
        max_attempts: int
        secret: dict[str, str]

    @event(Registered)
    def __init__(
        self,
        organization_id: UUID,
        url: str,
        event_types: list[str],
        description: str | None,
        max_attempts: int,
        secret: dict[str, str],
    ) -> None:
        self.organization_id = organization_id
        self.url = url
        self.event_types = event_types
        self.description = description
        self.max_attempts = max_attempts
        self.secret = secret  # sealed, never clear text
        self.is_active = True
        self.archived = False
        self.failing_since: datetime | None = None

    def wants(self, event_type: str) -> bool:
        """Active, not archived, and subscribed to this type (or to everything)."""
        subscribed = "*" in self.event_types or event_type in self.event_types
        return self.is_active and not self.archived and subscribed

    class Updated(Aggregate.Event):
        changes: dict[str, Any]

    @event(Updated)
    def update(self, changes: dict[str, Any]) -> None:
        """`changes` holds url, event_types, description and max_attempts (any subset)."""
        for name, value in changes.items():
            setattr(self, name, value)

    class SecretRotated(Aggregate.Event):
        secret: dict[str, str]

    @event(SecretRotated)
    def rotate_secret(self, secret: dict[str, str]) -> None:
        self.secret = secret

    class Enabled(Aggregate.Event):
        pass

    @event(Enabled)
    def enable(self) -> None:
        self.is_active = True
        self.failing_since = None

    class Disabled(Aggregate.Event):
        reason: str

    @event(Disabled)
    def disable(self, reason: str) -> None:
        self.is_active = False

    class StartedFailing(Aggregate.Event):
        at: datetime

    @event(StartedFailing)
    def start_failing(self, at: datetime) -> None:
        self.failing_since = at

    class Recovered(Aggregate.Event):
        pass

    @event(Recovered)
    def recover(self) -> None:
        self.failing_since = None

    class Archived(Aggregate.Event):
        pass

    @event(Archived)
    def archive(self) -> None:
        self.archived = True
        self.is_active = False


def subscriptions_id(organization_id: UUID) -> UUID:
    return uuid5(NAMESPACE, f"webhook-subscriptions:{organization_id}")


class WebhookSubscriptions(Aggregate):
    """The ids of an organization's endpoints, on the write side.

    Fan-out reads it (one load, usually cached) instead of a read model, so it never waits
    for a projection and an organization without endpoints costs one lookup per event.
    """

    @staticmethod
    def create_id(organization_id: UUID) -> UUID:
        return subscriptions_id(organization_id)

    class Opened(Aggregate.Created):
        organization_id: UUID

    @event(Opened)
    def __init__(self, organization_id: UUID) -> None:
        self.organization_id = organization_id
        self.endpoint_ids: list[UUID] = []

    class Added(Aggregate.Event):
        endpoint_id: UUID

    @event(Added)
    def add(self, endpoint_id: UUID) -> None:
        self.endpoint_ids.append(endpoint_id)

    class Removed(Aggregate.Event):
        endpoint_id: UUID

    @event(Removed)
    def remove(self, endpoint_id: UUID) -> None:
        self.endpoint_ids = [e for e in self.endpoint_ids if e != endpoint_id]
