"""Registering, changing, activating and archiving workflows."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from commands.base import Command, new_token, retry_on_conflict, sha256_hex
from events.application import Flowledger
from events.errors import Conflict, InvalidInput, NotFound
from events.vault import SecretShredded
from events.workflow import Workflow


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Retry(_Shape):
    max_retries: int = Field(0, ge=0, le=10)
    backoff_seconds: float = Field(2, ge=0, le=3600)


class ManualTrigger(_Shape):
    type: Literal["manual"]


class WebhookTrigger(_Shape):
    type: Literal["webhook"]


class ScheduleTrigger(_Shape):
    type: Literal["schedule"]
    cron: str = Field(max_length=200)
    timezone: str = Field("UTC", max_length=64)
    catchup: Literal["latest", "none"] = "latest"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError("invalid cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone") from None
        return value


class Condition(_Shape):
    field: str = Field(min_length=1, max_length=200)
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "exists"]
    value: Any = None


class EventTrigger(_Shape):
    type: Literal["event"]
    event_types: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]] = Field(
        min_length=1, max_length=50
    )
    filter: list[Condition] = Field(default_factory=list, max_length=50)


Trigger = Annotated[
    ManualTrigger | WebhookTrigger | ScheduleTrigger | EventTrigger, Field(discriminator="type")
]


def _check_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as e:
            raise ValueError(f"not a valid JSON Schema: {e.message}") from None
    return value


class WorkflowFields(Command):
    """Every editable field; `RegisterWorkflow` requires some, `UpdateWorkflow` none."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    project_id: UUID | None = None
    n8n_connection_id: UUID | None = None
    n8n_workflow_id: str | None = Field(None, max_length=200)
    n8n_webhook_path: str | None = Field(None, max_length=500, pattern=r"^[A-Za-z0-9/_\-.:]+$")
    webhook_url: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s]+$")
    response_mode: Literal["sync", "callback"] | None = None
    credits_per_execution: int | None = Field(None, ge=0, le=1_000_000)
    timeout_seconds: int | None = Field(None, ge=1, le=600)
    retry: Retry | None = None
    input_schema: dict[str, Any] | None = None
    trigger: Trigger | None = None
    tags: list[Annotated[str, Field(max_length=50)]] | None = Field(None, max_length=50)
    category: str | None = Field(None, max_length=100)

    _schema = field_validator("input_schema")(_check_schema)


DEFAULTS: dict[str, Any] = {
    "description": None,
    "project_id": None,
    "n8n_connection_id": None,
    "n8n_workflow_id": None,
    "n8n_webhook_path": None,
    "webhook_url": None,
    "response_mode": "sync",
    "credits_per_execution": 1,
    "timeout_seconds": 300,
    "retry": {"max_retries": 0, "backoff_seconds": 2},
    "input_schema": None,
    "trigger": {"type": "manual"},
    "tags": [],
    "category": None,
}


class RegisterWorkflow(WorkflowFields):
    name: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _has_target(self) -> RegisterWorkflow:
        if not self.webhook_url and not self.n8n_webhook_path:
            raise ValueError("webhook_url or n8n_webhook_path is required")
        return self


class UpdateWorkflow(WorkflowFields):
    pass


def _definition(cmd: WorkflowFields) -> dict[str, Any]:
    """The fields the client set, each dumped whole (nested defaults such as a schedule's
    `timezone` and `catchup` are kept)."""
    dumped = cmd.model_dump(mode="json")
    return {name: dumped[name] for name in cmd.model_fields_set}


def _check_target(definition: dict[str, Any]) -> None:
    """The target is `webhook_url`, or a connection's base URL + /webhook/ + path."""
    if definition.get("webhook_url"):
        return
    if not definition.get("n8n_webhook_path"):
        raise InvalidInput("webhook_url or n8n_webhook_path is required", field="webhook_url")
    # n8n connections (`/n8n/connections`) are not built yet, so no connection id resolves.
    raise InvalidInput(
        "n8n_webhook_path needs a known n8n_connection_id; give webhook_url instead",
        field="n8n_connection_id",
    )


def register_workflow(app: Flowledger, org_id: UUID, cmd: RegisterWorkflow) -> Workflow:
    # An explicit null means "the default" (a null response_mode or timeout broke runs).
    given = {k: v for k, v in _definition(cmd).items() if v is not None}
    definition = {**DEFAULTS, **given}
    _check_target(definition)
    workflow = Workflow(organization_id=org_id, definition=definition)
    if workflow.has_webhook_trigger:
        _new_trigger_token(app, workflow)
    app.save(workflow)
    return workflow


def workflow_of(app: Flowledger, org_id: UUID, workflow_id: UUID) -> Workflow:
    """A workflow of this organization that is not archived (others are not found)."""
    return app.owned(workflow_id, Workflow, org_id, "workflow")


@retry_on_conflict()
def update_workflow(
    app: Flowledger, org_id: UUID, workflow_id: UUID, cmd: UpdateWorkflow
) -> Workflow:
    workflow = workflow_of(app, org_id, workflow_id)
    changes = _definition(cmd)
    nullable = {"description", "project_id", "input_schema", "category", "webhook_url"}
    changes = {k: v for k, v in changes.items() if v is not None or k in nullable}
    _check_target({**workflow.definition, **changes})
    if changes:
        trigger_changed = changes.get("trigger", workflow.definition.get("trigger")) != (
            workflow.definition.get("trigger")
        )
        workflow.update(changes)
        replaced = None
        if workflow.has_webhook_trigger and (trigger_changed or workflow.trigger_token is None):
            replaced = _new_trigger_token(app, workflow)
        app.save(workflow)
        _shred(app, replaced)
    return workflow


@retry_on_conflict()
def set_workflow_active(app: Flowledger, org_id: UUID, workflow_id: UUID, active: bool) -> Workflow:
    workflow = workflow_of(app, org_id, workflow_id)
    if active != workflow.is_active:
        workflow.activate() if active else workflow.deactivate()
        app.save(workflow)
    return workflow


@retry_on_conflict()
def archive_workflow(app: Flowledger, org_id: UUID, workflow_id: UUID) -> None:
    workflow = workflow_of(app, org_id, workflow_id)
    workflow.archive()
    app.save(workflow)


# -- trigger URLs (`trigger.type = webhook`) -----------------------------------------------


def _new_trigger_token(app: Flowledger, workflow: Workflow) -> dict[str, Any] | None:
    """Issue a fresh token (hash to check, sealed to show); returns the one it replaces."""
    previous = workflow.trigger_token
    token = new_token(nbytes=24)
    workflow.issue_trigger_token(token_hash=sha256_hex(token), sealed=app.vault.seal(token))
    return previous


def _shred(app: Flowledger, replaced: dict[str, Any] | None) -> None:
    """The replaced token's data key goes: its sealed copy in the log is unreadable."""
    if replaced is not None:
        app.vault.shred(replaced["sealed"]["key_id"])


@retry_on_conflict()
def rotate_trigger_token(app: Flowledger, org_id: UUID, workflow_id: UUID) -> Workflow:
    workflow = workflow_of(app, org_id, workflow_id)
    if not workflow.has_webhook_trigger:
        raise Conflict("only a workflow with a webhook trigger has a trigger URL")
    replaced = _new_trigger_token(app, workflow)
    app.save(workflow)
    _shred(app, replaced)
    return workflow


def trigger_url(app: Flowledger, workflow: Workflow) -> str | None:
    """`<public_url>/webhooks/workflows/{id}/{token}` for a webhook trigger, else None."""
    if not workflow.has_webhook_trigger or workflow.trigger_token is None:
        return None
    try:
        token = app.vault.open(workflow.trigger_token["sealed"])
    except SecretShredded:
        return None
    base = app.settings.public_url.rstrip("/")
    return f"{base}/webhooks/workflows/{workflow.id}/{token}"


def workflow_by_trigger_token(app: Flowledger, workflow_id: UUID, token: str) -> Workflow:
    """The workflow this trigger URL starts; NotFound for an unknown or rotated token."""
    workflow = app.find(workflow_id, Workflow)
    stored = workflow.trigger_token if workflow is not None else None
    if workflow is None or workflow.archived or not workflow.has_webhook_trigger or not stored:
        raise NotFound("workflow not found")
    if not hmac.compare_digest(stored["hash"], sha256_hex(token)):
        raise NotFound("workflow not found")
    return workflow
