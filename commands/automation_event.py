"""Recording automation events and queueing the runs of the workflows they trigger.

A workflow's `event` trigger matches when the event's type is one of its `event_types` and
every `filter` condition holds on the event's data (dotted field paths: `lead.score`).
Matching happens when the event is received (the answer names the workflows); the runs are
queued by the `trigger_workflows` actor, one per (event, workflow) with a deterministic id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import structlog
from pydantic import Field, field_validator

from commands.base import Command, retry_on_conflict
from commands.execution import ExecuteWorkflow, queue_execution
from events.application import Flowledger
from events.automation_event import AutomationEvent
from events.errors import DomainError
from events.workflow import Workflow

log = structlog.get_logger()
EVENT_TYPE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
MAX_EVENT_DATA = 256 * 1024
_MISSING = object()


class RecordEvent(Command):
    event_type: str = Field(pattern=EVENT_TYPE)
    event_data: dict[str, Any] = Field(default_factory=dict)
    trigger_workflows: bool = True

    @field_validator("event_data")
    @classmethod
    def _at_most_256_kib(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_EVENT_DATA:
            raise ValueError(f"event_data is {size} bytes serialized; at most 262144 allowed")
        return value


def field_value(data: Any, path: str) -> Any:
    """`a.b.c` inside nested objects (a number part also indexes a list); _MISSING if absent."""
    value = data
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _holds(condition: dict[str, Any], data: dict[str, Any]) -> bool:
    value = field_value(data, condition["field"])
    op, expected = condition["op"], condition.get("value")
    if op == "exists":
        return (value is not _MISSING) == (expected is None or bool(expected))
    if value is _MISSING:
        return op == "ne"
    if op == "eq":
        return bool(value == expected)
    if op == "ne":
        return bool(value != expected)
    if op == "in":
        return isinstance(expected, list) and value in expected
    try:
        if op == "gt":
            return bool(value > expected)
        if op == "gte":
            return bool(value >= expected)
        if op == "lt":
            return bool(value < expected)
        if op == "lte":
            return bool(value <= expected)
    except TypeError:  # "abc" > 3: not comparable, so not a match
        return False
    return False


def triggered_by(workflow: Workflow, event_type: str, data: dict[str, Any]) -> bool:
    """Whether this workflow's event trigger matches (an archived or inactive one never)."""
    trigger = workflow.definition.get("trigger") or {}
    if workflow.archived or not workflow.is_active or trigger.get("type") != "event":
        return False
    if event_type not in trigger.get("event_types", []):
        return False
    return all(_holds(c, data) for c in trigger.get("filter") or [])


def record_event(
    app: Flowledger,
    org_id: UUID,
    tenant_id: str,
    cmd: RecordEvent,
    candidates: Iterable[UUID],
    source: str = "api",
    context: dict[str, Any] | None = None,
) -> AutomationEvent:
    """Record the event with the workflows (of `candidates`, e.g. from the read model) whose
    event trigger matches it; the dispatcher then sends `trigger_workflows`."""
    matched: list[UUID] = []
    if cmd.trigger_workflows:
        for workflow_id in candidates:
            workflow = app.find(workflow_id, Workflow)
            if (
                workflow is not None
                and workflow.organization_id == org_id
                and triggered_by(workflow, cmd.event_type, cmd.event_data)
            ):
                matched.append(workflow.id)
    event = AutomationEvent(
        organization_id=org_id,
        tenant_id=tenant_id,
        event_type=cmd.event_type,
        event_data=cmd.event_data,
        source=source,
        trigger_workflows=cmd.trigger_workflows,
        matched=matched,
        context=context or {},
    )
    app.save(event)
    return event


def execution_key(event_id: UUID, workflow_id: UUID) -> str:
    return f"event:{event_id}:{workflow_id}"


@retry_on_conflict()
def trigger_workflows(app: Flowledger, event_id: UUID) -> AutomationEvent:
    """Queue one run (trigger `event`) per matched workflow, then mark the event processed.

    Safe to run twice: each run's id derives from (event, workflow), so a second pass finds
    the runs already queued. A workflow that can no longer run (archived, deactivated,
    input refused, credits short) is skipped and logged.
    """
    event = app.load(event_id, AutomationEvent, "event")
    if event.processed:
        return event
    executions: dict[str, str] = {}
    for workflow_id in event.matched:
        metadata = {"event_id": str(event.id), "event_type": event.event_type}
        cmd = ExecuteWorkflow(input=event.event_data, metadata=metadata)
        try:
            execution = queue_execution(
                app,
                event.organization_id,
                event.tenant_id,
                workflow_id,
                cmd,
                trigger="event",
                key=execution_key(event.id, workflow_id),
            )
        except DomainError as e:
            log.warning("event.trigger_skipped", event_id=str(event.id),
                        workflow_id=str(workflow_id), reason=e.message)  # fmt: skip
            continue
        executions[str(workflow_id)] = str(execution.id)
    if executions:
        event.record_executions(executions)
    event.mark_processed()
    app.save(event)
    return event
