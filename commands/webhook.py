"""Outgoing webhooks: endpoints (secrets shown once) and their deliveries' attempts."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import structlog
from eventsourcing.persistence import IntegrityError, RecordConflictError
from pydantic import Field, field_validator

from commands.base import Command, retry_on_conflict
from events.application import Flowledger
from events.delivery import Delivery, delivery_id
from events.webhook_endpoint import WebhookEndpoint, WebhookSubscriptions, subscriptions_id

log = structlog.get_logger()

#: The contract's event types, plus `webhook.test` (the ping of `/test`).
EVENT_TYPES = frozenset(
    {
        "execution.started",
        "execution.completed",
        "execution.failed",
        "execution.timed_out",
        "execution.cancelled",
        "execution.rejected",
        "workflow.created",
        "workflow.updated",
        "post.scheduled",
        "post.published",
        "post.failed",
        "engagement.threshold",
        "account.connected",
        "account.disconnected",
        "credits.granted",
        "credits.low_balance",
        "credits.depleted",
        "api_key.limit_reached",
        "event.received",
        "webhook.test",
    }
)
#: An endpoint whose deliveries have all failed for this long is disabled.
FAILING_LIMIT = timedelta(hours=24)

Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")]


def _check_types(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - EVENT_TYPES - {"*"})
    if unknown:
        raise ValueError(f"unknown event types: {', '.join(unknown)}")
    return list(dict.fromkeys(value))


class CreateEndpoint(Command):
    url: Url
    event_types: list[str] = Field(min_length=1, max_length=50)
    description: str | None = Field(None, max_length=500)
    max_attempts: int = Field(4, ge=1, le=10)

    _types = field_validator("event_types")(_check_types)


class UpdateEndpoint(Command):
    url: Url | None = None
    event_types: list[str] | None = Field(None, min_length=1, max_length=50)
    description: str | None = Field(None, max_length=500)
    max_attempts: int | None = Field(None, ge=1, le=10)
    is_active: bool | None = None

    _types = field_validator("event_types")(_check_types)


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (Standard Webhooks)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoint_of(app: Flowledger, org_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
    """An endpoint of this organization that is not archived (others are not found)."""
    return app.owned(endpoint_id, WebhookEndpoint, org_id, "webhook endpoint")


@retry_on_conflict()
def create_endpoint(
    app: Flowledger, org_id: UUID, cmd: CreateEndpoint
) -> tuple[WebhookEndpoint, str]:
    """The endpoint and its clear secret (the only time it is returned)."""
    secret = new_secret()
    endpoint = WebhookEndpoint(
        organization_id=org_id,
        url=cmd.url,
        event_types=cmd.event_types,
        description=cmd.description,
        max_attempts=cmd.max_attempts,
        secret=app.vault.seal(secret),
    )
    registry = app.find(subscriptions_id(org_id), WebhookSubscriptions)
    registry = registry or WebhookSubscriptions(organization_id=org_id)
    registry.add(endpoint.id)
    app.save(endpoint, registry)
    log.info("webhook.endpoint_created", endpoint_id=str(endpoint.id), url=cmd.url)
    return endpoint, secret


@retry_on_conflict()
def update_endpoint(
    app: Flowledger, org_id: UUID, endpoint_id: UUID, cmd: UpdateEndpoint
) -> WebhookEndpoint:
    endpoint = endpoint_of(app, org_id, endpoint_id)
    changes = cmd.model_dump(exclude_unset=True, exclude={"is_active"})
    changes = {k: v for k, v in changes.items() if v is not None or k == "description"}
    if changes:
        endpoint.update(changes)
    if cmd.is_active is True and not endpoint.is_active:
        endpoint.enable()
    elif cmd.is_active is False and endpoint.is_active:
        endpoint.disable("by an admin")
    app.save(endpoint)
    return endpoint


@retry_on_conflict()
def rotate_endpoint_secret(
    app: Flowledger, org_id: UUID, endpoint_id: UUID
) -> tuple[WebhookEndpoint, str]:
    endpoint = endpoint_of(app, org_id, endpoint_id)
    secret = new_secret()
    endpoint.rotate_secret(app.vault.seal(secret))
    app.save(endpoint)
    return endpoint, secret


@retry_on_conflict()
def archive_endpoint(app: Flowledger, org_id: UUID, endpoint_id: UUID) -> None:
    endpoint = endpoint_of(app, org_id, endpoint_id)
    endpoint.archive()
    registry = app.load(subscriptions_id(org_id), WebhookSubscriptions, "webhook endpoint")
    registry.remove(endpoint.id)
    app.save(endpoint, registry)


def endpoints_of(app: Flowledger, org_id: UUID) -> list[WebhookEndpoint]:
    """The organization's endpoints (not archived), from the write side; read-only objects."""
    registry = app.current(subscriptions_id(org_id), WebhookSubscriptions)
    if registry is None:
        return []
    found = [app.current(i, WebhookEndpoint) for i in registry.endpoint_ids]
    return [e for e in found if e is not None and not e.archived]


def endpoint_secret(app: Flowledger, endpoint: WebhookEndpoint) -> str:
    """The endpoint's clear secret; each sealed secret is opened once in a process.

    Keyed by the sealed value's own data-key id (a new one for every seal), not by the
    endpoint's version: the key and the value come from the same sealed dict, so the cache
    can never pair a rotated secret with an old one, even while another thread brings the
    shared cached endpoint up to date. A rotation seals a new secret: used at once.
    """
    sealed = endpoint.secret
    secret = _secrets.get(sealed["key_id"])
    if secret is None:
        secret = app.vault.open(sealed)
        if len(_secrets) >= _SECRETS_MAX:
            _secrets.clear()
        _secrets[sealed["key_id"]] = secret
    return secret


_SECRETS_MAX = 10_000
_secrets: dict[str, str] = {}


def create_deliveries(
    app: Flowledger,
    endpoints: Sequence[WebhookEndpoint],
    event_id: UUID,
    event_type: str,
    payload: dict[str, Any],
) -> list[UUID]:
    """One delivery per endpoint, saved together; a repeat (same event) creates nothing.

    Returns every delivery id, new or already there, so the caller can (re)send them all.
    The first fan-out of an event finds none of its deliveries, so they are saved without
    looking first; only a repeat (the store refuses the existing ids) looks them up.
    """
    ids = [delivery_id(e.id, event_id) for e in endpoints]
    try:
        _save_deliveries(app, endpoints, event_id, event_type, payload)
    except IntegrityError:  # a repeated fan-out: save only the deliveries not there yet
        fresh = [e for e, i in zip(endpoints, ids, strict=True) if app.find(i, Delivery) is None]
        with contextlib.suppress(IntegrityError):  # a concurrent copy saved them first
            _save_deliveries(app, fresh, event_id, event_type, payload)
        log.info("webhook.fan_out_repeated", event_id=str(event_id), new=len(fresh))
    return ids


def _save_deliveries(
    app: Flowledger,
    endpoints: Sequence[WebhookEndpoint],
    event_id: UUID,
    event_type: str,
    payload: dict[str, Any],
) -> None:
    deliveries = [
        Delivery(
            endpoint_id=e.id,
            organization_id=e.organization_id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            max_attempts=e.max_attempts,
        )
        for e in endpoints
    ]
    if deliveries:
        app.save(*deliveries)


@retry_on_conflict()
def record_delivery_attempt(
    app: Flowledger,
    delivery_id: UUID,
    *,
    at: datetime,
    status_code: int | None,
    duration_ms: int,
    error: str | None,
    next_attempt_at: datetime | None,
) -> Delivery:
    """Record one POST; `next_attempt_at` None after a failure makes the delivery dead."""
    delivery = app.load(delivery_id, Delivery, "delivery")
    _record(delivery, at, status_code, duration_ms, error, next_attempt_at)
    app.save(delivery)
    return delivery


def record_attempt_on(
    app: Flowledger,
    delivery: Delivery,
    *,
    at: datetime,
    status_code: int | None,
    duration_ms: int,
    error: str | None,
    next_attempt_at: datetime | None,
    save: Callable[[Delivery], object] | None = None,
) -> Delivery:
    """`record_delivery_attempt` on the delivery the caller loaded for the attempt (no
    second load), saved by `save` (default `app.save`). If the delivery changed meanwhile
    (a conflict: a redelivery was requested, a copy of the message ran), the attempt is
    recorded again on the current delivery, as `record_delivery_attempt` does."""
    _record(delivery, at, status_code, duration_ms, error, next_attempt_at)
    try:
        (save or app.save)(delivery)
    except RecordConflictError:
        return record_delivery_attempt(
            app,
            delivery.id,
            at=at,
            status_code=status_code,
            duration_ms=duration_ms,
            error=error,
            next_attempt_at=next_attempt_at,
        )
    return delivery


def _record(
    delivery: Delivery,
    at: datetime,
    status_code: int | None,
    duration_ms: int,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    from projections.formats import iso

    succeeded = error is None
    delivery.record_attempt(
        at=iso(at),
        status_code=status_code,
        duration_ms=duration_ms,
        error=error,
        succeeded=succeeded,
        next_attempt_at=None if succeeded or next_attempt_at is None else iso(next_attempt_at),
    )


@retry_on_conflict()
def note_endpoint_outcome(
    app: Flowledger, endpoint_id: UUID, succeeded: bool, now: datetime | None = None
) -> WebhookEndpoint:
    """Track failing streaks; disable an endpoint that failed everything for 24 h."""
    now = now or datetime.now(UTC)
    endpoint = app.load(endpoint_id, WebhookEndpoint, "webhook endpoint")
    since = endpoint.failing_since
    if succeeded and since is not None:
        endpoint.recover()
    elif not succeeded and since is None:
        endpoint.start_failing(now)
    elif (
        not succeeded and since is not None and endpoint.is_active and now - since >= FAILING_LIMIT
    ):
        endpoint.disable("every delivery failed for 24 h")
        log.warning("webhook.endpoint_disabled", endpoint_id=str(endpoint_id))
    else:
        return endpoint
    app.save(endpoint)
    return endpoint


@retry_on_conflict()
def request_redelivery(app: Flowledger, org_id: UUID, delivery_id: UUID) -> Delivery:
    """A new round of attempts for a delivery of this organization."""
    delivery = app.owned(delivery_id, Delivery, org_id, "delivery")
    delivery.request_redelivery()
    app.save(delivery)
    return delivery
