"""Event → Dramatiq messages. The routing table says which actors react to which events.

The dispatcher follows the log from its tracked position and records the position only
after the messages of a batch are sent: a crash re-sends, never loses. Every actor is
therefore idempotent (its aggregate's state says what is already done).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog

from events.application import Flowledger
from events.automation_event import AutomationEvent
from events.execution import Execution
from flowledger import failpoints
from projections.formats import event_id
from projections.runner import Follower, Item, record_position, topic_of
from workers import automation_events as automation_event_actors
from workers import execution as execution_actors
from workers import webhook_events, webhooks

log = structlog.get_logger()
NAME = "dispatcher"


@dataclass(frozen=True)
class Send:
    """One message to send: the actor, its arguments (ids, never objects) and a delay."""

    actor: dramatiq.Actor[Any, Any]
    args: tuple[Any, ...]
    delay_ms: int | None = None

    def __call__(self) -> None:
        self.actor.send_with_options(args=self.args, delay=self.delay_ms)


Route = Callable[[Any], list[Send]]


def _on_queued(event: Execution.Queued) -> list[Send]:
    """Every run gets its timeout guard; queued (not inline) runs get their n8n call."""
    execution_id = str(event.originator_id)
    sends = [Send(execution_actors.expire, (execution_id,), event.timeout_seconds * 1000)]
    if not event.inline:
        sends.append(Send(execution_actors.call_n8n, (execution_id,)))
    return sends


def _on_event_received(event: AutomationEvent.Received) -> list[Send]:
    """An automation event that matched workflows: queue their runs."""
    if not (event.trigger_workflows and event.matched):
        return []
    return [Send(automation_event_actors.trigger_workflows, (str(event.originator_id),))]


ROUTES: dict[type, Route] = {
    Execution.Queued: _on_queued,
    AutomationEvent.Received: _on_event_received,
}


def _webhooks(event: Any) -> list[Send]:
    """Outgoing webhooks: `fan_out` reads the event back and finds the endpoints."""
    ids = (str(event_id(event)), str(event.originator_id), event.originator_version)
    return [Send(webhooks.fan_out, ids)]


def _also(first: Route | None, then: Route) -> Route:
    """Both routes' messages, so webhook routes never replace another route of a class."""
    if first is None:
        return then
    return lambda event: [*first(event), *then(event)]


for _event_class in webhook_events.ROUTED:
    ROUTES[_event_class] = _also(ROUTES.get(_event_class), _webhooks)


def sends_for(item: Item) -> list[Send]:
    route = ROUTES.get(type(item.event))
    return route(item.event) if route else []


def dispatcher(app: Flowledger) -> Follower:
    """A follower that sends each routed event's messages, then records its position."""
    topics = frozenset(topic_of(c) for c in ROUTES)

    def handle(items: list[Item], last: int) -> None:
        for item in items:
            for send in sends_for(item):
                send()
        failpoints.hit("dispatcher.after_send")  # crash tests: sent, not yet tracked
        with app.db.transaction() as cur:
            record_position(cur, NAME, last)
        if items:
            log.debug("dispatcher.sent", events=len(items), position=last)

    return Follower(app, NAME, handle, topics=topics)
