"""Reading what a test's application wrote: the notification log, and the statements sent."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg

from events.application import Flowledger
from projections.runner import Item


class Log:
    """The app's notification log read in batches from where the last one ended."""

    def __init__(self, app: Flowledger) -> None:
        self.app = app
        self.position = 0

    def batch(self) -> list[Item]:
        found = self.app.recorder.select_notifications(
            start=self.position, limit=100_000, inclusive_of_start=False
        )
        items = [Item(n.id, self.app.mapper.to_domain_event(n), n) for n in found]
        if items:
            self.position = items[-1].position
        return items


@contextlib.contextmanager
def statements_sent(naming: str) -> Iterator[Counter[str]]:
    """The statements this process sends that contain `naming` (a table's name), counted
    while the block runs (psycopg's `Cursor.execute`, wrapped for the block)."""
    sent: Counter[str] = Counter()
    execute = psycopg.Cursor.execute

    def counting(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else query.as_string(self.connection)
        if naming in text:
            sent[text] += 1
        return execute(self, query, *args, **kwargs)

    psycopg.Cursor.execute = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
