"""A batch's rows of one table, read once, changed in memory, written back with one statement.

Projections that get many events per row (an execution's queued, started, completed, the
credit account's every debit) fold a whole batch of events into their rows this way: one
`SELECT ... IN (...)` for the rows the batch touches, the handlers applied in log order to
the dicts, then one `executemany` upsert of the changed rows (PostgreSQL pipelines it). A
rebuild replaying a million events then writes each row once per batch, not once per event,
and the rows are exactly what applying the events one by one in SQL would have left.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from flowledger.db import Cursor
from projections.formats import dumps, loads

CHUNK = 500  # keys per `IN (...)`: well under SQLite's limit of bound parameters


class RowMemory:
    """The rows a sole writer of some tables wrote, kept across batches (a rebuild).

    A rebuild fills its own fresh tables and nobody else writes them, so a row it wrote
    recently is in memory and a key it never wrote is not in the table: `Rows.load` then
    asks PostgreSQL only for rows written long ago and evicted here. Without that `SELECT`
    per batch, the pipelined writes never wait (a read in pipeline mode waits for every write
    sent before it). Up to `capacity` rows per table are kept, the most recently written.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self.recent: dict[str, dict[str, dict[str, Any]]] = {}  # table → key → row
        self.written: dict[str, set[str]] = {}  # table → every key in it

    def unknown(self, table: str, keys: list[str], into: dict[str, dict[str, Any]]) -> list[str]:
        """Put the remembered rows of `keys` into `into`; the keys only the table has."""
        recent = self.recent.get(table, {})
        written = self.written.get(table, set())
        missing = []
        for key in keys:
            row = recent.get(key)
            if row is not None:
                into[key] = row
            elif key in written:
                missing.append(key)
        return missing

    def wrote(self, table: str, rows: dict[str, dict[str, Any]], deleted: set[str]) -> None:
        recent = self.recent.setdefault(table, {})
        written = self.written.setdefault(table, set())
        for key in deleted:
            recent.pop(key, None)
            written.discard(key)
        for key, row in rows.items():
            recent.pop(key, None)  # re-inserted last: the dict keeps write order
            recent[key] = row
            written.add(key)
        excess = len(recent) - self.capacity
        if excess > 0:  # the oldest first: a dict keeps write order
            for key in list(islice(recent, excess)):
                del recent[key]


class Rows:
    """The rows of `table` keyed by `key`; `json` columns are held decoded."""

    def __init__(
        self, cur: Cursor, table: str, key: str, json: Iterable[str] = (), keys: Iterable[Any] = ()
    ) -> None:
        self.cur = cur
        self.table = table
        self.key = key
        self.json = frozenset(json)
        self.rows: dict[str, dict[str, Any]] = {}
        self.stored: set[str] = set()  # keys the table already holds (loaded or remembered)
        self.changed: dict[str, None] = {}  # an ordered set
        self.deleted: set[str] = set()
        self.absent: set[str] = set()  # keys asked for that the table did not hold
        # A rebuild's cursor remembers what it wrote (see RowMemory); others have none.
        self.memory: RowMemory | None = getattr(cur, "row_memory", None)
        self.load(keys)

    def load(self, keys: Iterable[Any]) -> None:
        asked = wanted = sorted({str(k) for k in keys} - self.rows.keys())
        if self.memory is not None:
            wanted = self.memory.unknown(self.table, asked, self.rows)
            self.stored.update(k for k in asked if k in self.rows)
        if wanted:
            self._select(wanted)
        self.absent.update(k for k in asked if k not in self.rows)

    def _select(self, wanted: list[str]) -> None:
        if self.cur.dialect == "postgres":  # one array parameter: no query of 5,000 `%s`
            found = self.cur.execute(
                f"SELECT * FROM {self.table} WHERE {self.key} = ANY(%s)", (wanted,)
            )
        else:
            found = []
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ", ".join(["%s"] * len(chunk))
                found += self.cur.execute(
                    f"SELECT * FROM {self.table} WHERE {self.key} IN ({marks})", chunk
                )
        for row in found:
            for name in self.json:
                row[name] = loads(row[name])
            key = str(row[self.key])
            self.rows[key] = row
            self.stored.add(key)

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.rows.get(str(key))

    def after(self, key: Any, position: int) -> dict[str, Any] | None:
        """The row if it exists and has not seen `position` yet (else a replay: skip)."""
        row = self.rows.get(str(key))
        return row if row is not None and row["position"] < position else None

    def insert(self, row: dict[str, Any]) -> None:
        """Add a complete row unless the key exists (`ON CONFLICT DO NOTHING`)."""
        key = str(row[self.key])
        if key not in self.rows:
            self.rows[key] = row
            self.changed[key] = None
            self.deleted.discard(key)

    def delete(self, key: Any) -> None:
        """Forget the row, here and (at `write`) in the table, unless the table never held
        it (a row inserted and deleted within the batch, such as a short run's)."""
        key = str(key)
        self.rows.pop(key, None)
        self.changed.pop(key, None)
        if key not in self.absent:
            self.deleted.add(key)

    def update(self, row: dict[str, Any], **columns: Any) -> None:
        row.update(columns)
        self.changed[str(row[self.key])] = None

    def write(self) -> None:
        """Delete the deleted rows, then upsert every changed row; rows of the same columns
        go in one `executemany`. With a `RowMemory` (a rebuild), rows the table is known not
        to hold go in by `COPY` instead, several times cheaper for PostgreSQL."""
        fresh: set[str] = set()  # rows the table cannot hold: never written, not loaded
        if self.memory is not None:
            known = self.memory.written.get(self.table, set())
            fresh = {k for k in self.changed if k not in self.stored and k not in known}
            self.memory.wrote(self.table, {k: self.rows[k] for k in self.changed}, self.deleted)
        if self.deleted:
            self.cur.executemany(
                f"DELETE FROM {self.table} WHERE {self.key} = %s", [[k] for k in self.deleted]
            )
            self.stored -= self.deleted
            self.deleted.clear()
        upserts: dict[tuple[str, ...], list[list[Any]]] = {}
        copies: dict[tuple[str, ...], list[list[Any]]] = {}
        for key in self.changed:
            row = self.rows[key]
            names = tuple(row)
            values = list(row.values())
            for i, name in enumerate(names):
                if name in self.json:
                    values[i] = dumps(values[i])
            (copies if key in fresh else upserts).setdefault(names, []).append(values)
        for names, values in copies.items():
            self.cur.copy_rows(self.table, names, values)
        for names, values in upserts.items():
            updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != self.key)
            self.cur.executemany(
                f"INSERT INTO {self.table} ({', '.join(names)})"
                f" VALUES ({', '.join(['%s'] * len(names))})"
                f" ON CONFLICT ({self.key}) DO UPDATE SET {updates}",
                values,
            )
        self.stored.update(self.changed)
        self.absent.difference_update(self.changed)
        self.changed.clear()
