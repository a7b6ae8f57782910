"""One run of a workflow: queued → running → completed | failed | timed_out | cancelled,
or rejected when the worker finds the balance short. Terminal states never change."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.errors import ExecutionFinished

TERMINAL = frozenset({"completed", "failed", "timed_out", "cancelled", "rejected"})
REFUNDED_ON = frozenset({"failed", "timed_out", "cancelled"})


class Execution(Aggregate):
    @event("Queued")
    def __init__(
        self,
        organization_id: UUID,
        workflow_id: UUID,
        tenant_id: str,
        input: dict[str, Any],
        metadata: dict[str, Any],
        trigger: str,
        credits: int,
        timeout_seconds: int,
        retry: dict[str, int],
        response_mode: str,
        target_url: str,
        retry_of: UUID | None = None,
        inline: bool = False,
    ) -> None:
        self.organization_id = organization_id
        self.workflow_id = workflow_id
        self.tenant_id = tenant_id
        self.input = input
        self.metadata = metadata
        self.trigger = trigger
        self.credits = credits
        self.timeout_seconds = timeout_seconds
        self.retry = retry
        self.response_mode = response_mode
        self.target_url = target_url
        self.retry_of = retry_of
        self.inline = inline  # run by the API process itself (`/execute`, `wait: true`)
        self.status = "queued"
        self.debited = 0
        self.attempts = 0
        self.handed_over = False  # callback mode: n8n accepted the run, its callback will finish it
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.duration_ms: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def check_not_finished(self) -> None:
        if self.is_terminal:
            raise ExecutionFinished(
                f"execution is already {self.status}", execution_id=str(self.id)
            )

    @event("Started")
    def start(self, debited: int) -> None:
        self.status = "running"
        self.debited = debited
        self.started_at = self.modified_on

    @event("AttemptMade")
    def record_attempt(self, attempt: int, outcome: str, status_code: int | None = None) -> None:
        """One call to n8n: `outcome` is answered, retryable or refused."""
        self.attempts = attempt
        if outcome == "answered" and self.response_mode == "callback":
            self.handed_over = True

    @event("Completed")
    def complete(self, output: Any, duration_ms: int | None = None) -> None:
        self._finish("completed", duration_ms)
        self.output = output

    @event("Failed")
    def fail(self, error: dict[str, Any], duration_ms: int | None = None) -> None:
        self._finish("failed", duration_ms)
        self.error = error

    @event("TimedOut")
    def time_out(self) -> None:
        self._finish("timed_out", None)
        self.error = {"code": "TIMEOUT", "message": f"not finished after {self.timeout_seconds}s"}

    @event("Cancelled")
    def cancel(self) -> None:
        self._finish("cancelled", None)

    @event("Rejected")
    def reject(self, credits_required: int, credits_available: int) -> None:
        self._finish("rejected", None)
        self.error = {
            "code": "INSUFFICIENT_CREDITS",
            "credits_required": credits_required,
            "credits_available": credits_available,
        }

    @event("Logged")
    def log(self, level: str, message: str) -> None:
        pass

    @property
    def refund_due(self) -> int:
        """What a finished execution gives back: everything, unless it completed."""
        return self.debited if self.status in REFUNDED_ON else 0

    def _finish(self, status: str, duration_ms: int | None) -> None:
        self.status = status
        self.finished_at = self.modified_on
        if duration_ms is None and self.started_at is not None:
            duration_ms = int((self.finished_at - self.started_at).total_seconds() * 1000)
        self.duration_ms = duration_ms
