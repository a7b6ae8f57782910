"""The safety net under the queue: re-send what an unfinished run is waiting for.

Redis may lose messages (it keeps nothing on disk here; the embedded broker lives in
memory), so the dispatcher sweeps now and then: a run still `queued` a while after it was
queued gets its `call_n8n` again, and a run past its deadline gets its `expire`. Both
actors are idempotent and a duplicate `call_n8n` never calls n8n twice, so a sweep that
finds nothing wrong changes nothing.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import structlog

from events.application import Flowledger
from projections.executions import unfinished
from projections.formats import iso
from workers.execution import call_n8n, expire
from workers.webhooks import sweep_deliveries

log = structlog.get_logger()
QUEUED_GRACE = timedelta(seconds=30)
DEADLINE_GRACE = timedelta(seconds=10)


def sweep(app: Flowledger, now: datetime | None = None) -> list[str]:
    """Re-send for overdue runs; returns the ids of the runs it sent a message for."""
    now = now or datetime.now(UTC)
    sent: list[str] = []
    for row in unfinished(app.db, queued_before=iso(now - QUEUED_GRACE)):
        queued_at = datetime.fromisoformat(row["queued_at"].replace("Z", "+00:00"))
        deadline = queued_at + timedelta(seconds=row["timeout_seconds"] or 0)
        if now > deadline + DEADLINE_GRACE:
            expire.send(row["id"])
            sent.append(row["id"])
        elif row["status"] == "queued":
            call_n8n.send(row["id"])
            sent.append(row["id"])
    if sent:
        log.warning("recovery.resent", messages=len(sent))
    return sent


def run_sweeps(app: Flowledger, stopped: threading.Event, every: float = 30.0) -> threading.Thread:
    def loop() -> None:
        while not stopped.wait(every):
            try:
                sweep(app)
            except Exception:
                log.exception("recovery.failed")
            try:
                sweep_deliveries(app)
            except Exception:
                log.exception("recovery.webhooks_failed")

    thread = threading.Thread(target=loop, name="recovery", daemon=True)
    thread.start()
    return thread
