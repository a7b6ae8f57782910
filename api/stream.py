"""`GET /stream`: Server-Sent Events of the organization's webhook-type events as they happen.

The same feed as outgoing webhooks: the notification log, mapped to the contract's event
types by `workers.webhook_events` (one table for both). The stream follows the log from
where it was opened (or from `Last-Event-ID`, a notification id, to resume), waking on the
application's in-process condition and otherwise polling with a short backoff (the workers
of other processes write too). Each SSE message is `event: <type>`, `id: <position>` and
the delivery body as `data`; a comment line every 15 s keeps proxies from closing it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from uuid import UUID

import falcon
from eventsourcing.persistence import ConnectionPoolClosedError

from api.executions import sse
from events.application import Flowledger
from projections.runner import topic_of
from workers.webhook_events import MAPPERS, body, outgoing

if TYPE_CHECKING:
    from api.app import Deps

TOPICS = sorted(topic_of(c) for c in MAPPERS)
HEARTBEAT = 15.0
MAX_SECONDS = 3600.0  # clients reconnect with Last-Event-ID
MIN_PAUSE, MAX_PAUSE = 0.02, 0.5
BATCH = 500


def follow(app: Flowledger, org_id: UUID, tenant_id: str, start: int) -> Iterator[bytes]:
    """SSE messages of the organization's events after position `start`, as they come."""
    yield b": connected\n\n"
    position, pause = start, MIN_PAUSE
    deadline = time.monotonic() + MAX_SECONDS
    last_sent = time.monotonic()
    while time.monotonic() < deadline:
        try:
            top = app.recorder.max_notification_id() or 0
            notifications = (
                app.recorder.select_notifications(
                    start=position, limit=BATCH, stop=top, topics=TOPICS, inclusive_of_start=False
                )
                if top > position
                else []
            )
        except ConnectionPoolClosedError:  # the process is shutting down
            return
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            for item in outgoing(app, event):
                if item.organization_id == org_id:
                    last_sent = time.monotonic()
                    yield sse(item.type, body(item, tenant_id), notification.id)
        if time.monotonic() - last_sent > HEARTBEAT:
            last_sent = time.monotonic()
            yield b": keep-alive\n\n"
        if top > position:
            # A short filtered batch saw the log up to its top (ids commit in order).
            position = notifications[-1].id if len(notifications) == BATCH else top
            pause = MIN_PAUSE
            continue
        with app.saved:
            if app.last_saved_position <= position:
                app.saved.wait(pause)
        pause = min(pause * 2, MAX_PAUSE)


class Stream:
    auth = {"GET": "member"}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = req.context.principal
        resume = (req.get_header("Last-Event-ID") or "").strip()
        start = int(resume) if resume.isdigit() else self.deps.position()
        resp.content_type = "text/event-stream; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = follow(self.deps.app, who.org_id, who.tenant_id, start)


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route(f"{prefix}/stream", Stream(deps))
