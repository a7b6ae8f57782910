"""The leader/follower combiner (`flowledger.combining.Combiner`), with real threads.

Proven: a lone call is processed at once, by its own thread, as a batch of one; the callers
that arrive while a batch is in flight go together in ONE next batch, in arrival order, and
each gets its own result; an exception instance returned for one request is raised in that
caller only; a `process` that raises, or that returns the wrong number of outcomes, gives
every caller of that batch an error; `max_batch` splits the waiting callers into several
batches; a failed batch leaves the combiner working. To hold a batch in flight, `process`
waits on an event for its first batch; the next callers are started one at a time, each
once the one before it is seen queued, so their arrival order is known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from flowledger.combining import Combiner, Outcome
from tests.support.waiting import until

JOIN_TIMEOUT = 10.0


class Held:
    """A batch function whose first batch waits for `release()`; it records every batch
    (and the thread that processed it) and answers through `answer`."""

    def __init__(self, answer: Callable[[list[int]], Sequence[Outcome[str]]] | None = None):
        self.gate = threading.Event()
        self.entered = threading.Event()  # the first batch is in flight
        self.batches: list[list[int]] = []
        self.threads: list[str] = []
        self.answer = answer or (lambda batch: [f"done {r}" for r in batch])

    def __call__(self, batch: list[int]) -> Sequence[Outcome[str]]:
        self.batches.append(list(batch))
        self.threads.append(threading.current_thread().name)
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(timeout=JOIN_TIMEOUT), "the test never released the batch"
        return self.answer(batch)

    def release(self) -> None:
        self.gate.set()


class Caller(threading.Thread):
    """One thread's call of the combiner; keeps what it returned or raised."""

    def __init__(self, combiner: Combiner[int, str], request: int) -> None:
        super().__init__(name=f"caller-{request}", daemon=True)
        self.combiner = combiner
        self.request = request
        self.result: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.combiner(self.request)
        except BaseException as e:
            self.error = e


def first_in_flight(combiner: Combiner[int, str], held: Held) -> Caller:
    """Request 0, whose batch is held in flight until `held.release()`."""
    first = Caller(combiner, 0)
    first.start()
    assert held.entered.wait(timeout=JOIN_TIMEOUT)
    return first


def queue_behind(combiner: Combiner[int, str], requests: Sequence[int]) -> list[Caller]:
    """Callers started one after the other, each seen waiting before the next starts."""
    callers = []
    for n, request in enumerate(requests, start=1):
        caller = Caller(combiner, request)
        caller.start()
        until(lambda n=n: combiner.queued() == n, timeout=JOIN_TIMEOUT, what=f"{n} queued")
        callers.append(caller)
    return callers


def finish(*callers: Caller) -> None:
    for caller in callers:
        caller.join(timeout=JOIN_TIMEOUT)
        assert not caller.is_alive(), f"{caller.name} is still waiting"


def test_a_lone_call_is_processed_at_once_by_its_own_thread_as_a_batch_of_one() -> None:
    held = Held()
    held.release()
    combiner: Combiner[int, str] = Combiner(held)
    assert combiner(7) == "done 7"
    assert held.batches == [[7]]
    assert held.threads == [threading.current_thread().name]
    assert combiner.batches == 1 and combiner.queued() == 0


def test_callers_queued_behind_a_batch_go_in_one_next_batch_in_arrival_order() -> None:
    held = Held()
    combiner: Combiner[int, str] = Combiner(held)
    first = first_in_flight(combiner, held)
    waiting = queue_behind(combiner, [3, 1, 2])
    held.release()
    finish(first, *waiting)
    assert held.batches == [[0], [3, 1, 2]]
    assert first.result == "done 0"
    assert [c.result for c in waiting] == ["done 3", "done 1", "done 2"]
    assert all(c.error is None for c in (first, *waiting))
    assert held.threads[1] == "caller-3"  # the first to arrive leads the next batch
    assert combiner.batches == 2 and combiner.queued() == 0


def test_an_exception_returned_for_one_request_is_raised_in_that_caller_only() -> None:
    refused = ValueError("request 2 is refused")

    def answer(batch: list[int]) -> list[Outcome[str]]:
        return [refused if r == 2 else f"done {r}" for r in batch]

    held = Held(answer)
    combiner: Combiner[int, str] = Combiner(held)
    first = first_in_flight(combiner, held)
    one, two, three = queue_behind(combiner, [1, 2, 3])
    held.release()
    finish(first, one, two, three)
    assert held.batches == [[0], [1, 2, 3]]
    assert two.error is refused and two.result is None
    assert (one.result, three.result) == ("done 1", "done 3")
    assert one.error is None and three.error is None and first.error is None


def test_when_process_raises_every_caller_of_that_batch_gets_the_error() -> None:
    def answer(batch: list[int]) -> list[Outcome[str]]:
        if batch != [0]:
            raise RuntimeError("the batch failed")
        return ["done 0"]

    held = Held(answer)
    combiner: Combiner[int, str] = Combiner(held)
    first = first_in_flight(combiner, held)
    waiting = queue_behind(combiner, [1, 2, 3])
    held.release()
    finish(first, *waiting)
    assert first.result == "done 0" and first.error is None
    for caller in waiting:
        assert isinstance(caller.error, RuntimeError), caller.name
        assert str(caller.error) == "the batch failed"
        assert caller.result is None


def test_a_wrong_number_of_outcomes_gives_every_caller_of_the_batch_an_error() -> None:
    def answer(batch: list[int]) -> list[Outcome[str]]:
        return ["done 0"] if batch == [0] else ["only one"]

    held = Held(answer)
    combiner: Combiner[int, str] = Combiner(held)
    first = first_in_flight(combiner, held)
    waiting = queue_behind(combiner, [1, 2])
    held.release()
    finish(first, *waiting)
    assert first.result == "done 0"
    for caller in waiting:
        assert isinstance(caller.error, RuntimeError), caller.name
        assert "1 outcomes for 2 requests" in str(caller.error)
        assert caller.result is None


def test_max_batch_splits_the_waiting_callers_into_batches_in_arrival_order() -> None:
    held = Held()
    combiner: Combiner[int, str] = Combiner(held, max_batch=2)
    first = first_in_flight(combiner, held)
    waiting = queue_behind(combiner, [1, 2, 3, 4, 5])
    held.release()
    finish(first, *waiting)
    assert held.batches == [[0], [1, 2], [3, 4], [5]]
    assert [c.result for c in waiting] == [f"done {r}" for r in [1, 2, 3, 4, 5]]
    assert combiner.batches == 4 and combiner.queued() == 0


def test_after_a_failing_batch_the_combiner_keeps_working() -> None:
    failures = iter([True])  # the first batch fails, every later one succeeds

    def process(batch: list[int]) -> list[Outcome[str]]:
        if next(failures, False):
            raise OSError("the store is down")
        return [f"done {r}" for r in batch]

    combiner: Combiner[int, str] = Combiner(process)
    with pytest.raises(OSError, match="the store is down"):
        combiner(1)
    assert combiner(2) == "done 2"  # led by this thread at once: nothing is left leading

    held = Held()
    combiner.process = held  # and batches still combine after the failure
    first = first_in_flight(combiner, held)
    waiting = queue_behind(combiner, [3, 4])
    held.release()
    finish(first, *waiting)
    assert held.batches == [[0], [3, 4]]
    assert [c.result for c in waiting] == ["done 3", "done 4"]


def test_a_failing_followed_batch_hands_the_lead_on_to_the_callers_behind_it() -> None:
    calls: list[list[int]] = []
    gate, entered = threading.Event(), threading.Event()

    def process(batch: list[int]) -> list[Any]:
        calls.append(list(batch))
        if len(calls) == 1:
            entered.set()
            assert gate.wait(timeout=JOIN_TIMEOUT)
            raise RuntimeError("first batch failed")
        return [f"done {r}" for r in batch]

    combiner: Combiner[int, str] = Combiner(process)
    first = Caller(combiner, 0)
    first.start()
    assert entered.wait(timeout=JOIN_TIMEOUT)
    waiting = queue_behind(combiner, [1, 2])
    gate.set()
    finish(first, *waiting)
    assert isinstance(first.error, RuntimeError)
    assert calls == [[0], [1, 2]]
    assert [c.result for c in waiting] == ["done 1", "done 2"]
