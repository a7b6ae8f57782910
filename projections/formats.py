"""Small conversions every read model shares: timestamps, event ids, JSON columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from events.ids import NAMESPACE


def iso(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds and `Z` (`2026-01-20T10:00:00.123Z`); sorts as text."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_or_none(value: datetime | str | None) -> str | None:
    """A filter bound (datetime or RFC 3339 text) in the stored format, for comparisons."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return iso(value)


def event_id(event: Any) -> UUID:
    """A stable id for one stored event: the same on every replay and rebuild."""
    return uuid5(NAMESPACE, f"event:{event.originator_id}:{event.originator_version}")


def dumps(value: Any) -> str | None:
    """A JSON column (None stays NULL)."""
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def like(term: str) -> str:
    """A case-insensitive `LIKE %s ESCAPE '\\'` pattern matching `term` anywhere."""
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
