"""A provider's API key (OpenAI, Anthropic, ...) kept for an organization: the vault.

The key enters the log only sealed (`events.vault`: AES-GCM, a data key per secret), so
shredding its data key makes every copy in the log unreadable while the history stays
intact. Rotation seals the new key under a new data key and retires the old one (shredded).

Money (usage cost, the monthly limit) is integer micro-units (1 = 0.000001 of the
currency) in every event and in the read model: sums are exact, and the API's numbers
(`4.50`) convert to and from them without rounding (at most 6 decimal places are accepted).

A month is a UTC calendar month (`2026-11`). When a month's cost reaches the limit the key
is paused until that month ends (`Paused`, once per month and limit); an admin can resume it
earlier (`Enabled`). Every read of the clear key (by n8n, `SecretRead`) is an event, so
auditors see who read it and when.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.errors import DomainError

MICROS = 1_000_000


class KeyDeleted(DomainError):
    """The key was deleted: its secret was shredded and can never be read again."""

    code = "KEY_DELETED"


class KeyInactive(DomainError):
    """Disabled by an admin, or paused because the month's usage limit was reached."""

    code = "KEY_INACTIVE"


class KeyExpired(DomainError):
    code = "KEY_EXPIRED"


def month_of(at: datetime) -> str:
    """`2026-11`: the UTC calendar month usage of `at` counts against."""
    return at.astimezone(UTC).strftime("%Y-%m")


def month_after(month: str) -> datetime:
    """The first instant of the month after `month` (when a pause for `month` ends)."""
    year, number = (int(part) for part in month.split("-"))
    year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    return datetime(year, number, 1, tzinfo=UTC)


def _rfc3339(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def hint_of(api_key: str) -> str:
    """`...abcd`: enough to recognise a key, never enough to use it."""
    return "..." + api_key[-4:]


class ProviderKey(Aggregate):
    class Created(Aggregate.Created):
        organization_id: UUID
        provider: str
        key_name: str
        api_key: dict[str, str]
        key_hint: str
        models: list[str]
        usage_limit_micros: int | None
        expires_at: datetime | None

    @event(Created)
    def __init__(
        self,
        organization_id: UUID,
        provider: str,
        key_name: str,
        api_key: dict[str, str],
        key_hint: str,
        models: list[str],
        usage_limit_micros: int | None,
        expires_at: datetime | None,
    ) -> None:
        self.organization_id = organization_id
        self.provider = provider
        self.key_name = key_name
        self.api_key = api_key  # sealed by events.vault, never clear text
        self.key_hint = key_hint
        self.models = models
        self.usage_limit_micros = usage_limit_micros
        self.expires_at = expires_at
        self.enabled = True
        self.paused_until: datetime | None = None
        self.rotated_at: datetime | None = None
        self.last_used_at: datetime | None = None
        self.deleted = False
        self.monthly_micros: dict[str, int] = {}  # month → cost
        self.limit_reached: list[str] = []  # months whose limit was reached (this limit)
        self.retired_data_keys: list[str] = []  # data keys of replaced secrets (shredded)

    # -- what it is now ---------------------------------------------------------------------

    def is_paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def is_active(self, now: datetime) -> bool:
        """Usable now: enabled, not paused for the month, not expired, not deleted."""
        return self.enabled and not self.deleted and not self.is_paused(now)

    def usage_micros(self, now: datetime) -> int:
        """This month's cost so far."""
        return self.monthly_micros.get(month_of(now), 0)

    def data_key_ids(self) -> list[str]:
        """Every data key that ever sealed this key's secret (what deleting shreds)."""
        return [*self.retired_data_keys, self.api_key["key_id"]]

    def check_readable(self, now: datetime) -> None:
        key_id = str(self.id)
        if self.deleted:
            raise KeyDeleted("this provider key was deleted; its secret is shredded", key_id=key_id)
        if not self.enabled:
            raise KeyInactive("this provider key is disabled", key_id=key_id, reason="disabled")
        if self.is_paused(now):
            raise KeyInactive(
                "this provider key is paused: its monthly usage limit was reached",
                key_id=key_id,
                reason="usage_limit_reached",
                paused_until=_rfc3339(self.paused_until),
            )
        if self.is_expired(now):
            expired = _rfc3339(self.expires_at)
            raise KeyExpired("this provider key has expired", key_id=key_id, expires_at=expired)

    # -- changes ----------------------------------------------------------------------------

    class Updated(Aggregate.Event):
        """`changes` holds key_name, models, usage_limit_micros, expires_at (any subset)."""

        changes: dict[str, Any]

    @event(Updated)
    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            setattr(self, name, value)
        if "usage_limit_micros" in changes:
            self.limit_reached = []  # a new limit is reached anew

    class Rotated(Aggregate.Event):
        api_key: dict[str, str]
        key_hint: str
        at: datetime

    @event(Rotated)
    def rotate(self, api_key: dict[str, str], key_hint: str, at: datetime) -> None:
        self.retired_data_keys.append(self.api_key["key_id"])
        self.api_key = api_key
        self.key_hint = key_hint
        self.rotated_at = at

    class Enabled(Aggregate.Event):
        pass

    @event(Enabled)
    def enable(self) -> None:
        """By an admin: also lifts a pause for the usage limit."""
        self.enabled = True
        self.paused_until = None

    class Disabled(Aggregate.Event):
        pass

    @event(Disabled)
    def disable(self) -> None:
        self.enabled = False

    class UsageRecorded(Aggregate.Event):
        requests_count: int
        tokens_used: int
        cost_micros: int
        at: datetime

    @event(UsageRecorded)
    def record_usage(
        self, requests_count: int, tokens_used: int, cost_micros: int, at: datetime
    ) -> None:
        month = month_of(at)
        self.monthly_micros[month] = self.monthly_micros.get(month, 0) + cost_micros
        if self.last_used_at is None or at > self.last_used_at:
            self.last_used_at = at

    def check_limit(self, month: str) -> bool:
        """Pause the key (once per month and limit) when `month`'s cost reached the limit;
        True when this call paused it."""
        limit, cost = self.usage_limit_micros, self.monthly_micros.get(month, 0)
        if limit is None or cost < limit or month in self.limit_reached:
            return False
        self._paused(month=month, cost_micros=cost, limit_micros=limit, until=month_after(month))
        return True

    class Paused(Aggregate.Event):
        """The month's usage limit was reached (the `api_key.limit_reached` webhook)."""

        month: str
        cost_micros: int
        limit_micros: int
        until: datetime

    @event(Paused)
    def _paused(self, month: str, cost_micros: int, limit_micros: int, until: datetime) -> None:
        self.limit_reached.append(month)
        if self.paused_until is None or until > self.paused_until:
            self.paused_until = until

    class SecretRead(Aggregate.Event):
        """Who read the clear key: `reader` holds via, request_id, remote_addr and the
        n8n workflow/execution ids the caller named (never the secret)."""

        reader: dict[str, str]
        at: datetime

    @event(SecretRead)
    def record_read(self, reader: dict[str, str], at: datetime) -> None:
        if self.last_used_at is None or at > self.last_used_at:
            self.last_used_at = at

    class Deleted(Aggregate.Event):
        """`shredded` names the data keys deleted with it (the secret is unrecoverable)."""

        shredded: list[str]

    @event(Deleted)
    def delete(self, shredded: list[str]) -> None:
        self.deleted = True
        self.enabled = False
