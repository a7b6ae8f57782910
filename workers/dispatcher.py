"""Event → Dramatiq messages. The routing table says which actors react to which events.

The dispatcher follows the log from its tracked position and records the position only
after the messages of a batch are sent: a crash re-sends, never loses. Every actor is
therefore idempotent (its aggregate's state says what is already done).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog
from dramatiq.message import Message

from events.application import Flowledger
from events.automation_event import AutomationEvent
from events.execution import Execution
from flowledger import failpoints
from projections.runner import RECORD_POSITION, Follower, Item, topic_of
from workers import automation_events as automation_event_actors
from workers import execution as execution_actors
from workers import webhook_events, webhooks
from workers.broker import enqueue_many
from workers.subscribers import TOPICS as REGISTRY_TOPICS
from workers.subscribers import Subscribers

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

    def message(self) -> tuple[Message[Any], int | None]:
        """The message and its delay, for `enqueue_many`."""
        return self.actor.message_with_options(args=self.args), self.delay_ms


Route = Callable[[Any], list[Send]]


def _on_queued(event: Execution.Queued) -> list[Send]:
    """Queued (not inline) runs get their n8n call; runs nobody else watches over get a
    timeout guard (`expire`, delayed by the run's timeout).

    A queued sync-mode run needs no guard: its `call_n8n` message holds it until it ends
    (redelivered if its worker dies), the call waits at most the time left, and a run found
    past its deadline is timed out there. The guard is for the runs that wait for someone
    else: a callback from n8n, or the API process running it inline. (The recovery sweep
    backs both up when Redis loses a message.)
    """
    execution_id = str(event.originator_id)
    sends = []
    if event.inline or event.response_mode != "sync":
        sends.append(Send(execution_actors.expire, (execution_id,), event.timeout_seconds * 1000))
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


#: The domain events that may become outgoing webhooks (`workers.webhooks.fan_out_many`).
WEBHOOK_EVENTS = frozenset(webhook_events.ROUTED)


def sends_for(items: Sequence[Item], subscribers: Subscribers | None = None) -> list[Send]:
    """The messages of a batch of the log: each routed event's own, in log order, then its
    webhook events' fan-out, up to `FAN_OUT_BATCH` events per message; with `subscribers`,
    only of the organizations that may have an endpoint."""
    sends: list[Send] = []
    fanned: list[list[Any]] = []
    for item in items:
        event = item.event
        if subscribers is not None:
            subscribers.read(event)
        route = ROUTES.get(type(event))
        if route is not None:
            sends += route(event)
        if type(event) in WEBHOOK_EVENTS and (subscribers is None or subscribers.wanted(event)):
            fanned.append([str(event.originator_id), event.originator_version])
    batch = webhooks.FAN_OUT_BATCH
    for start in range(0, len(fanned), batch):
        sends.append(Send(webhooks.fan_out_many, (fanned[start : start + batch],)))
    return sends


#: The dispatcher records its position at most this often while busy, and whenever it
#: has caught up: a crash re-sends at most this long of the log (every actor is idempotent).
RECORD_EVERY_S = 0.1


class _Position:
    """The dispatcher's tracking row, written lazily (`RECORD_EVERY_S`, and when idle)."""

    def __init__(self, app: Flowledger) -> None:
        self.app = app
        self.sent = -1  # the position whose messages are sent
        self.written = -1  # the position in the tracking row
        self.written_at = 0.0

    def sent_up_to(self, last: int) -> None:
        self.sent = last
        if time.monotonic() - self.written_at >= RECORD_EVERY_S:
            self.write()

    def write(self) -> None:
        """Record what was sent, if not yet (one statement, autocommitted)."""
        if self.sent > self.written:
            self.app.db.query(RECORD_POSITION, (NAME, self.sent))
            self.written, self.written_at = self.sent, time.monotonic()


def dispatcher(app: Flowledger) -> Follower:
    """A follower that sends each routed event's messages (one round trip per batch on
    Redis), then records its position."""
    topics = frozenset(topic_of(c) for c in (*ROUTES, *WEBHOOK_EVENTS)) | REGISTRY_TOPICS
    subscribers = Subscribers(app)
    tracked = _Position(app)

    def handle(items: list[Item], last: int) -> None:
        sends = sends_for(items, subscribers)
        if sends:
            enqueue_many(sends[0].actor.broker, [send.message() for send in sends])
        failpoints.hit("dispatcher.after_send")  # crash tests: sent, not yet tracked
        tracked.sent_up_to(last)
        if items:
            log.debug("dispatcher.sent", events=len(items), position=last)

    # Most of the log is routed (a run's queued, started, debited and finished events), so
    # the whole log is read and the rest dropped here: no query for the log's top per batch.
    pace = app.settings.dispatch_pace_ms / 1000
    return Follower(
        app, NAME, handle, topics=topics, pace=pace, filter_in_sql=False, idle=tracked.write
    )
