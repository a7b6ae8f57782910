"""One webhook event on its way to one endpoint, with every attempt it took.

The id is derived from (endpoint, event), so the dispatcher re-sending an event after a
crash creates nothing new: the second save of the same delivery collides in the store.
The body is fixed at creation, so every attempt (and every redelivery) sends the same bytes
under the same `webhook-id`, which is what receivers dedupe on.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event


def delivery_id(endpoint_id: UUID, event_id: UUID) -> UUID:
    return uuid5(endpoint_id, str(event_id))


class Delivery(Aggregate):
    @staticmethod
    def create_id(endpoint_id: UUID, event_id: UUID, **_: Any) -> UUID:
        return delivery_id(endpoint_id, event_id)

    class Created(Aggregate.Created):
        endpoint_id: UUID
        organization_id: UUID
        event_id: UUID
        event_type: str
        payload: dict[str, Any]
        max_attempts: int

    @event(Created)
    def __init__(
        self,
        endpoint_id: UUID,
        organization_id: UUID,
        event_id: UUID,
        event_type: str,
        payload: dict[str, Any],
        max_attempts: int,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.organization_id = organization_id
        self.event_id = event_id
        self.event_type = event_type
        self.payload = payload
        self.max_attempts = max_attempts
        self.status = "pending"
        self.attempts: list[dict[str, Any]] = []
        self.round_attempts = 0  # attempts since creation or the last redelivery
        self.next_attempt_at: str | None = None

    class Attempted(Aggregate.Event):
        """`at` and `next_attempt_at` are RFC 3339 text; no next attempt after a failure
        means the delivery is dead (`failed`)."""

        at: str
        status_code: int | None
        duration_ms: int
        error: str | None
        succeeded: bool
        next_attempt_at: str | None

    @event(Attempted)
    def record_attempt(
        self,
        at: str,
        status_code: int | None,
        duration_ms: int,
        error: str | None,
        succeeded: bool,
        next_attempt_at: str | None,
    ) -> None:
        self.attempts.append(
            {"at": at, "status_code": status_code, "duration_ms": duration_ms, "error": error}
        )
        self.round_attempts += 1
        self.next_attempt_at = next_attempt_at
        if succeeded:
            self.status = "succeeded"
        elif next_attempt_at is None:
            self.status = "failed"

    class RedeliveryRequested(Aggregate.Event):
        pass

    @event(RedeliveryRequested)
    def request_redelivery(self) -> None:
        """A new round of up to `max_attempts` attempts, starting now."""
        self.status = "pending"
        self.round_attempts = 0
        self.next_attempt_at = None

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - self.round_attempts
