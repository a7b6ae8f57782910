"""Queueing, starting (with the debit), finishing (with the refund) and cancelling runs.

The debit is saved together with `Started`, and the refund together with the terminal
event, in one `save` each: the execution's version guards both, so a run is debited and
refunded at most once however often a worker retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from uuid import UUID

from eventsourcing.persistence import IntegrityError, RecordConflictError
from jsonschema import Draft202012Validator
from pydantic import Field

from commands.base import Command, retry_on_conflict, serialised, serialised_all
from commands.credits import account_of
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.errors import Conflict, ExecutionFinished, InvalidInput, NotFound
from events.execution import Execution
from events.ids import credit_account_id
from events.workflow import Workflow

Status = Literal["running", "completed", "failed"]


class ExecuteWorkflow(Command):
    input: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    wait: bool = False
    timeout_override: int | None = Field(None, ge=1, le=600)


class Execute(Command):
    """`POST /execute`: the synchronous shape of the n8n gateway."""

    workflow_id: UUID
    data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout_override: int | None = Field(None, ge=1, le=600)


def target_url(workflow: Workflow) -> str:
    if workflow.definition.get("webhook_url"):
        return str(workflow.definition["webhook_url"])
    raise InvalidInput("the workflow's n8n connection is unknown", field="n8n_connection_id")


def _check_input(workflow: Workflow, data: dict[str, Any]) -> None:
    schema = workflow.definition.get("input_schema")
    if not schema:
        return
    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        fields = [
            {"field": ".".join(["input", *map(str, e.path)]), "message": e.message} for e in errors
        ]
        raise InvalidInput("input does not match the workflow's input_schema", fields=fields)


@retry_on_conflict()
def queue_execution(
    app: Flowledger,
    org_id: UUID,
    tenant_id: str,
    workflow_id: UUID,
    cmd: ExecuteWorkflow,
    *,
    trigger: str = "api",
    inline: bool = False,
    retry_of: UUID | None = None,
    key: str | None = None,
    cached: bool = False,
) -> Execution:
    """Record a new run. `inline` runs start at once (debit in the same save).

    With a `key` the run's id is derived from it: queueing the same key again returns the
    run already recorded (a redelivered message, a second scheduler) and records nothing.
    `cached=True` (API requests) reads the workflow with `Flowledger.cached`; an actor that
    follows the log reads it as of now, with a query.
    """
    if key is not None:
        existing = app.find(Execution.create_id(key=key), Execution)
        if existing is not None:
            return existing
    read = app.cached if cached else app.current  # read only: never a copy
    workflow = app.owned(workflow_id, Workflow, org_id, "workflow", read=read)
    workflow.check_runnable()
    _check_input(workflow, cmd.input)
    price = int(workflow.definition["credits_per_execution"])
    _check_balance(app, org_id, price)
    execution = Execution(
        organization_id=org_id,
        workflow_id=workflow.id,
        tenant_id=tenant_id,
        input=cmd.input,
        metadata=cmd.metadata,
        trigger=trigger,
        credits=price,
        timeout_seconds=cmd.timeout_override or int(workflow.definition["timeout_seconds"]),
        retry=dict(workflow.definition["retry"]),
        response_mode=str(workflow.definition["response_mode"]),
        target_url=target_url(workflow),
        retry_of=retry_of,
        inline=inline,
        key=key,
    )
    try:
        if inline:
            with serialised(credit_account_id(org_id)):
                account = account_of(app, org_id)
                account.debit(price, execution.id)
                execution.start(debited=price, runner="inline")
                app.save_grouped(execution, account)  # the run stays the caller's own
        else:
            app.save_grouped(execution)  # with the other requests' runs, under load
    except IntegrityError:
        if key is None:
            raise
        existing = app.find(execution.id, Execution)
        if existing is None:
            raise  # the account's version lost a race: retry_on_conflict runs us again
        return existing
    return execution


#: How old the balance of the first, visible check may be (`Flowledger.recent`).
BALANCE_MAX_AGE_S = 0.1


def _check_balance(app: Flowledger, org_id: UUID, price: int) -> None:
    """The visible check (402 before anything is recorded); the debit is authoritative.

    It reads a balance at most `BALANCE_MAX_AGE_S` old, so most requests cost no query for
    it, and it reads the current balance before refusing: a top-up made through another
    process is never refused. A run let through on a stale balance is rejected by the debit.
    """
    account_id = credit_account_id(org_id)
    account = app.recent(account_id, CreditAccount, BALANCE_MAX_AGE_S)
    if account is not None and account.balance >= price:
        return
    account = app.current(account_id, CreditAccount)
    if account is None:
        raise NotFound("organization not found")
    account.check_can_spend(price)


def execution_of(app: Flowledger, org_id: UUID, execution_id: UUID) -> Execution:
    return app.owned(execution_id, Execution, org_id, "execution")


def start_execution(app: Flowledger, execution_id: UUID, runner: str) -> Execution:
    """Debit and mark running, owned by `runner`; a run past `queued` is returned untouched."""
    return start_executions(app, [(execution_id, runner)])[0]


@retry_on_conflict()
def start_executions(app: Flowledger, runs: Sequence[tuple[UUID, str]]) -> list[Execution]:
    """`start_execution` of several runs (each with its runner), in ONE save.

    The runs are read from their events in one query (a worker rarely holds them in its
    cache), each organization's account is loaded once and debited run after run (a run
    the balance cannot pay is rejected), and every start and debit is recorded in one
    transaction. A lost race (another process changed an account or a run) starts them all
    again from the store. The objects returned are the caller's own (not cached).
    """
    found = app.read_many([execution_id for execution_id, _ in runs], Execution)
    missing = [str(i) for i, _ in runs if i not in found]
    if missing:
        raise NotFound("execution not found", execution_id=missing[0])
    queued = [found[i] for i in dict.fromkeys(i for i, _ in runs) if found[i].status == "queued"]
    if not queued:
        return [found[i] for i, _ in runs]
    orgs = list(dict.fromkeys(e.organization_id for e in queued))
    with serialised_all(credit_account_id(org) for org in orgs):
        accounts = {org: account_of(app, org) for org in orgs}
        for execution_id, runner in runs:
            execution = found[execution_id]
            if execution.status != "queued":  # started already, or twice in this batch
                continue
            account = accounts[execution.organization_id]
            if account.balance < execution.credits:
                execution.reject(execution.credits, credits_available=account.balance)
                continue
            account.debit(execution.credits, execution.id)
            execution.start(debited=execution.credits, runner=runner)
        app.save_grouped(*queued, *accounts.values())
    return [found[i] for i, _ in runs]


@retry_on_conflict()
def record_attempt(
    app: Flowledger,
    execution_id: UUID,
    attempt: int,
    outcome: str,
    status_code: int | None,
    note: str,
) -> Execution:
    execution = app.load(execution_id, Execution, "execution")
    return _record_attempt(app, execution, attempt, outcome, status_code, note)


def record_attempt_on(
    app: Flowledger,
    execution: Execution,
    attempt: int,
    outcome: str,
    status_code: int | None,
    note: str,
) -> Execution:
    """`record_attempt` on the run the caller holds and owns (no second load); if the run
    changed meanwhile, `record_attempt` does it on the current run."""
    try:
        return _record_attempt(app, execution, attempt, outcome, status_code, note)
    except RecordConflictError:
        return record_attempt(app, execution.id, attempt, outcome, status_code, note)


def _record_attempt(
    app: Flowledger,
    execution: Execution,
    attempt: int,
    outcome: str,
    status_code: int | None,
    note: str,
) -> Execution:
    if not execution.is_terminal:
        execution.record_attempt(attempt, outcome, status_code)
        execution.log("warning" if outcome == "retryable" else "info", note)
        app.save_grouped(execution)
    return execution


@retry_on_conflict()
def finish_execution(
    app: Flowledger,
    execution_id: UUID,
    status: str,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
    duration_ms: int | None = None,
    attempt: tuple[int, str, int | None] | None = None,
) -> Execution:
    """Move to a terminal state and refund in the same save when the run did not complete.

    The same terminal status again changes nothing; another one raises ExecutionFinished.
    """
    execution = app.load(execution_id, Execution, "execution")
    return _finish(app, execution, status, output, error, duration_ms, attempt)


def finish_on(
    app: Flowledger,
    execution: Execution,
    status: str,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
    duration_ms: int | None = None,
    attempt: tuple[int, str, int | None] | None = None,
) -> Execution:
    """`finish_execution` on the run the caller holds and owns (the worker that just
    started it: no second load); if the run changed meanwhile, `finish_execution` does it
    on the current run."""
    try:
        return _finish(app, execution, status, output, error, duration_ms, attempt)
    except RecordConflictError:
        return finish_execution(
            app, execution.id, status, output=output, error=error, duration_ms=duration_ms,
            attempt=attempt,
        )  # fmt: skip


def _finish(
    app: Flowledger,
    execution: Execution,
    status: str,
    output: Any,
    error: dict[str, Any] | None,
    duration_ms: int | None,
    attempt: tuple[int, str, int | None] | None,
) -> Execution:
    """The terminal event (and refund) on `execution`, changed in place: a copy or a fresh
    read, never the cache's object. Saved in the process's group commit, which records
    events only, so the object stays the caller's."""
    execution_id = execution.id
    if execution.is_terminal:
        if execution.status == status:
            return execution
        raise ExecutionFinished(
            f"execution is already {execution.status}", execution_id=str(execution_id)
        )
    if attempt is not None:
        execution.record_attempt(*attempt)
    if status == "completed":
        if execution.status != "running":
            raise Conflict("execution has not started", execution_id=str(execution_id))
        execution.complete(output, duration_ms)
    elif status == "failed":
        execution.fail(error or {"code": "FAILED"}, duration_ms)
    elif status == "timed_out":
        execution.time_out()
    elif status == "cancelled":
        execution.cancel()
    else:
        raise ValueError(f"not a terminal status: {status}")
    refund = execution.refund_due
    if not refund:
        app.save_grouped(execution)
        return execution
    with serialised(credit_account_id(execution.organization_id)):
        account = account_of(app, execution.organization_id)
        account.refund(refund, execution.id)
        app.save_grouped(execution, account)
    return execution


class RecordExecutionStatus(Command):
    """What n8n reports on `/internal/update-status`."""

    execution_id: UUID
    status: Status
    data: Any = None
    error: Any = None
    execution_time_ms: int | None = Field(None, ge=0)


def record_execution_status(app: Flowledger, cmd: RecordExecutionStatus) -> Execution:
    execution = app.load(cmd.execution_id, Execution, "execution")
    if cmd.status == "running":
        if execution.is_terminal:
            raise ExecutionFinished(f"execution is already {execution.status}")
        return execution
    error = None
    if cmd.status == "failed":
        error = {"code": "N8N_ERROR", "details": cmd.error if cmd.error is not None else cmd.data}
    return finish_execution(
        app,
        cmd.execution_id,
        cmd.status,
        output=cmd.data,
        error=error,
        duration_ms=cmd.execution_time_ms,
    )


class LogExecutionError(Command):
    execution_id: UUID
    error_type: str = Field(min_length=1, max_length=200)
    error_message: str = Field(max_length=10_000)
    stack_trace: str | None = Field(None, max_length=100_000)


def log_execution_error(app: Flowledger, cmd: LogExecutionError) -> Execution:
    execution = app.load(cmd.execution_id, Execution, "execution")
    if execution.is_terminal:
        return execution
    error = {"code": "N8N_ERROR", "type": cmd.error_type, "message": cmd.error_message}
    if cmd.stack_trace:
        error["stack_trace"] = cmd.stack_trace[:4096]
    return finish_execution(app, cmd.execution_id, "failed", error=error)


def cancel_execution(app: Flowledger, org_id: UUID, execution_id: UUID) -> Execution:
    execution_of(app, org_id, execution_id).check_not_finished()
    return finish_execution(app, execution_id, "cancelled")


def retry_execution(app: Flowledger, org_id: UUID, execution_id: UUID) -> Execution:
    previous = execution_of(app, org_id, execution_id)
    cmd = ExecuteWorkflow(input=previous.input, metadata=previous.metadata)
    return queue_execution(
        app,
        org_id,
        previous.tenant_id,
        previous.workflow_id,
        cmd,
        trigger="retry",
        retry_of=previous.id,
    )
