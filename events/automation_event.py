"""An automation event (`POST /events`, n8n's inbound webhooks): received, then the runs it
triggered recorded, then processed. Workflows with a matching `event` trigger react to it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event


class AutomationEvent(Aggregate):
    class Received(Aggregate.Created):
        organization_id: UUID
        tenant_id: str
        event_type: str
        event_data: dict[str, Any]
        source: str  # api | n8n
        trigger_workflows: bool
        matched: list[UUID]  # the workflows whose trigger matched when it was received
        context: dict[str, Any]  # where it came from (n8n's workflow and execution ids)

    @event(Received)
    def __init__(
        self,
        organization_id: UUID,
        tenant_id: str,
        event_type: str,
        event_data: dict[str, Any],
        source: str,
        trigger_workflows: bool,
        matched: list[UUID],
        context: dict[str, Any],
    ) -> None:
        self.organization_id = organization_id
        self.tenant_id = tenant_id
        self.event_type = event_type
        self.event_data = event_data
        self.source = source
        self.trigger_workflows = trigger_workflows
        self.matched = matched
        self.context = context
        self.executions: dict[str, str] = {}  # workflow id → execution id
        self.processed = not self.has_work

    @property
    def has_work(self) -> bool:
        """Whether runs are to be queued for it (else it is processed when received)."""
        return self.trigger_workflows and bool(self.matched)

    class ExecutionsTriggered(Aggregate.Event):
        executions: dict[str, str]

    @event(ExecutionsTriggered)
    def record_executions(self, executions: dict[str, str]) -> None:
        self.executions = {**self.executions, **executions}

    class Processed(Aggregate.Event):
        pass

    @event(Processed)
    def mark_processed(self) -> None:
        self.processed = True
