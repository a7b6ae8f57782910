"""Event triggers and keyed runs, through the command handlers on an embedded store."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import pytest

from commands.automation_event import RecordEvent, record_event, trigger_workflows
from commands.execution import ExecuteWorkflow, queue_execution
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.execution import Execution


@pytest.fixture
def org(app: Flowledger) -> Any:
    user = register_user(app, RegisterUser(email="o@example.com", password="x" * 12, full_name="O"))
    return create_organization(
        app, user.id, CreateOrganization(name="acme", tenant_id="acme")
    ).organization


def _on_event(app: Flowledger, org: Any, *conditions: dict[str, Any]) -> Any:
    trigger = {"type": "event", "event_types": ["lead.created"], "filter": list(conditions)}
    cmd = RegisterWorkflow(name="w", webhook_url="http://127.0.0.1:9/webhook/sync",
                           trigger=trigger)  # type: ignore[arg-type]  # fmt: skip
    return register_workflow(app, org.id, cmd)


def _matches(app: Flowledger, org: Any, data: dict[str, Any], *conditions: Any) -> bool:
    workflow = _on_event(app, org, *conditions)
    cmd = RecordEvent(event_type="lead.created", event_data=data)
    return record_event(app, org.id, "acme", cmd, [workflow.id]).matched == [workflow.id]


@pytest.mark.parametrize(
    ("condition", "data", "expected"),
    [
        ({"field": "score", "op": "eq", "value": 5}, {"score": 5}, True),
        ({"field": "score", "op": "eq", "value": 5}, {"score": 6}, False),
        ({"field": "score", "op": "ne", "value": 5}, {"score": 6}, True),
        ({"field": "score", "op": "ne", "value": 5}, {}, True),
        ({"field": "score", "op": "gt", "value": 5}, {"score": 6}, True),
        ({"field": "score", "op": "gt", "value": 5}, {"score": 5}, False),
        ({"field": "score", "op": "gte", "value": 5}, {"score": 5}, True),
        ({"field": "score", "op": "lt", "value": 5}, {"score": 4}, True),
        ({"field": "score", "op": "lte", "value": 5}, {"score": 6}, False),
        ({"field": "score", "op": "gt", "value": 5}, {"score": "high"}, False),
        ({"field": "score", "op": "gt", "value": 5}, {}, False),
        ({"field": "a.b.c", "op": "in", "value": ["x", "y"]}, {"a": {"b": {"c": "y"}}}, True),
        ({"field": "a.b.c", "op": "in", "value": ["x"]}, {"a": {"b": {"c": "y"}}}, False),
        ({"field": "items.0.sku", "op": "eq", "value": "s1"}, {"items": [{"sku": "s1"}]}, True),
        ({"field": "a.b", "op": "exists"}, {"a": {"b": None}}, True),
        ({"field": "a.b", "op": "exists"}, {"a": {}}, False),
        ({"field": "a.b", "op": "exists", "value": False}, {"a": {}}, True),
    ],
)
def test_filter_conditions(
    app: Flowledger, org: Any, condition: dict[str, Any], data: dict[str, Any], expected: bool
) -> None:
    assert _matches(app, org, data, condition) is expected


def test_other_event_types_and_inactive_workflows_do_not_match(app: Flowledger, org: Any) -> None:
    workflow = _on_event(app, org)
    other = record_event(app, org.id, "acme", RecordEvent(event_type="lead.lost"), [workflow.id])
    assert other.matched == [] and other.processed
    workflow.deactivate()
    app.save(workflow)
    cmd = RecordEvent(event_type="lead.created")
    assert record_event(app, org.id, "acme", cmd, [workflow.id]).matched == []


def test_triggering_twice_queues_each_run_once(app: Flowledger, org: Any) -> None:
    workflow = _on_event(app, org)
    event = record_event(app, org.id, "acme", RecordEvent(event_type="lead.created"), [workflow.id])
    assert not event.processed
    first = trigger_workflows(app, event.id)
    assert first.processed and list(first.executions) == [str(workflow.id)]
    run = app.repository.get(UUID(first.executions[str(workflow.id)]))
    assert isinstance(run, Execution) and run.trigger == "event"
    assert trigger_workflows(app, event.id).executions == first.executions


def test_a_keyed_run_is_queued_once_even_by_concurrent_callers(app: Flowledger, org: Any) -> None:
    workflow = _on_event(app, org)
    ids: list[Any] = []
    barrier = threading.Barrier(4)
    key = f"{workflow.id}:2027-03-28T02:00"

    def queue() -> None:
        barrier.wait()
        cmd = ExecuteWorkflow()
        run = queue_execution(app, org.id, "acme", workflow.id, cmd, trigger="schedule", key=key)
        ids.append(run.id)

    threads = [threading.Thread(target=queue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and len(ids) == 4
    assert ids[0] == Execution.create_id(key=key)
    unkeyed = queue_execution(app, org.id, "acme", workflow.id, ExecuteWorkflow())
    assert unkeyed.id != ids[0]
