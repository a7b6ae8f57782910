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

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from events.application import Flowledger

log = structlog.get_logger()
#: At most this many threads' events in one transaction.
MAX_BATCH = 64


class _Slot:
    """One thread's events, and how their save went."""

    __slots__ = ("error", "events", "lead", "woken")

    def __init__(self, events: Sequence[Any]) -> None:
        self.events = events
        self.error: BaseException | None = None
        self.lead = False  # woken to save the next batch, not because its save is done
        self.woken = threading.Event()


class GroupSave:
    """`save(aggregate)` from many threads; one `app.save` per batch of them."""

    def __init__(self, app: Flowledger, max_batch: int = MAX_BATCH, linger: float = 0.0) -> None:
        self.app = app
        self.max_batch = max_batch
        self.linger = linger
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._leading = False  # a thread is saving a batch; the others queue behind it
        self.transactions = 0  # batches saved (for tests and benchmarks)

    def queued(self) -> int:
        """Saves waiting for the one in flight."""
        with self._lock:
            return len(self._waiting)

    def __call__(self, *aggregates: Any) -> None:
        self.save(*aggregates)

    def save(self, *aggregates: Any) -> None:
        """Save the aggregates' pending events (with other threads'); raise as `app.save`."""
        slot = _Slot([e for aggregate in aggregates for e in aggregate.collect_events()])
        if not slot.events:
            return
        with self._lock:
            self._waiting.append(slot)
            lead = not self._leading
            self._leading = True
        if not lead:
            slot.woken.wait()
            lead = slot.lead
        if lead:
            self._lead()
        if slot.error is not None:
            raise slot.error

    def _lead(self) -> None:
        """Save the waiting slots (this thread's first), then pass the lead on."""
        if self.linger and len(self._waiting) < self.max_batch:
            time.sleep(self.linger)  # let the threads about to save join this batch
        with self._lock:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        try:
            self._save(batch)
        finally:
            with self._lock:
                if self._waiting:
                    after = self._waiting[0]
                    after.lead = True
                    after.woken.set()
                else:
                    self._leading = False
            for slot in batch:
                slot.woken.set()

    def _save(self, batch: list[_Slot]) -> None:
        self.transactions += 1
        if len(batch) == 1:
            self._save_one(batch[0])
            return
        try:
            self.app.save(*(event for slot in batch for event in slot.events))
        except Exception as e:  # one of them conflicted, most likely: each on its own
            log.debug("group_save.split", slots=len(batch), error=type(e).__name__)
            for slot in batch:
                self._save_one(slot)

    def _save_one(self, slot: _Slot) -> None:
        try:
            self.app.save(*slot.events)
        except Exception as e:
            slot.error = e
