"""One run of a workflow: queued → running → completed | failed | timed_out | cancelled,
or rejected when the worker finds the balance short. Terminal states never change."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from events.errors import ExecutionFinished
from events.ids import keyed_execution_id

TERMINAL = frozenset({"completed", "failed", "timed_out", "cancelled", "rejected"})
#: Every status an execution can have, in the order lists offer them as filters.
STATUSES = ("queued", "running", *sorted(TERMINAL))
REFUNDED_ON = frozenset({"failed", "timed_out", "cancelled"})


class Execution(Aggregate):
    @staticmethod
    def create_id(key: str | None = None, **_: Any) -> UUID:
        """With a `key` (an event and a workflow, a workflow and a schedule slot), the same
        run twice gets the same id, so the second save fails instead of running twice."""
        return keyed_execution_id(key) if key is not None else uuid4()

    class Queued(Aggregate.Created):
        organization_id: UUID
        workflow_id: UUID
        tenant_id: str
        input: dict[str, Any]
        metadata: dict[str, Any]
        trigger: str
        credits: int
        timeout_seconds: int
        retry: dict[str, int]
        response_mode: str
        target_url: str
        retry_of: UUID | None
        inline: bool
        key: str | None = None

    @event(Queued)
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
        key: str | None = None,
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
        self.key = key
        self.inline = inline  # run by the API process itself (`/execute`, `wait: true`)
        self.status = "queued"
        self.debited = 0
        self.runner: str | None = None
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

    class Started(Aggregate.Event):
        debited: int
        runner: str  # the message (or "inline") that owns the n8n call

        def apply(self, execution: Execution) -> None:
            execution.status = "running"
            execution.debited = self.debited
            execution.runner = self.runner
            execution.started_at = self.timestamp

    def start(self, debited: int, runner: str) -> None:
        self.trigger_event(self.Started, debited=debited, runner=runner)

    class AttemptMade(Aggregate.Event):
        attempt: int
        outcome: str
        status_code: int | None

    @event(AttemptMade)
    def record_attempt(self, attempt: int, outcome: str, status_code: int | None = None) -> None:
        """One call to n8n: `outcome` is answered, retryable or refused."""
        self.attempts = attempt
        if outcome == "answered" and self.response_mode == "callback":
            self.handed_over = True

    class Finished(Aggregate.Event):
        """A terminal event: its own timestamp is the finish time."""

        status: ClassVar[str]

        def apply(self, execution: Execution) -> None:
            execution.status = self.status
            execution.finished_at = self.timestamp
            reported = getattr(self, "duration_ms", None)
            if reported is None and execution.started_at is not None:
                elapsed = self.timestamp - execution.started_at
                reported = int(elapsed.total_seconds() * 1000)
            execution.duration_ms = reported
            self.apply_outcome(execution)

        def apply_outcome(self, execution: Execution) -> None:
            pass

    class Completed(Finished):
        status = "completed"
        output: Any
        duration_ms: int | None

        def apply_outcome(self, execution: Execution) -> None:
            execution.output = self.output

    class Failed(Finished):
        status = "failed"
        error: dict[str, Any]
        duration_ms: int | None

        def apply_outcome(self, execution: Execution) -> None:
            execution.error = self.error

    class TimedOut(Finished):
        status = "timed_out"

        def apply_outcome(self, execution: Execution) -> None:
            execution.error = {
                "code": "TIMEOUT",
                "message": f"not finished after {execution.timeout_seconds}s",
            }

    class Cancelled(Finished):
        status = "cancelled"

    class Rejected(Finished):
        status = "rejected"
        credits_required: int
        credits_available: int

        def apply_outcome(self, execution: Execution) -> None:
            execution.error = {
                "code": "INSUFFICIENT_CREDITS",
                "credits_required": self.credits_required,
                "credits_available": self.credits_available,
            }

    def complete(self, output: Any, duration_ms: int | None = None) -> None:
        self.trigger_event(self.Completed, output=output, duration_ms=duration_ms)

    def fail(self, error: dict[str, Any], duration_ms: int | None = None) -> None:
        self.trigger_event(self.Failed, error=error, duration_ms=duration_ms)

    def time_out(self) -> None:
        self.trigger_event(self.TimedOut)

    def cancel(self) -> None:
        self.trigger_event(self.Cancelled)

    def reject(self, credits_required: int, credits_available: int) -> None:
        self.trigger_event(
            self.Rejected, credits_required=credits_required, credits_available=credits_available
        )

    class Logged(Aggregate.Event):
        level: str
        message: str

    @event(Logged)
    def log(self, level: str, message: str) -> None:
        pass

    @property
    def refund_due(self) -> int:
        """What a finished execution gives back: everything, unless it completed."""
        return self.debited if self.status in REFUNDED_ON else 0
