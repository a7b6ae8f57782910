"""Response shapes as pydantic models: what `api/shapes.py` and the read models answer.

They exist for the OpenAPI document (`api/openapi.py`) and are never instantiated on the
request path: the resources build plain dicts. schemathesis checks every answer against
these models (tests/unit/test_openapi_schemathesis.py), so a shape changed in one place but
not the other fails there. Request bodies are not here: they are the command models the
resources validate with (`commands/*.py`, a few in the resource modules).

Fields are all required (the answers always carry every key); `X | None` says the value
may be null. Extra keys are allowed, so adding a field is not a breaking change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from commands.organization import OrganizationSettings, Plan, Role
from commands.workflow import Retry, Trigger

ExecutionStatus = Literal[
    "queued", "running", "completed", "failed", "timed_out", "cancelled", "rejected"
]
TransactionType = Literal["grant", "purchase", "debit", "refund", "transfer_out", "transfer_in"]
DeliveryStatus = Literal["pending", "succeeded", "failed"]


# -- errors -----------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="e.g. VALIDATION_ERROR, NOT_FOUND, RATE_LIMIT_EXCEEDED")
    message: str
    details: dict[str, Any] = Field(
        description="`fields: [{field, message}]` on 422, `retry_after` on 429, "
        "`execution_id` on 502/504, `credits_required`/`credits_available` on 402"
    )
    request_id: str = Field(description="the same as the X-Request-ID header")


class Error(BaseModel):
    """The contract's one error envelope, for every error of every route."""

    error: ErrorBody


# -- users and organizations ------------------------------------------------------------


class User(BaseModel):
    id: UUID
    email: str
    full_name: str
    is_active: bool
    created_at: datetime


class Membership(BaseModel):
    id: UUID
    tenant_id: str
    role: Role | None


class Me(User):
    organizations: list[Membership]


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds")
    user: User


class Organization(BaseModel):
    id: UUID
    name: str
    tenant_id: str
    credits: int = Field(ge=0)
    plan_type: Plan
    is_active: bool
    settings: OrganizationSettings
    created_at: datetime


class OrganizationItem(Organization):
    role: Role | None


class OrganizationPage(BaseModel):
    items: list[OrganizationItem]
    total: int
    limit: int
    offset: int


class CreatedOrganization(BaseModel):
    """The API key and client secret are shown here once, never again."""

    id: UUID
    name: str
    tenant_id: str
    plan_type: Plan
    credits: int = Field(ge=0)
    api_key: str
    client_secret: str
    message: str


class MemberAdded(BaseModel):
    organization_id: UUID
    user_id: UUID
    email: str
    role: Role


class ApiKeyIssued(BaseModel):
    id: UUID
    api_key: str = Field(description="shown once")
    prefix: str


class ClientSecret(BaseModel):
    client_secret: str = Field(description="shown once")


class UsageLog(BaseModel):
    id: UUID
    execution_id: UUID
    workflow_id: UUID
    workflow_name: str | None
    credits_used: int
    status: ExecutionStatus
    execution_time_ms: int | None
    created_at: datetime
    completed_at: datetime | None


class Usage(BaseModel):
    usage_logs: list[UsageLog]
    total: int
    credits_remaining: int
    limit: int
    offset: int


class CreditsGranted(BaseModel):
    success: bool
    new_balance: int
    amount_added: int = Field(description="0 when this invoice_id was already granted")


# -- credits ----------------------------------------------------------------------------


class Balance(BaseModel):
    balance: int
    currency: Literal["credits"]
    low_balance_threshold: int | None
    updated_at: datetime | None


class Transaction(BaseModel):
    id: UUID
    type: TransactionType
    amount: int = Field(description="signed: debits and transfers out are negative")
    balance_after: int
    execution_id: UUID | None
    description: str | None
    created_at: datetime


class TransactionPage(BaseModel):
    items: list[Transaction]
    total: int
    limit: int
    offset: int


class Transfer(BaseModel):
    transfer_id: UUID
    status: Literal["completed"]
    amount: int
    balance: int


# -- workflows and executions -----------------------------------------------------------


class Workflow(BaseModel):
    id: UUID
    name: str
    description: str | None
    project_id: UUID | None
    n8n_connection_id: UUID | None
    n8n_workflow_id: str | None
    n8n_webhook_path: str | None
    webhook_url: str | None
    response_mode: Literal["sync", "callback"]
    is_active: bool
    credits_per_execution: int
    timeout_seconds: int
    retry: Retry | None
    input_schema: dict[str, Any] | None
    trigger: Trigger
    tags: list[str]
    category: str | None
    trigger_url: str | None = Field(description="set for a webhook trigger; holds a secret")
    execution_count: int
    last_executed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WorkflowPage(BaseModel):
    items: list[Workflow]
    total: int
    limit: int
    offset: int


class LogLine(BaseModel):
    at: datetime
    level: str
    message: str


class Execution(BaseModel):
    id: UUID
    workflow_id: UUID
    status: ExecutionStatus
    input: dict[str, Any]
    metadata: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    credits_used: int
    attempts: int
    retry_of: UUID | None
    trigger: str = Field(description="api, webhook, schedule, event, retry or post")
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    logs: list[LogLine]


class ExecutionPage(BaseModel):
    items: list[Execution]
    total: int
    limit: int
    offset: int


class RetriedExecution(Execution):
    execution_id: UUID = Field(description="the new execution's id (= id)")


class Queued(BaseModel):
    execution_id: UUID
    status: ExecutionStatus
    queued_at: datetime


class Completed(BaseModel):
    """A synchronous run that completed; other outcomes are errors (402, 409, 502, 504)."""

    success: Literal[True]
    execution_id: UUID
    status: Literal["completed"]
    data: Any = Field(description="n8n's output")
    credits_used: int
    credits_remaining: int
    execution_time_ms: int | None


class CallbackAnswer(BaseModel):
    execution_id: UUID
    status: ExecutionStatus


# -- automation events and inbound webhooks ---------------------------------------------


class EventRecorded(BaseModel):
    id: UUID
    event_type: str
    created_at: datetime
    triggered_workflows: list[UUID]
    status: Literal["processing"]


class AutomationEvent(BaseModel):
    id: UUID
    event_type: str
    event_data: dict[str, Any]
    processed: bool
    workflow_ids: list[UUID]
    execution_ids: list[UUID]
    created_at: datetime


class AutomationEventPage(BaseModel):
    items: list[AutomationEvent]
    total: int
    limit: int
    offset: int


class N8nEventReceived(BaseModel):
    status: Literal["received"]
    event_id: UUID


class TriggerQueued(BaseModel):
    execution_id: UUID


class StripeReceived(BaseModel):
    received: Literal[True]
    status: Literal["applied", "duplicate", "ignored"]
    credits_granted: int | None = Field(None, description="only when the invoice was applied")


# -- outgoing webhooks ------------------------------------------------------------------


class Endpoint(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    description: str | None
    max_attempts: int
    is_active: bool
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="`whsec_...`, shown by create and rotate-secret only")


class EndpointPage(BaseModel):
    items: list[Endpoint]
    total: int
    limit: int
    offset: int


class Attempt(BaseModel):
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None


class Delivery(BaseModel):
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    status: DeliveryStatus
    attempts: list[Attempt]
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryPage(BaseModel):
    items: list[Delivery]
    total: int
    limit: int
    offset: int


class PingSent(BaseModel):
    delivery_id: UUID
    event: Literal["webhook.test"]


class Redelivered(BaseModel):
    redelivered: int


class DeliveryQueued(BaseModel):
    delivery_id: UUID
    status: Literal["pending"]


# -- provider keys (the vault) -----------------------------------------------------------


class ProviderKey(BaseModel):
    """A provider key as every answer shows it: never the key, only its hint."""

    id: UUID
    provider: str
    key_name: str
    key_hint: str = Field(description="`...abcd`")
    models: list[str]
    is_active: bool = Field(description="enabled, not paused by its limit, not expired")
    usage_current: float = Field(description="this month's cost")
    usage_limit_monthly: float | None
    paused_until: datetime | None
    expires_at: datetime | None
    rotated_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ProviderKeyPage(BaseModel):
    items: list[ProviderKey]
    total: int
    limit: int
    offset: int


class KeyRotated(BaseModel):
    id: UUID
    status: Literal["rotated"]
    rotated_at: datetime
    key_hint: str


class UsageRecorded(BaseModel):
    key_id: UUID
    requests_count: int
    tokens_used: int
    cost: float
    at: datetime
    usage_current: float
    usage_limit_monthly: float | None
    limit_reached: bool = Field(description="this record reached the monthly limit")
    is_active: bool


class UsageBucket(BaseModel):
    date: str = Field(description="the day, the week's Monday or the month's first day")
    requests_count: int
    tokens_used: int
    cost: float


class UsageSummary(BaseModel):
    total_requests: int
    total_tokens: int
    total_cost: float


class KeyUsage(BaseModel):
    usage: list[UsageBucket]
    summary: UsageSummary


class ClearKey(BaseModel):
    api_key: str = Field(description="the clear provider key; the read is recorded")


# -- audit ------------------------------------------------------------------------------


class AuditEvent(BaseModel):
    position: int = Field(description="the event's position in the notification log")
    aggregate_id: UUID
    aggregate_type: str
    version: int
    event_type: str = Field(description="e.g. `Execution.Started`")
    occurred_at: datetime
    actor: str | None = Field(description="`user:<id>`, `trigger:<t>`, `source:<s>` or null")
    data: dict[str, Any] = Field(description="the event's fields, secrets redacted")


class AuditLog(BaseModel):
    items: list[AuditEvent]
    next_after: int | None = Field(description="`after` of the next page; null at the end")


class AuditAggregate(BaseModel):
    aggregate_id: UUID
    aggregate_type: str
    version: int
    state: dict[str, Any] = Field(description="the aggregate after that version, redacted")


class AuditHistory(BaseModel):
    items: list[AuditEvent]


# -- monitoring and analytics -----------------------------------------------------------


class DashboardSummary(BaseModel):
    total_workflows: int
    active_workflows: int
    executions_24h: int
    completed_24h: int
    failed_24h: int
    success_rate: float | None
    average_duration_ms: int | None
    credits_used_24h: int
    alerts_active: int


class DashboardWorkflow(BaseModel):
    id: UUID
    name: str | None
    is_active: bool
    execution_count: int
    last_executed_at: datetime | None
    executions_24h: int
    failed_24h: int
    success_rate_24h: float | None
    credits_used_24h: int


class RecentExecution(BaseModel):
    id: UUID
    workflow_id: UUID
    workflow_name: str | None
    status: ExecutionStatus
    trigger: str
    queued_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    credits_used: int


class QueueDepth(BaseModel):
    ready: int
    delayed: int
    in_progress: int


class PerformanceMetrics(BaseModel):
    queue_depth: int
    projection_lag: int
    dispatcher_lag: int
    log_position: int
    queues: dict[str, QueueDepth]
    projections: dict[str, int] = Field(description="lag of each read model")


class Alert(BaseModel):
    id: str
    type: str = Field(description="`workflow_failure`")
    message: str
    severity: str
    created_at: datetime
    workflow_id: UUID | None
    failures: int
    last_execution_id: UUID | None
    updated_at: datetime | None
    resolved_at: datetime | None


class Dashboard(BaseModel):
    summary: DashboardSummary
    workflows: list[DashboardWorkflow]
    recent_executions: list[RecentExecution]
    performance_metrics: PerformanceMetrics
    alerts: list[Alert]


class UsagePoint(BaseModel):
    date: str = Field(description="the day, the week's Monday or the month's first day")
    executions: int
    completed: int
    failed: int
    credits_used: int


class UsageTotals(BaseModel):
    executions: int
    completed: int
    failed: int
    credits_used: int
    success_rate: float | None


class UsageAnalytics(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: Literal["day", "week", "month"]
    series: list[UsagePoint]
    totals: UsageTotals


class WorkflowStats(BaseModel):
    workflow_id: UUID
    name: str | None
    is_active: bool
    archived: bool
    executions: int
    completed: int
    failed: int
    success_rate: float | None
    p50_duration_ms: int | None
    p95_duration_ms: int | None
    credits_used: int


class WorkflowStatsPage(BaseModel):
    items: list[WorkflowStats]
    total: int
    limit: int
    offset: int
    from_: datetime = Field(alias="from")
    to: datetime


# -- health -----------------------------------------------------------------------------


class Checks(BaseModel):
    database: Literal["ok", "error"]
    redis: Literal["ok", "error", "not_configured"]
    n8n: Literal["ok", "error", "not_configured"]


class Health(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    timestamp: datetime
    checks: Checks
