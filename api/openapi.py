"""The OpenAPI 3.1 document of the app, built from the same models the API validates with.

Request bodies are the command models the resources pass to `api.middleware.body`; answers
are the shapes of `api/schemas.py`; every error is the envelope `Error`. All of them are
collected once into `components.schemas` by pydantic (`models_json_schema`).

**Why one table (`OPERATIONS`) instead of metadata on each resource.** Most of an operation
is derived from the app itself: the routes and methods from Falcon's router, who may call it
from the resource's `auth` dict (security schemes, 401/403, rate-limit headers and 429),
path parameters (and their 404) from the URI template, 400/413/415/422 from having a body,
`Idempotency-Key` (and its 409) from `idempotent`. What is left, the body model, the answer
models and a few route-specific errors and query parameters, is one `Op(...)` line per
(method, URI template) here. One table keeps the whole surface reviewable in one screen,
keeps the docs out of the resource modules many engineers edit, and makes documenting a new
route one obvious step: `tests/unit/test_openapi.py` walks the router and names every
`("METHOD", "/uri/{template}")` missing from `OPERATIONS` (or listed but not served).
Query parameters are declared here by hand because the resources read them imperatively
(`page_params`, `choice_param`, `get_param_as_*`); the helpers below mirror those rules.

Documenting a new route, e.g. `GET /api/v1/audit/log` answering a model of api/schemas.py:

    ("GET", V1 + "/audit/log"): Op("The log, oldest first", {200: s.AuditPage},
                                   query=(Param("after", {"type": "integer", "minimum": 0}),)),

(`answers` may also name a media type, e.g. `{200: "text/plain"}` for `/metrics`.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import falcon
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import schemas as s
from api.audit import MAX_POSITION
from api.auth_routes import Login, Logout, RefreshToken
from api.automation_events import N8nEvent
from api.credits import TYPES as TRANSACTION_TYPES
from api.docs import ASSETS, MEDIA_TYPES
from api.middleware import MAX_BODY, MAX_OFFSET
from api.webhooks import STATUSES as DELIVERY_STATUSES
from api.webhooks import Recover
from commands.automation_event import RecordEvent
from commands.credits import GrantCredits, TransferCredits
from commands.execution import (
    Execute,
    ExecuteWorkflow,
    LogExecutionError,
    RecordExecutionStatus,
)
from commands.organization import AddMember, CreateOrganization, UpdateOrganization
from commands.provider_key import (
    CreateProviderKey,
    RecordUsage,
    RotateProviderKey,
    UpdateProviderKey,
)
from commands.user import RegisterUser
from commands.webhook import CreateEndpoint, UpdateEndpoint
from commands.workflow import RegisterWorkflow, UpdateWorkflow
from events.execution import STATUSES as EXECUTION_STATUSES
from flowledger.settings import VERSION
from projections.provider_keys import GRANULARITIES

JSON = "application/json"
SSE = "text/event-stream"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN = frozenset({None, "public", "internal"})  # no credentials checked by the middleware
USER_NEEDS = frozenset({"user", "operator"})  # a user, outside any organization
ERROR_TEXT = {
    400: "Bad request: malformed JSON, a bad query parameter or header",
    401: "Missing, invalid or expired credentials, or a bad signature",
    402: "Not enough credits",
    403: "Authenticated, but this role (or an API key) may not do this",
    404: "Unknown resource, or one of another organization",
    409: "Conflict: state, a reused Idempotency-Key, or a concurrent change that won",
    410: "Gone: the provider key was deleted and its secret shredded (KEY_DELETED)",
    413: f"Request body larger than {MAX_BODY} bytes",
    415: "Content-Type is not JSON (UTF-8)",
    422: "Validation failed; details.fields lists each field",
    429: "Rate limit exceeded; see Retry-After",
    500: "Internal error (never a stack trace)",
    502: "The n8n workflow answered with an error",
    503: "A backing service (database, Redis) is unavailable; retry later",
    504: "The workflow did not finish in time",
}


@dataclass(frozen=True)
class Param:
    """A query or header parameter; `schema` is JSON Schema as the code enforces it."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    where: str = "query"
    required: bool = False

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "in": self.where, "schema": dict(self.schema)}
        if self.required:
            out["required"] = True
        if self.description:
            out["description"] = self.description
        return out


def choice(name: str, values: tuple[str, ...] | frozenset[str], description: str = "") -> Param:
    """`choice_param`: one of `values`, else 400."""
    return Param(name, {"type": "string", "enum": sorted(values)}, description)


def uuid_param(name: str, description: str = "") -> Param:
    """`get_param_as_uuid`: a UUID, else 400."""
    return Param(name, {"type": "string", "format": "uuid"}, description)


def when(name: str, description: str) -> Param:
    """`api.middleware.timestamp_param`: an ISO 8601 / RFC 3339 timestamp, else 400."""
    return Param(name, {"type": "string", "format": "date-time"}, description)


def flag(name: str, description: str = "") -> Param:
    """`get_param_as_bool`: true/false (also 1/0, yes/no, on/off), else 400."""
    return Param(name, {"type": "boolean"}, description)


def text(name: str, description: str = "") -> Param:
    return Param(name, {"type": "string"}, description)


def header(name: str, description: str, required: bool = False, **schema: Any) -> Param:
    return Param(name, {"type": "string", **schema}, description, "header", required)


# `page_params`: limit 1..200 (default 50), offset 0..2^31-1; anything else is a 400.
PAGE = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
    Param("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
)


@dataclass(frozen=True)
class Op:
    """What the router cannot tell about one operation.

    `answers`: success status → response model (None: no body; a string: a media type whose
    body is not JSON). `errors`: statuses this route raises beyond the derived ones.
    """

    summary: str
    answers: Mapping[int, type[BaseModel] | str | tuple[str, ...] | None]
    body: type[BaseModel] | Mapping[str, Any] | None = None
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    description: str = ""
    tag: str | None = None
    body_required: bool = True
    path_schemas: Mapping[str, Mapping[str, Any]] | None = None


V1 = "/api/v1"
ASSET_MEDIA = tuple(sorted(set(MEDIA_TYPES.values())))
ORG = V1 + "/organizations/{org_id:uuid}"
WORKFLOW = V1 + "/workflows/{workflow_id:uuid}"
EXECUTION = V1 + "/executions/{execution_id:uuid}"
ENDPOINT = V1 + "/webhooks/endpoints/{endpoint_id:uuid}"
KEY = V1 + "/keys/{key_id:uuid}"
AGGREGATE = V1 + "/audit/aggregates/{aggregate_id:uuid}"
ANALYTICS_WINDOW = (
    Param("from", {"type": "string"}, "an RFC 3339 time or a date (YYYY-MM-DD)"),
    Param("to", {"type": "string"}, "an RFC 3339 time or a date (its whole day); default now"),
)
N8N_SIGNED = (
    header("X-Tenant-ID", "the organization's tenant_id", required=True),
    header("X-N8N-Timestamp", "unix seconds, within 300 s of now", required=True),
    header(
        "X-N8N-Signature",
        "hex HMAC-SHA256(client_secret, timestamp + raw body), optionally `sha256=`; once",
        required=True,
    ),
    header("X-N8N-Workflow-ID", "n8n's workflow id, kept as context"),
)
CALLBACK_AUTH = (
    header("X-Callback-Token", "the execution's own token, handed to n8n in the call"),
    header("X-N8N-Internal-Auth", "the settings' internal secret, when one is configured"),
)
EVENT_FILTERS = (
    text("event_type"),
    flag("processed"),
    when("from", "created at or after"),
    when("to", "created before"),
    *PAGE,
)

#: (method, Falcon URI template as passed to `add_route`) → the operation's description.
OPERATIONS: dict[tuple[str, str], Op] = {
    # -- health and docs
    ("GET", "/health"): Op("Health of the database, Redis and n8n", {200: s.Health, 503: s.Health}),
    ("GET", V1 + "/health"): Op("Health (alias of /health)", {200: s.Health, 503: s.Health}),
    ("GET", "/openapi.json"): Op("This OpenAPI document", {200: JSON}, tag="docs"),
    ("GET", "/docs"): Op("Swagger UI rendering this document", {200: "text/html"}, tag="docs"),
    ("GET", "/docs/assets/{name}"): Op(
        "Swagger UI's static files (served from the installed package; no CDN)",
        {200: ASSET_MEDIA},
        tag="docs",
        path_schemas={"name": {"type": "string", "enum": sorted(ASSETS)}},
    ),
    # -- auth
    ("POST", V1 + "/auth/register"): Op("Register a user", {201: s.User}, RegisterUser, (409,)),
    ("POST", V1 + "/auth/login"): Op(
        "Log in: tokens in the body, the auth_token cookie",
        {200: s.Tokens},
        Login,
        (401,),
        description="401 INVALID_CREDENTIALS; 10 failed logins per email in 15 min → 429.",
    ),
    ("POST", V1 + "/auth/refresh"): Op(
        "Swap a refresh token (each works once) for a new pair",
        {200: s.Tokens},
        RefreshToken,
        (401,),
    ),
    ("POST", V1 + "/auth/logout"): Op(
        "Revoke the refresh token, clear the cookie", {204: None}, Logout, body_required=False
    ),
    ("GET", V1 + "/auth/me"): Op("The caller and their organizations", {200: s.Me}),
    # -- organizations
    ("GET", V1 + "/organizations"): Op(
        "The caller's organizations", {200: s.OrganizationPage}, query=PAGE
    ),
    ("POST", V1 + "/organizations"): Op(
        "Create an organization (the caller becomes owner)",
        {201: s.CreatedOrganization},
        CreateOrganization,
        (409,),
    ),
    ("GET", ORG): Op("An organization", {200: s.Organization}),
    ("PATCH", ORG): Op(
        "Change name, settings, or plan_type (operators only)",
        {200: s.Organization},
        UpdateOrganization,
    ),
    ("POST", ORG + "/members"): Op(
        "Add a registered user as a member", {201: s.MemberAdded}, AddMember, (409,)
    ),
    ("POST", ORG + "/api-keys"): Op("Issue an API key (shown once)", {201: s.ApiKeyIssued}),
    ("DELETE", ORG + "/api-keys/{key_id:uuid}"): Op("Revoke an API key", {204: None}),
    ("POST", ORG + "/rotate-secret"): Op("A new client secret", {200: s.ClientSecret}),
    ("GET", ORG + "/usage"): Op(
        "Usage: one line per execution",
        {200: s.Usage},
        query=(choice("status", EXECUTION_STATUSES), *PAGE),
    ),
    ("POST", ORG + "/credits"): Op(
        "Grant credits (platform operators); an invoice_id adds once",
        {200: s.CreditsGranted},
        GrantCredits,
    ),
    # -- credits
    ("GET", V1 + "/credits/balance"): Op("The balance", {200: s.Balance}),
    ("GET", V1 + "/credits/transactions"): Op(
        "The ledger, newest first",
        {200: s.TransactionPage},
        query=(choice("type", TRANSACTION_TYPES), *PAGE),
    ),
    ("POST", V1 + "/credits/transfers"): Op(
        "Give credits to another organization", {201: s.Transfer}, TransferCredits, (402, 404)
    ),
    # -- workflows
    ("GET", V1 + "/workflows"): Op(
        "The organization's workflows, newest first",
        {200: s.WorkflowPage},
        query=(
            flag("active_only"),
            text("category"),
            text("search", "in name or description"),
            uuid_param("project_id"),
            *PAGE,
        ),
    ),
    ("POST", V1 + "/workflows"): Op("Register a workflow", {201: s.Workflow}, RegisterWorkflow),
    ("GET", WORKFLOW): Op("A workflow", {200: s.Workflow}),
    ("PATCH", WORKFLOW): Op("Change a workflow", {200: s.Workflow}, UpdateWorkflow),
    ("DELETE", WORKFLOW): Op("Archive a workflow (it cannot run any more)", {204: None}),
    ("POST", WORKFLOW + "/activate"): Op("Activate", {200: s.Workflow}),
    ("POST", WORKFLOW + "/deactivate"): Op("Deactivate", {200: s.Workflow}),
    ("POST", WORKFLOW + "/rotate-trigger-token"): Op(
        "A new trigger URL; the old one answers 404 from now", {200: s.Workflow}, errors=(409,)
    ),
    # -- executions
    ("POST", WORKFLOW + "/execute"): Op(
        "Queue a run (202), or with `wait: true` run it and answer as /execute",
        {200: s.Completed, 202: s.Queued},
        ExecuteWorkflow,
        (402, 409, 502, 504),
        body_required=False,
    ),
    ("POST", V1 + "/execute"): Op(
        "Run a workflow synchronously",
        {200: s.Completed},
        Execute,
        (402, 404, 409, 502, 504),
    ),
    ("GET", V1 + "/executions"): Op(
        "The organization's executions, newest first",
        {200: s.ExecutionPage},
        query=(
            uuid_param("workflow_id"),
            choice("status", EXECUTION_STATUSES),
            when("from", "queued at or after"),
            when("to", "queued at or before"),
            *PAGE,
        ),
    ),
    ("GET", EXECUTION): Op("An execution", {200: s.Execution}),
    ("POST", EXECUTION + "/cancel"): Op(
        "Cancel (409 EXECUTION_FINISHED once terminal)", {200: s.Execution}, errors=(409,)
    ),
    ("POST", EXECUTION + "/retry"): Op(
        "A new run with the same input and retry_of",
        {202: s.RetriedExecution},
        errors=(402, 409, 422),
    ),
    ("GET", EXECUTION + "/stream"): Op(
        "Server-Sent Events: `event: execution` per change, until the terminal state",
        {200: SSE},
    ),
    ("POST", V1 + "/internal/update-status"): Op(
        "n8n reports a run's status (callback)",
        {200: s.CallbackAnswer},
        RecordExecutionStatus,
        (401, 404, 409),
        headers=CALLBACK_AUTH,
    ),
    ("POST", V1 + "/internal/log-error"): Op(
        "n8n reports a run's error (callback)",
        {200: s.CallbackAnswer},
        LogExecutionError,
        (401, 404, 409),
        headers=CALLBACK_AUTH,
    ),
    # -- automation events and inbound webhooks
    ("POST", V1 + "/events"): Op(
        "Record an automation event; matching workflows run", {201: s.EventRecorded}, RecordEvent
    ),
    ("GET", V1 + "/events"): Op(
        "The organization's automation events, newest first",
        {200: s.AutomationEventPage},
        query=EVENT_FILTERS,
    ),
    ("POST", "/webhooks/n8n/{event_type}"): Op(
        "n8n's signed events (recorded as POST /events does)",
        {200: s.N8nEventReceived},
        N8nEvent,
        (401, 404),
        headers=N8N_SIGNED,
        body_required=False,
        tag="inbound",
    ),
    ("POST", "/webhooks/workflows/{workflow_id:uuid}/{token}"): Op(
        "A workflow's trigger URL: the body (a JSON object) is the run's input",
        {202: s.TriggerQueued},
        {"type": "object"},
        (402, 409),
        body_required=False,
        tag="inbound",
    ),
    ("POST", V1 + "/webhooks/stripe"): Op(
        "Stripe events; invoice.paid grants credits once per Stripe event id",
        {200: s.StripeReceived},
        {"type": "object", "description": "a Stripe event"},
        (401, 404),
        headers=(header("Stripe-Signature", "t=<unix>,v1=<hex HMAC-SHA256>", required=True),),
        description="404 when FLOWLEDGER_STRIPE_WEBHOOK_SECRET is not set.",
        tag="inbound",
    ),
    ("GET", V1 + "/stream"): Op(
        "Server-Sent Events of the organization's webhook-type events",
        {200: SSE},
        headers=(header("Last-Event-ID", "resume after this log position"),),
    ),
    # -- provider keys (the vault)
    ("GET", V1 + "/keys"): Op(
        "Provider keys (never the key)", {200: s.ProviderKeyPage}, query=PAGE
    ),
    ("POST", V1 + "/keys"): Op("Store a provider key", {201: s.ProviderKey}, CreateProviderKey),
    ("GET", KEY): Op("A provider key", {200: s.ProviderKey}),
    ("PUT", KEY): Op("Change a provider key", {200: s.ProviderKey}, UpdateProviderKey),
    ("DELETE", KEY): Op("Delete a key; its secret is shredded, from the log too", {204: None}),
    ("POST", KEY + "/rotate"): Op("Replace the key", {200: s.KeyRotated}, RotateProviderKey),
    ("POST", KEY + "/usage"): Op(
        "Record usage; reaching the monthly limit pauses the key",
        {201: s.UsageRecorded},
        RecordUsage,
    ),
    ("GET", KEY + "/usage"): Op(
        "Usage per day, week or month, oldest first, with totals",
        {200: s.KeyUsage},
        query=(
            choice("granularity", GRANULARITIES),
            Param("from", {"type": "string"}, "a date or an RFC 3339 time, inclusive"),
            Param("to", {"type": "string"}, "exclusive; a date includes that whole day"),
        ),
    ),
    ("GET", V1 + "/internal/keys/{key_id:uuid}/secret"): Op(
        "n8n reads a clear provider key (internal secret only; every read is recorded)",
        {200: s.ClearKey},
        errors=(401, 410),
        headers=(
            header("X-N8N-Internal-Auth", "the settings' internal secret", required=True),
            header("X-N8N-Workflow-ID", "recorded with the read"),
            header("X-N8N-Execution-ID", "recorded with the read"),
        ),
    ),
    # -- audit (owners, admins, auditors)
    ("GET", V1 + "/audit/log"): Op(
        "The organization's events by log position, oldest first (secrets redacted)",
        {200: s.AuditLog},
        query=(
            Param(
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_POSITION, "default": 0},
                "a log position",
            ),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
            Param("event_type", {"type": "string", "minLength": 1, "maxLength": 200}),
            uuid_param("aggregate_id"),
        ),
    ),
    ("GET", AGGREGATE): Op(
        "An aggregate as it was after event `version` (time travel); default the latest",
        {200: s.AuditAggregate},
        errors=(422,),
        query=(Param("version", {"type": "integer", "minimum": 1}),),
    ),
    ("GET", AGGREGATE + "/history"): Op(
        "Every event of an aggregate, oldest first", {200: s.AuditHistory}
    ),
    # -- monitoring and analytics
    ("GET", V1 + "/n8n/monitor/dashboard"): Op(
        "The dashboard: last 24 h, workflows, recent runs, lag, queues, alerts",
        {200: s.Dashboard},
        tag="monitoring",
    ),
    ("GET", V1 + "/monitoring/dashboard"): Op(
        "The dashboard (alias of /n8n/monitor/dashboard)", {200: s.Dashboard}
    ),
    ("GET", V1 + "/analytics/usage"): Op(
        "Runs and credits per day, week or month (zero-filled), with totals",
        {200: s.UsageAnalytics},
        query=(choice("granularity", ("day", "week", "month")), *ANALYTICS_WINDOW),
        description="The window spans at most 3 years; `from` after `to` is a 400.",
    ),
    ("GET", V1 + "/analytics/workflows"): Op(
        "Per workflow: runs, success rate, p50/p95 durations, credits; busiest first",
        {200: s.WorkflowStatsPage},
        query=(*ANALYTICS_WINDOW, *PAGE),
    ),
    ("GET", "/metrics"): Op(
        "Prometheus text format (a bearer token when FLOWLEDGER_METRICS_TOKEN is set)",
        {200: "text/plain"},
        errors=(401,),
        tag="monitoring",
    ),
    # -- outgoing webhooks
    ("GET", V1 + "/webhooks/endpoints"): Op("Endpoints", {200: s.EndpointPage}, query=PAGE),
    ("POST", V1 + "/webhooks/endpoints"): Op(
        "Create an endpoint (its secret is shown once)", {201: s.EndpointWithSecret}, CreateEndpoint
    ),
    ("GET", ENDPOINT): Op("An endpoint", {200: s.Endpoint}),
    ("PATCH", ENDPOINT): Op("Change an endpoint", {200: s.Endpoint}, UpdateEndpoint),
    ("DELETE", ENDPOINT): Op("Archive an endpoint", {204: None}),
    ("POST", ENDPOINT + "/rotate-secret"): Op("A new secret", {200: s.EndpointWithSecret}),
    ("POST", ENDPOINT + "/test"): Op("Send webhook.test to this endpoint", {202: s.PingSent}),
    ("POST", ENDPOINT + "/recover"): Op(
        "Re-send every failed delivery since a time", {202: s.Redelivered}, Recover
    ),
    ("GET", V1 + "/webhooks/deliveries"): Op(
        "Deliveries with every attempt, newest first",
        {200: s.DeliveryPage},
        query=(
            uuid_param("endpoint_id"),
            choice("status", DELIVERY_STATUSES),
            text("event_type"),
            *PAGE,
        ),
    ),
    ("POST", V1 + "/webhooks/deliveries/{delivery_id:uuid}/redeliver"): Op(
        "A new round of attempts", {202: s.DeliveryQueued}
    ),
}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "An access token of POST /auth/login (HS256), or RS256 of an "
               "external identity provider. Organization: the org_id claim, else X-Tenant-ID."},
    "cookie": {"type": "apiKey", "in": "cookie", "name": "auth_token",
               "description": "Set by POST /auth/login (httpOnly, SameSite=Strict)."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An organization's key, `fl_live_...`; counts as a member."},
    "apiKeyTimestamp": {"type": "apiKey", "in": "header", "name": "X-Timestamp",
                        "description": "Unix seconds, within 300 s of now (signed requests)."},
    "apiKeySignature": {"type": "apiKey", "in": "header", "name": "X-Signature",
                        "description": "hex HMAC-SHA256(client_secret, X-Timestamp + raw body), "
                        "optionally `sha256=`; each signature works once. Required when the "
                        "organization sets require_signed_requests."},
}  # fmt: skip
USER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]
ORG_SECURITY = [
    *USER_SECURITY,
    {"apiKey": []},
    {"apiKey": [], "apiKeyTimestamp": [], "apiKeySignature": []},
]
HEADERS = {
    "X-Request-ID": {"description": "The client's (if sane) or a new UUID", "required": True,
                     "schema": {"type": "string"}},
    "X-RateLimit-Limit": {"description": "Requests allowed per minute",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in this minute",
                              "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix seconds when the window resets",
                          "schema": {"type": "integer"}},
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}},
}  # fmt: skip
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


# -- reading the app --------------------------------------------------------------------


def served_routes(app: falcon.App) -> dict[tuple[str, str], object]:
    """Every (method, URI template) the app answers with a responder of its own."""
    routes: dict[tuple[str, str], object] = {}

    def walk(nodes: list[Any]) -> Iterator[Any]:
        for node in nodes:
            yield node
            yield from walk(node.children)

    for node in walk(app._router._roots):
        if node.resource is None:
            continue
        for method in METHODS:
            if callable(getattr(node.resource, f"on_{method.lower()}", None)):
                routes[(method, node.uri_template)] = node.resource
    return routes


TEMPLATE_FIELD = re.compile(r"{(\w+)(?::(\w+))?[^}]*}")


def openapi_path(template: str) -> tuple[str, list[dict[str, Any]]]:
    """`/a/{id:uuid}` → (`/a/{id}`, its path parameters with their converter's schema)."""
    params = []
    for name, converter in TEMPLATE_FIELD.findall(template):
        schema: dict[str, Any] = {"type": "string"}
        if converter == "uuid":
            schema["format"] = "uuid"
        elif converter == "int":
            schema = {"type": "integer"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return TEMPLATE_FIELD.sub(r"{\1}", template), params


# -- building -----------------------------------------------------------------------------


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error(status: int) -> dict[str, Any]:
    headers = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if status in (429, 503):
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return {
        "description": ERROR_TEXT.get(status, "Error"),
        "headers": headers,
        "content": {JSON: {"schema": _ref(s.Error)}},
    }


def error_responses() -> dict[str, Any]:
    """`#/components/responses/Error<status>`: one envelope response per error status."""
    return {f"Error{status}": _error(status) for status in sorted(ERROR_TEXT)}


def _success(
    answer: type[BaseModel] | str | tuple[str, ...] | None, limited: bool
) -> dict[str, Any]:
    headers = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if limited:
        headers.update({name: {"$ref": f"#/components/headers/{name}"} for name in LIMIT_HEADERS})
    out: dict[str, Any] = {"description": "OK", "headers": headers}
    if isinstance(answer, (str, tuple)):
        media = (answer,) if isinstance(answer, str) else answer
        out["content"] = {m: {"schema": {"type": "object"}} if m == JSON else {} for m in media}
    elif answer is not None:
        out["content"] = {JSON: {"schema": _ref(answer)}}
        out["description"] = (answer.__doc__ or answer.__name__).strip().splitlines()[0]
    else:
        out["description"] = "Done; no body"
    return out


def operation(method: str, template: str, op: Op, resource: object) -> dict[str, Any]:
    """One operation: the table's `op` plus what the resource and the template say."""
    auth = getattr(resource, "auth", {}) or {}
    need = auth.get(method)
    path, params = openapi_path(template)
    for param in params:
        param["schema"] = dict((op.path_schemas or {}).get(param["name"], param["schema"]))
    limited = need not in (None, "internal")
    errors = {500, 503, *op.errors}
    in_org = need not in OPEN and need not in USER_NEEDS  # member, admin, owner, auditor...
    if need not in OPEN:
        errors |= {401, 403}
    if limited:
        errors.add(429)
    if params:
        errors.add(404)
    if op.query:
        errors.add(400)
    if in_org:
        errors.add(400)  # a user in several organizations must send X-Tenant-ID
    if method in WRITES and need not in OPEN:
        errors.add(409)  # a concurrent change won (also for idempotent replays)
    if op.body is not None:
        errors |= {400, 413, 415, 422}
    parameters = [*params, *(p.render() for p in (*op.query, *op.headers))]
    if in_org:
        tenant = "which of the caller's organizations (users in several)"
        parameters.append(header("X-Tenant-ID", tenant).render())
    if method == "POST" and getattr(resource, "idempotent", True):
        replay = "1-255 chars; the same key and body within 24 h replays the first answer"
        parameters.append(header("Idempotency-Key", replay, minLength=1, maxLength=255).render())
        errors |= {400, 409}
    responses: dict[str, Any] = {
        str(status): _success(answer, limited) for status, answer in sorted(op.answers.items())
    }
    for status in sorted(errors - set(op.answers)):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "tags": [op.tag or _tag(path)],
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if need is not None:
        out["description"] = (op.description + f"\n\nAccess: `{need}`.").strip()
    if parameters:
        out["parameters"] = parameters
    if need in USER_NEEDS:
        out["security"] = USER_SECURITY
    elif in_org:
        out["security"] = ORG_SECURITY
    else:
        out["security"] = []
    if op.body is not None:
        schema = dict(op.body) if isinstance(op.body, Mapping) else _ref(op.body)
        out["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": schema}}}
    return out


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def _tag(path: str) -> str:
    return path.removeprefix("/api/v1").strip("/").split("/")[0] or "root"


def models(operations: Mapping[tuple[str, str], Op]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {s.Error.__name__: s.Error}
    for op in operations.values():
        candidates: list[object] = [op.body, *op.answers.values()]
        for model in candidates:
            if isinstance(model, type) and issubclass(model, BaseModel):
                found.setdefault(model.__name__, model)
    return list(found.values())


def components(operations: Mapping[tuple[str, str], Op]) -> dict[str, Any]:
    """Every model's JSON Schema, nested ones included, under `#/components/schemas`."""
    _, top = models_json_schema(
        [(model, "validation") for model in models(operations)],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(top.get("$defs", {}).items()))


def document(
    app: falcon.App, operations: Mapping[tuple[str, str], Op] = OPERATIONS
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `app`: every operation of `operations`, with the auth,
    parameters and errors its served resource implies."""
    served = served_routes(app)
    paths: dict[str, dict[str, Any]] = {}
    for (method, template), op in operations.items():
        path, _ = openapi_path(template)
        resource = served.get((method, template))
        paths.setdefault(path, {})[method.lower()] = operation(method, template, op, resource)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Flowledger",
            "version": VERSION,
            "description": "Event-sourced, queue-driven backend for running n8n workflows. "
            "Every error is the `Error` envelope; lists are `{items, total, limit, offset}`.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components(operations),
            "responses": error_responses(),
            "securitySchemes": SECURITY_SCHEMES,
            "headers": HEADERS,
        },
    }
