"""Unique keys (email, tenant id, API key hash, invoice id) as tiny aggregates."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.ids import index_id


class Index(Aggregate):
    """Claims `key` of `kind` for the aggregate `ref`; a second claim fails on save."""

    @staticmethod
    def create_id(kind: str, key: str, **_: Any) -> UUID:
        return index_id(kind, key)

    @event("Claimed")
    def __init__(self, kind: str, key: str, ref: UUID) -> None:
        self.kind = kind
        self.key = key
        self.ref = ref
        self.released = False

    @event("Released")
    def release(self) -> None:
        self.released = True
