"""Automation events: queue the runs of the workflows an event triggers.

`trigger_workflows` is sent by the dispatcher for `AutomationEvent.Received` when workflows
matched; running it twice queues nothing twice (each run's id derives from the event and
the workflow) and an event already processed is left alone.
"""

from __future__ import annotations

from uuid import UUID

import dramatiq

from commands.automation_event import trigger_workflows as trigger
from workers import context

QUEUE = "executions"


@dramatiq.actor(queue_name=QUEUE, max_retries=20)
def trigger_workflows(event_id: str) -> None:
    trigger(context.app(), UUID(event_id))
