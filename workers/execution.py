"""Running executions: start (debit), call n8n, record the outcome (refund on failure).

`call_n8n` is the actor for queued executions; `run_inline` does the same work in the
calling thread for the API's synchronous `/execute` (one queue hop fewer); `expire` turns
a run still unfinished at its deadline into `timed_out`. Every step is safe to run twice:
the execution's state says what is already done.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from uuid import UUID

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from commands.execution import (
    finish_execution,
    finish_on,
    record_attempt_on,
    start_execution,
    start_executions,
)
from commands.organization import client_secret
from events.application import Flowledger
from events.errors import NotFound
from events.execution import Execution
from events.organization import Organization
from flowledger.combining import Combiner, Outcome
from workers import context, n8n

log = structlog.get_logger()
QUEUE = "executions"


def _deadline(execution: Execution) -> float:
    queued = execution.created_on.timestamp()
    return queued + execution.timeout_seconds


def _backoff_seconds(execution: Execution, attempt: int) -> float:
    """Exponential backoff with jitter: base, 2 x base, 4 x base ... (±20 %)."""
    base = float(execution.retry.get("backoff_seconds", 2))
    return base * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)


def attempt(app: Flowledger, execution: Execution) -> tuple[Execution, float | None]:
    """One call to n8n and its record. Returns the execution and, if n8n should be
    tried again, the delay before the next attempt.

    The record is made on the run in hand (no second load, no copy: the runs the starts
    and the API's inline queueing hand over are their callers' own objects, not cached ones)
    and saved in the process's group commit (`finish_on`, `record_attempt_on`), with the
    other threads' records: one transaction for several runs under load.
    """
    remaining = _deadline(execution) - time.time()
    if remaining <= 0:
        return finish_execution(app, execution.id, "timed_out"), None
    org = app.current(execution.organization_id, Organization)  # read only: not copied
    if org is None:
        raise NotFound("organization not found")
    number = execution.attempts + 1
    answer = n8n.call(execution, app.settings, client_secret(app, org), timeout=min(remaining, 600))
    log.info(
        "n8n.answered",
        execution_id=str(execution.id),
        attempt=number,
        outcome=answer.outcome,
        status_code=answer.status_code,
        duration_ms=answer.duration_ms,
    )
    record = (number, answer.outcome, answer.status_code)
    if answer.outcome == "answered":
        if execution.response_mode == "sync":
            done = finish_on(app, execution, "completed", output=answer.output, attempt=record)
            return done, None
        note = f"n8n accepted the run (HTTP {answer.status_code}); waiting for its callback"
        return record_attempt_on(app, execution, *record, note), None
    retries_left = int(execution.retry.get("max_retries", 0)) - (number - 1)
    if answer.outcome == "retryable" and retries_left > 0:
        note = f"n8n attempt {number} failed ({answer.status_code or answer.text[:200]}); retrying"
        recorded = record_attempt_on(app, execution, *record, note)
        return recorded, _backoff_seconds(execution, number)
    if answer.outcome == "retryable" and time.time() >= _deadline(execution):
        return finish_on(app, execution, "timed_out", attempt=record), None
    failed = finish_on(app, execution, "failed", error=answer.error, attempt=record)
    return failed, None


def _needs_call(execution: Execution, runner: str) -> bool:
    """Running, owned by this runner, and not yet handed over to n8n.

    A duplicate message (the dispatcher re-sends after a crash) is not the owner and does
    nothing; the owner's own message, redelivered after a worker crash, calls again.
    """
    return (
        execution.status == "running"
        and execution.runner == runner
        and not (execution.response_mode == "callback" and execution.handed_over)
    )


def _start_batch(runs: list[tuple[UUID, str]]) -> Sequence[Outcome[Execution]]:
    """The starts of the worker threads that asked at the same time, in one save; if that
    fails, each on its own (so only a run that cannot start sees an error)."""
    app = context.app()
    try:
        return start_executions(app, runs)
    except Exception:
        if len(runs) == 1:
            raise
        return [_start_alone(app, run) for run in runs]


def _start_alone(app: Flowledger, run: tuple[UUID, str]) -> Outcome[Execution]:
    try:
        return start_execution(app, *run)
    except Exception as e:
        return e


#: The process's starts: concurrent `call_n8n` threads debit and start their runs together,
#: one account load and one transaction per batch instead of one each, taking turns on the
#: account (the one hot aggregate every run of an organization changes).
_starts: Combiner[tuple[UUID, str], Execution] = Combiner(_start_batch, max_batch=32)


@dramatiq.actor(queue_name=QUEUE, max_retries=20)
def call_n8n(execution_id: str, runner: str | None = None) -> None:
    """Start a queued run and make one attempt; a retry is a delayed message to itself."""
    app = context.app()
    message = CurrentMessage.get_current_message()
    runner = runner or (message.message_id if message else execution_id)
    execution = _starts((UUID(execution_id), runner))
    if not _needs_call(execution, runner):
        return
    execution, retry_in = attempt(app, execution)
    if retry_in is not None:
        call_n8n.send_with_options(args=(execution_id, runner), delay=int(retry_in * 1000))


@dramatiq.actor(queue_name=QUEUE, max_retries=20)
def expire(execution_id: str) -> None:
    """Sent with a delay of the run's timeout: time it out unless it finished."""
    app = context.app()
    execution = app.load(UUID(execution_id), Execution, "execution")
    if execution.is_terminal:
        return
    if time.time() < _deadline(execution):  # timeout_override or clock skew: not yet
        delay = int((_deadline(execution) - time.time()) * 1000) + 10
        expire.send_with_options(args=(execution_id,), delay=delay)
        return
    finish_execution(app, execution.id, "timed_out")
    log.info("execution.timed_out", execution_id=execution_id)


def run_inline(app: Flowledger, execution: Execution) -> Execution:
    """The API's synchronous path: attempts (with backoff sleeps) in this thread, on the
    run this thread just recorded (not loaded again: one query fewer per `/execute`)."""
    execution_id = execution.id
    while _needs_call(execution, "inline"):
        execution, retry_in = attempt(app, execution)
        if retry_in is None:
            break
        time.sleep(min(retry_in, max(0.0, _deadline(execution) - time.time())))
        execution = app.load(execution_id, Execution, "execution")
    return execution
