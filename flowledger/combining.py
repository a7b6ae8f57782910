"""Combining concurrent calls: many threads' requests, one batch processed by one of them.

The classic leader/follower group commit, for any batch operation: a thread that calls while
another thread's batch is in flight waits for it, and then the waiting threads' requests go
in the next batch together. No delay is added when the process is idle (a lone call is a
batch of one, processed at once by its own thread) and batches grow with the load. Each
call returns its own request's result or raises its own request's error.

`events.group_save.GroupSave` (one transaction for several threads' saves) and the worker's
batched starts of executions (`workers.execution`) are built on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: What a batch function gives back for each request: its result, or the error to raise.
Outcome: TypeAlias = R | BaseException


class _Slot(Generic[T, R]):
    """One thread's request, and its outcome."""

    __slots__ = ("done", "lead", "outcome", "request", "woken")

    def __init__(self, request: T) -> None:
        self.request = request
        self.outcome: R | BaseException | None = None
        self.done = False
        self.lead = False  # woken to process the next batch, not because its own is done
        self.woken = threading.Event()


class Combiner(Generic[T, R]):
    """`combiner(request)` from many threads; `process(requests)` once per batch of them.

    `process` gets the requests in arrival order and returns one outcome per request, in
    the same order (a result, or an exception instance for that request alone); if it
    raises, every request of the batch gets that error. `linger` (s) is how long a leader
    waits for more requests before it processes a batch that is not full.
    """

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[Outcome[R]]],
        max_batch: int = 64,
        linger: float = 0.0,
    ) -> None:
        self.process = process
        self.max_batch = max_batch
        self.linger = linger
        self._lock = threading.Lock()
        self._waiting: list[_Slot[T, R]] = []
        self._leading = False  # a thread is processing a batch; the others queue behind it
        self.batches = 0  # batches processed (for tests and benchmarks)

    def queued(self) -> int:
        """Requests waiting for the batch in flight."""
        with self._lock:
            return len(self._waiting)

    def __call__(self, request: T) -> R:
        slot: _Slot[T, R] = _Slot(request)
        with self._lock:
            self._waiting.append(slot)
            lead = not self._leading
            self._leading = True
        if not lead:
            slot.woken.wait()
            lead = slot.lead
        if lead:
            self._lead()
        assert slot.done
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]

    def _lead(self) -> None:
        """Process the waiting requests (this thread's first), then pass the lead on."""
        if self.linger and len(self._waiting) < self.max_batch:
            time.sleep(self.linger)  # let the threads about to call join this batch
        with self._lock:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        try:
            self.batches += 1
            try:
                outcomes: Sequence[Outcome[R]] = list(self.process([s.request for s in batch]))
            except BaseException as e:
                outcomes = [e] * len(batch)
            if len(outcomes) != len(batch):
                error = RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} requests")
                outcomes = [error] * len(batch)
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome, slot.done = outcome, True
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
