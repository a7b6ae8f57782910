"""The provider-key vault: store, update, rotate, delete (shred), record usage, read.

The clear key lives only in the request that brings it and in the answer of the internal
secret read: it is sealed before any event is made (`events.vault`), held as a `SecretStr`
(so a repr or a validation error never shows it) and never logged. Deleting shreds the data
keys first, then records `Deleted`: a crash in between leaves a key whose secret is already
unreadable (fail closed), and a repeated DELETE completes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar
from uuid import UUID

import structlog
from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from commands.base import Command, retry_on_conflict, serialised
from events.application import Flowledger
from events.errors import NotFound
from events.provider_key import MICROS, KeyDeleted, ProviderKey, hint_of, month_of
from events.vault import SecretShredded

log = structlog.get_logger()
T = TypeVar("T")

#: How far in the future a usage record's `at` may be (clock skew of the reporter).
FUTURE_SKEW = timedelta(minutes=5)


def _clear_key(value: Any) -> Any:
    """A provider key: 8 to 4096 printable characters, no spaces (never echoed back)."""
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not 8 <= len(value) <= 4096:
        raise ValueError("must be 8 to 4096 characters long")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("must not contain spaces or control characters")
    return SecretStr(value)


Secret = Annotated[SecretStr, BeforeValidator(_clear_key)]
#: Money as the API sends it (a JSON number); exact in micro-units (see events.provider_key).
Money = Annotated[Decimal, Field(ge=0, le=10**9, max_digits=16, decimal_places=6)]
Provider = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
KeyName = Annotated[str, Field(min_length=1, max_length=200)]
Models = Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=100)]


def micros(amount: Decimal) -> int:
    return int(amount * MICROS)


def money(amount_micros: int | None) -> float | None:
    """Micro-units as the API's number: 4500000 → 4.5 (exact for ≤ 15 significant digits)."""
    return None if amount_micros is None else amount_micros / MICROS


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _in_future(value: datetime | None) -> datetime | None:
    value = _utc(value)
    if value is not None and value <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return value


def _not_null(value: T | None) -> T:
    if value is None:
        raise ValueError("may not be null")
    return value


class SecretCommand(Command):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class CreateProviderKey(SecretCommand):
    provider: Provider
    key_name: KeyName
    api_key: Secret
    models: Models = Field(default_factory=list)
    usage_limit_monthly: Money | None = None
    expires_at: datetime | None = None

    _expires = field_validator("expires_at")(_in_future)

    @field_validator("usage_limit_monthly")
    @classmethod
    def _positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than 0 (or null for no limit)")
        return value


class UpdateProviderKey(SecretCommand):
    """The contract's fields, plus `models` and `expires_at` (null removes the expiry)."""

    key_name: KeyName | None = None
    api_key: Secret | None = None
    is_active: bool | None = Field(None, strict=True)
    usage_limit_monthly: Money | None = None
    models: Models | None = None
    expires_at: datetime | None = None

    _expires = field_validator("expires_at")(_in_future)
    _required = field_validator("key_name", "api_key", "is_active", "models")(_not_null)
    _positive = CreateProviderKey._positive


class RotateProviderKey(SecretCommand):
    new_api_key: Secret


class RecordUsage(Command):
    requests_count: int = Field(ge=0, le=10**9, strict=True)
    tokens_used: int = Field(ge=0, le=10**12, strict=True)
    cost: Money
    at: datetime | None = None

    @field_validator("at")
    @classmethod
    def _not_ahead(cls, value: datetime | None) -> datetime | None:
        value = _utc(value)
        if value is not None and value > datetime.now(UTC) + FUTURE_SKEW:
            raise ValueError("must not be in the future")
        return value


def key_of(app: Flowledger, org_id: UUID, key_id: UUID) -> ProviderKey:
    """A key of this organization that is not deleted; any other is not found."""
    key = app.owned(key_id, ProviderKey, org_id, "provider key")
    if key.deleted:
        raise NotFound("provider key not found", key_id=str(key_id))
    return key


def _sealing(app: Flowledger, secret: SecretStr | None, then: Callable[[Any], T]) -> T:
    """Seal `secret` once, run `then(sealed)`; a refused command shreds the unused key."""
    sealed = app.vault.seal(secret.get_secret_value()) if secret is not None else None
    try:
        return then(sealed)
    except BaseException:
        if sealed is not None:
            app.vault.shred(sealed["key_id"])
        raise


def create_provider_key(app: Flowledger, org_id: UUID, cmd: CreateProviderKey) -> ProviderKey:
    limit = cmd.usage_limit_monthly

    def store(sealed: dict[str, str]) -> ProviderKey:
        key = ProviderKey(
            organization_id=org_id,
            provider=cmd.provider,
            key_name=cmd.key_name,
            api_key=sealed,
            key_hint=hint_of(cmd.api_key.get_secret_value()),
            models=list(dict.fromkeys(cmd.models)),
            usage_limit_micros=None if limit is None else micros(limit),
            expires_at=cmd.expires_at,
        )
        app.save(key)
        return key

    key = _sealing(app, cmd.api_key, store)
    log.info("provider_key.created", key_id=str(key.id), provider=cmd.provider)
    return key


def update_provider_key(
    app: Flowledger,
    org_id: UUID,
    key_id: UUID,
    cmd: UpdateProviderKey,
    now: datetime | None = None,
) -> ProviderKey:
    """A new `api_key` counts as a rotation (new data key, the old one shredded)."""
    hint = hint_of(cmd.api_key.get_secret_value()) if cmd.api_key is not None else None
    return _sealing(
        app, cmd.api_key, lambda sealed: _update(app, org_id, key_id, cmd, sealed, hint, now)
    )


@retry_on_conflict()
def _update(
    app: Flowledger,
    org_id: UUID,
    key_id: UUID,
    cmd: UpdateProviderKey,
    sealed: dict[str, str] | None,
    hint: str | None,
    now: datetime | None,
) -> ProviderKey:
    now = now or datetime.now(UTC)
    key = key_of(app, org_id, key_id)
    given = cmd.model_dump(exclude_unset=True, exclude={"api_key", "is_active"})
    changes: dict[str, Any] = {}
    for name in ("key_name", "expires_at"):
        if name in given and given[name] != getattr(key, name):
            changes[name] = given[name]
    if "models" in given and list(dict.fromkeys(given["models"])) != key.models:
        changes["models"] = list(dict.fromkeys(given["models"]))
    if "usage_limit_monthly" in given:
        limit = given["usage_limit_monthly"]
        limit_micros = None if limit is None else micros(limit)
        if limit_micros != key.usage_limit_micros:
            changes["usage_limit_micros"] = limit_micros
    if changes:
        key.update(changes)
    if cmd.is_active is True and not key.is_active(now):
        key.enable()
    elif cmd.is_active is False and key.enabled:
        key.disable()
    elif "usage_limit_micros" in changes:
        key.check_limit(month_of(now))  # a limit lowered below this month's cost
    if sealed is not None and hint is not None:
        key.rotate(api_key=sealed, key_hint=hint, at=now)
    app.save(key)
    if sealed is not None:
        _shred_retired(app, key)
    return key


def rotate_provider_key(
    app: Flowledger, org_id: UUID, key_id: UUID, cmd: RotateProviderKey, now: datetime | None = None
) -> ProviderKey:
    hint = hint_of(cmd.new_api_key.get_secret_value())
    return _sealing(
        app, cmd.new_api_key, lambda sealed: _rotate(app, org_id, key_id, sealed, hint, now)
    )


@retry_on_conflict()
def _rotate(
    app: Flowledger,
    org_id: UUID,
    key_id: UUID,
    sealed: dict[str, str],
    hint: str,
    now: datetime | None,
) -> ProviderKey:
    key = key_of(app, org_id, key_id)
    key.rotate(api_key=sealed, key_hint=hint, at=now or datetime.now(UTC))
    app.save(key)
    _shred_retired(app, key)
    log.info("provider_key.rotated", key_id=str(key.id))
    return key


def _shred_retired(app: Flowledger, key: ProviderKey) -> None:
    """After the new secret is saved: the old ones become unrecoverable (idempotent, so
    a crash before this point is made good by the next rotation or the delete)."""
    for data_key in key.retired_data_keys:
        app.vault.shred(data_key)


@retry_on_conflict()
def delete_provider_key(app: Flowledger, org_id: UUID, key_id: UUID) -> None:
    key = key_of(app, org_id, key_id)
    shredded = key.data_key_ids()
    for data_key in shredded:
        app.vault.shred(data_key)
    key.delete(shredded=shredded)
    app.save(key)
    log.info("provider_key.deleted", key_id=str(key_id), shredded=len(shredded))


@retry_on_conflict()
def record_usage(
    app: Flowledger, org_id: UUID, key_id: UUID, cmd: RecordUsage, now: datetime | None = None
) -> tuple[ProviderKey, bool]:
    """Add one usage record; pause the key once when its month reached the limit.

    Returns the key and whether this record reached the limit. Records on a paused or
    disabled key are still taken: the provider bills them whatever the key's state.
    """
    at = cmd.at or now or datetime.now(UTC)
    with serialised(key_id):
        key = key_of(app, org_id, key_id)
        key.record_usage(
            requests_count=cmd.requests_count,
            tokens_used=cmd.tokens_used,
            cost_micros=micros(cmd.cost),
            at=at,
        )
        reached = key.check_limit(month_of(at))
        app.save(key)
    if reached:
        log.warning("provider_key.limit_reached", key_id=str(key_id), month=month_of(at))
    return key, reached


@retry_on_conflict()
def read_secret(
    app: Flowledger, key_id: UUID, reader: dict[str, str], now: datetime | None = None
) -> str:
    """The clear key, for n8n (internal): recorded in the log before it is returned.

    Refuses deleted (shredded), disabled, paused and expired keys; nothing is written then.
    """
    now = now or datetime.now(UTC)
    with serialised(key_id):
        key = app.find(key_id, ProviderKey)
        if key is None:
            raise NotFound("provider key not found", key_id=str(key_id))
        key.check_readable(now)
        try:
            clear = app.vault.open(key.api_key)
        except SecretShredded:
            message = "this provider key's secret was shredded"
            raise KeyDeleted(message, key_id=str(key_id)) from None
        key.record_read(reader=reader, at=now)
        app.save(key)
    log.info("provider_key.secret_read", key_id=str(key_id), via=reader.get("via"))
    return clear
