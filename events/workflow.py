"""A registered n8n workflow that the gateway may run, with its price and trigger."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.errors import NotFound


class Workflow(Aggregate):
    """`definition` holds the contract's editable fields (name, webhook_url, retry, ...)."""

    class Registered(Aggregate.Created):
        organization_id: UUID
        definition: dict[str, Any]

    @event(Registered)
    def __init__(self, organization_id: UUID, definition: dict[str, Any]) -> None:
        self.organization_id = organization_id
        self.definition = definition
        self.is_active = True
        self.archived = False
        # A `webhook` trigger's URL token: its hash (to check) and sealed (to show the URL).
        self.trigger_token: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        # Reads like workflow.credits_per_execution go to the definition.
        definition = self.__dict__.get("definition", {})
        if name in definition:
            return definition[name]
        raise AttributeError(name)

    class Updated(Aggregate.Event):
        changes: dict[str, Any]

    @event(Updated)
    def update(self, changes: dict[str, Any]) -> None:
        self.definition = {**self.definition, **changes}

    class Activated(Aggregate.Event):
        pass

    @event(Activated)
    def activate(self) -> None:
        self.is_active = True

    class Deactivated(Aggregate.Event):
        pass

    @event(Deactivated)
    def deactivate(self) -> None:
        self.is_active = False

    class Archived(Aggregate.Event):
        pass

    @event(Archived)
    def archive(self) -> None:
        self.archived = True
        self.is_active = False

    class TriggerTokenIssued(Aggregate.Event):
        token_hash: str
        sealed: dict[str, str]

    @event(TriggerTokenIssued)
    def issue_trigger_token(self, token_hash: str, sealed: dict[str, str]) -> None:
        """A new token for the trigger URL; the previous one stops working."""
        self.trigger_token = {"hash": token_hash, "sealed": sealed}

    @property
    def has_webhook_trigger(self) -> bool:
        return (self.definition.get("trigger") or {}).get("type") == "webhook"

    def check_runnable(self) -> None:
        if self.archived or not self.is_active:
            raise NotFound("workflow not found or inactive", workflow_id=str(self.id))
