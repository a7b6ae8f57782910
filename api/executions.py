"""Running workflows (`/workflows/{id}/execute`, `/execute`) and reading runs (`/executions`).

Async runs are queued (202) and started by the workers. Sync runs (`/execute`, or
`wait: true`) start inline (the debit is in the same save), call n8n in this thread through
`deps.run_inline`, then wait for a callback-mode run to finish, up to the run's timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

import falcon

from api import shapes
from api.errors import ApiError
from api.middleware import body, choice_param, page_params, timestamp_param
from commands.execution import (
    Execute,
    ExecuteWorkflow,
    cancel_execution,
    execution_of,
    queue_execution,
    retry_execution,
)
from events.credit_account import CreditAccount
from events.execution import STATUSES, Execution
from events.ids import credit_account_id
from projections.executions import get_execution, list_executions

if TYPE_CHECKING:
    from api.app import Deps
    from api.auth import Principal

STREAM_POLL = 0.05
HEARTBEAT = 15.0


def run_sync(deps: Deps, who: Principal, workflow_id: UUID, cmd: ExecuteWorkflow) -> dict[str, Any]:
    """Run to the end (or the timeout) and answer as `/execute` does."""
    app = deps.app
    execution = queue_execution(
        app, who.org_id, who.tenant_id, workflow_id, cmd, inline=True, cached=True
    )
    deadline = time.monotonic() + execution.timeout_seconds
    execution = until_terminal(deps, deps.run_inline(app, execution), deadline)
    account = app.current(credit_account_id(who.org_id), CreditAccount)  # read only
    return sync_answer(execution, account.balance if account is not None else 0)


def until_terminal(deps: Deps, execution: Execution, deadline: float) -> Execution:
    pause = 0.002
    while not execution.is_terminal and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)
        execution = deps.app.repository.get(execution.id)
    return execution


def sync_answer(execution: Execution, balance: int) -> dict[str, Any]:
    ref: dict[str, Any] = {"execution_id": str(execution.id)}
    error = execution.error or {}
    if execution.status == "completed":
        return shapes.completed(execution, balance)
    if execution.status == "failed":
        raise ApiError(
            502, "N8N_ERROR", "the n8n workflow answered with an error", **ref, error=error
        )
    if execution.status == "rejected":
        required, available = error.get("credits_required"), error.get("credits_available")
        message = f"Insufficient credits. Required: {required}, Available: {available}"
        raise ApiError(402, "INSUFFICIENT_CREDITS", message, credits_required=required,
                       credits_available=available, **ref)  # fmt: skip
    if execution.status == "cancelled":
        raise ApiError(409, "EXECUTION_FINISHED", "the execution was cancelled", **ref)
    seconds = execution.timeout_seconds
    raise ApiError(504, "GATEWAY_TIMEOUT", f"the workflow did not finish within {seconds}s", **ref)


def current(row: dict[str, Any] | None, execution: Execution) -> bool:
    """Whether the read model's row has caught up with the aggregate's state."""
    return row is not None and (row["status"], row["attempts"]) == (
        execution.status,
        execution.attempts,
    )


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def fresh(self, org_id: UUID, execution: Execution) -> dict[str, Any]:
        """The read model once it has seen our write, else the aggregate's shape."""
        if self.deps.settle("executions"):
            row = get_execution(self.deps.db, org_id, execution.id)
            if row is not None:
                return row
        return shapes.execution(execution)


class ExecuteWorkflowResource(Resource):
    auth = {"POST": "member"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, workflow_id: UUID) -> None:
        cmd, who = body(req, ExecuteWorkflow), req.context.principal
        if cmd.wait:
            resp.media = run_sync(self.deps, who, workflow_id, cmd)
            return
        execution = queue_execution(
            self.deps.app, who.org_id, who.tenant_id, workflow_id, cmd, cached=True
        )
        resp.status = falcon.HTTP_202
        resp.media = shapes.queued(execution)


class ExecuteResource(Resource):
    auth = {"POST": "member"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        cmd = body(req, Execute)
        run = ExecuteWorkflow(
            input=cmd.data, metadata=cmd.metadata, timeout_override=cmd.timeout_override
        )
        resp.media = run_sync(self.deps, req.context.principal, cmd.workflow_id, run)


class Collection(Resource):
    auth = {"GET": "member"}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, offset = page_params(req)
        status = choice_param(req, "status", STATUSES)
        filters: dict[str, Any] = {
            "workflow_id": req.get_param_as_uuid("workflow_id"),
            "status": status,
            "from_": timestamp_param(req, "from"),
            "to": timestamp_param(req, "to"),
        }
        org_id = req.context.principal.org_id
        items, total = list_executions(self.deps.db, org_id, **filters, limit=limit, offset=offset)
        resp.media = shapes.page(items, total, limit, offset)


class Item(Resource):
    auth = {"GET": "member"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, execution_id: UUID) -> None:
        org_id = req.context.principal.org_id
        execution = execution_of(self.deps.app, org_id, execution_id)
        row = get_execution(self.deps.db, org_id, execution_id)
        resp.media = row if current(row, execution) else self.fresh(org_id, execution)


class Cancel(Resource):
    auth = {"POST": "member"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, execution_id: UUID) -> None:
        org_id = req.context.principal.org_id
        resp.media = self.fresh(org_id, cancel_execution(self.deps.app, org_id, execution_id))


class Retry(Resource):
    auth = {"POST": "member"}

    def on_post(self, req: falcon.Request, resp: falcon.Response, execution_id: UUID) -> None:
        org_id = req.context.principal.org_id
        execution = retry_execution(self.deps.app, org_id, execution_id)
        resp.status = falcon.HTTP_202
        resp.media = {**self.fresh(org_id, execution), "execution_id": str(execution.id)}


class Stream(Resource):
    """Server-Sent Events: `event: execution` per change; closes after the terminal state."""

    auth = {"GET": "member"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, execution_id: UUID) -> None:
        org_id = req.context.principal.org_id
        execution = execution_of(self.deps.app, org_id, execution_id)
        resp.content_type = "text/event-stream; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = self.events(org_id, execution)

    def events(self, org_id: UUID, execution: Execution) -> Iterator[bytes]:
        seen, version = None, None
        deadline = time.monotonic() + min(execution.timeout_seconds + 60, 900)
        last_sent = time.monotonic()
        while time.monotonic() < deadline:
            if execution.version != version:
                version, document = execution.version, self.document(org_id, execution)
                if document != seen:
                    seen, last_sent = document, time.monotonic()
                    yield sse("execution", document, version)
                if execution.is_terminal:
                    return
            elif time.monotonic() - last_sent > HEARTBEAT:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
            time.sleep(STREAM_POLL)
            execution = self.deps.app.repository.get(execution.id)

    def document(self, org_id: UUID, execution: Execution) -> dict[str, Any]:
        document = self.fresh(org_id, execution)
        if document.get("status") != execution.status:  # the read model lags: say what is true
            document = {**document, **shapes.execution(execution), "logs": document.get("logs", [])}
        return document


def sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {event}\nid: {event_id}\ndata: {payload}\n\n".encode()


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    item = prefix + "/executions/{execution_id:uuid}"
    app.add_route(prefix + "/workflows/{workflow_id:uuid}/execute", ExecuteWorkflowResource(deps))
    app.add_route(f"{prefix}/execute", ExecuteResource(deps))
    app.add_route(f"{prefix}/executions", Collection(deps))
    app.add_route(item, Item(deps))
    app.add_route(f"{item}/cancel", Cancel(deps))
    app.add_route(f"{item}/retry", Retry(deps))
    app.add_route(f"{item}/stream", Stream(deps))
