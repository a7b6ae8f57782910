"""Group commit: the saves of concurrent threads, one transaction for all of them.

Each `Application.save` is a transaction of its own: a table lock, the insert, a `NOTIFY`
and a commit (a WAL flush), and every follower of the log (the dispatcher, each read model)
wakes up for the `NOTIFY` and reads the log. A webhook attempt saves one small event, so per
delivery these fixed costs were most of the work. Here a thread that saves while another
thread's save is in flight waits for it, and then the waiting threads' events go in the next
transaction together (the classic leader/follower group commit): no delay is added when the
process is idle, and batches grow with the load.

A save still returns only once its events are committed (or raises), so an actor acks its
message only after its outcome is in the log. When a batch fails (one aggregate lost an
optimistic-concurrency race, or anything else), each thread's events are saved again on
their own, so only the thread whose aggregate conflicted sees the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from flowledger.combining import Combiner, Outcome

if TYPE_CHECKING:
    from events.application import Flowledger

log = structlog.get_logger()
#: At most this many threads' events in one transaction.
MAX_BATCH = 64


class GroupSave:
    """`save(*aggregates)` from many threads; one `app.save` per batch of them (a
    `flowledger.combining.Combiner`). Only the events are saved: the aggregates stay the
    callers' own objects (the application's cache is not filled with them)."""

    def __init__(self, app: Flowledger, max_batch: int = MAX_BATCH, linger: float = 0.0) -> None:
        self.app = app
        self._combined: Combiner[Sequence[Any], None] = Combiner(
            self._save, max_batch=max_batch, linger=linger
        )

    @property
    def transactions(self) -> int:
        """Batches saved (for tests and benchmarks)."""
        return self._combined.batches

    def queued(self) -> int:
        """Saves waiting for the one in flight."""
        return self._combined.queued()

    def __call__(self, *aggregates: Any) -> None:
        self.save(*aggregates)

    def save(self, *aggregates: Any) -> None:
        """Save the aggregates' pending events (with other threads'); raise as `app.save`.

        Snapshots are taken as `app.save` takes them (at each event whose version is a
        multiple of the aggregate's snapshotting interval), once the events are committed:
        the library only does that for the aggregates it is given, and it is given events.
        """
        events: list[Any] = []
        snapshots: list[tuple[Any, int]] = []
        intervals = self.app.snapshotting_intervals or {}
        for aggregate in aggregates:
            pending = aggregate.collect_events()
            events += pending
            interval = intervals.get(type(aggregate))
            if interval:
                snapshots += [
                    (aggregate.id, e.originator_version)
                    for e in pending
                    if e.originator_version % interval == 0
                ]
        if not events:
            return
        self._combined(events)
        for aggregate_id, version in snapshots:
            try:
                self.app.take_snapshot(aggregate_id, version)
            except Exception as e:  # the events are saved; a snapshot only speeds up loads
                log.warning("group_save.snapshot_failed", aggregate_id=str(aggregate_id),
                            version=version, error=f"{type(e).__name__}: {e}")  # fmt: skip

    def _save(self, batch: list[Sequence[Any]]) -> list[Outcome[None]]:
        if len(batch) > 1:
            try:
                self.app.save(*(event for events in batch for event in events))
                return [None] * len(batch)
            except Exception as e:  # one of them conflicted, most likely: each on its own
                log.debug("group_save.split", slots=len(batch), error=type(e).__name__)
        return [self._save_one(events) for events in batch]

    def _save_one(self, events: Sequence[Any]) -> Outcome[None]:
        try:
            self.app.save(*events)
        except Exception as e:
            return e
        return None
