"""`flowledger audit verify` and `flowledger audit export`.

`verify` recomputes the hash chain from the RAW events table (the recorder's own rows, read
in position order in large batches, not through the library's mapper) and compares it with
the `audit_chain` its read model (`AuditChainProjection`) keeps, in one consistent snapshot
of the database. The first position that differs is named: a stored event edited in SQL, a
deleted event, a chain row missing or edited. Events the projection has not chained yet are
reported as lag, not as failures.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from events.application import Flowledger
from flowledger.settings import Settings
from projections.audit import GENESIS, ITEM_COLUMNS, TABLES, canonical_id, item_json, link

BATCH = 10_000


@dataclass
class Verified:
    """What `verify` found: `first_bad` is None when every chained event matched."""

    verified: int
    seconds: float
    lag: int
    chain_top: int
    first_bad: int | None = None
    reason: str | None = None

    @property
    def per_second(self) -> float:
        return self.verified / self.seconds if self.seconds > 0 else float("nan")


class Snapshot:
    """One read-only, consistent view of the events table and the chain."""

    def __init__(self, conn: Any, dialect: str, table: str) -> None:
        self.conn, self.dialect, self.table = conn, dialect, table

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.dialect == "sqlite" else sql

    def rows(self, batch: int = BATCH, chained: bool = False) -> Iterator[list[tuple[Any, ...]]]:
        """Every stored event in position order, `batch` rows at a time: (position,
        originator id, version, topic, state), and with `chained` its chain hash (or None).

        PostgreSQL gives the id as canonical text (`uuid::text`); SQLite keeps 32 hex digits.
        """
        pg = self.dialect == "postgres"
        pos = "e.notification_id" if pg else "e.rowid"
        oid = "e.originator_id::text" if pg else "e.originator_id"
        sql = f"SELECT {pos}, {oid}, e.originator_version, e.topic, e.state"
        if chained:
            sql += f", c.hash FROM {self.table} e LEFT JOIN audit_chain c ON c.position = {pos}"
        else:
            sql += f" FROM {self.table} e"
        sql += f" ORDER BY {pos}"
        if pg:
            cur = self.conn.cursor(name="audit_raw")  # server-side: streamed, not loaded
            cur.itersize = batch
        else:
            cur = self.conn.cursor()
        cur.execute(sql)
        while rows := cur.fetchmany(batch):
            yield rows
        cur.close()

    def first_chained_between(self, low: int, high: int) -> int | None:
        """The first chain position in (low, high): a chained event no longer stored, when
        it lies between two stored events."""
        row = self.conn.execute(
            self._sql(
                "SELECT MIN(position) FROM audit_chain WHERE position > %s AND position < %s"
            ),
            (low, high),
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def chain_top(self) -> int:
        row = self.conn.execute("SELECT MAX(position) FROM audit_chain").fetchone()
        return int(row[0] or 0)


@contextmanager
def snapshot(settings: Settings) -> Iterator[Snapshot]:
    """A read-only transaction over the raw store (REPEATABLE READ on PostgreSQL)."""
    app = Flowledger(settings)  # creates the library's tables if absent, names them
    recorder: Any = app.recorder
    try:
        app.db.script(TABLES)  # an empty chain when the projection never ran
        if app.db.dialect == "postgres":
            import psycopg

            table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
            url = settings.database_url.replace("postgres://", "postgresql://", 1)
            with psycopg.connect(url) as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield Snapshot(conn, "postgres", table)
                conn.rollback()
        else:
            lite = sqlite3.connect(settings.sqlite_path, isolation_level=None)
            try:
                lite.execute("BEGIN")
                yield Snapshot(lite, "sqlite", recorder.events_table_name)
                lite.execute("ROLLBACK")
            finally:
                lite.close()
    finally:
        app.close()
        app.db.close()


DELETED = "the chain has a row for an event no longer stored"


def verify(settings: Settings, batch: int = BATCH) -> Verified:
    """Recompute the chain from the raw rows and compare it with `audit_chain`.

    One ordered pass over the events joined to their chain rows; a deleted event shows as
    a chain row between two stored ones (looked up only when something differs)."""
    started = time.perf_counter()

    def done(first_bad: int | None = None, reason: str | None = None) -> Verified:
        return Verified(seen, time.perf_counter() - started, lag, top, first_bad, reason)

    with snapshot(settings) as snap:
        top = snap.chain_top()
        sqlite = snap.dialect == "sqlite"
        previous, seen, lag, last = GENESIS, 0, 0, 0
        for rows in snap.rows(batch, chained=True):
            for position, oid, version, topic, state, expected in rows:
                if position > top:
                    lag += 1
                    continue
                if sqlite:
                    oid = canonical_id(oid)
                previous = link(previous, position, oid, version, topic, state)
                if expected != previous.hex():
                    gone = snap.first_chained_between(last, position)
                    if gone is not None:
                        return done(gone, DELETED)
                    if expected is None:
                        return done(position, "the chain has no row for this stored event")
                    return done(
                        position, "hash differs: the stored event (or its chain row) changed"
                    )
                last = position
                seen += 1
        gone = snap.first_chained_between(last, top + 1)
        return done(gone, DELETED) if gone is not None else done()


def raw_read(settings: Settings, batch: int = BATCH) -> tuple[int, float]:
    """(rows, seconds) to read every row of the events table: the ceiling of `verify`."""
    started = time.perf_counter()
    count = 0
    with snapshot(settings) as snap:
        for rows in snap.rows(batch):
            count += len(rows)
    return count, time.perf_counter() - started


def export(settings: Settings, tenant_id: str, out: Path) -> int | None:
    """Write the organization's events as `/audit/log` items with their chain hash, oldest
    first; returns how many, or None for an unknown tenant."""
    from commands.organization import organization_by_tenant

    app = Flowledger(settings)
    try:
        org = organization_by_tenant(app, tenant_id)
        if org is None:
            return None
        written, after = 0, 0
        with out.open("w", encoding="utf-8") as f:
            while rows := app.db.query(
                f"SELECT {_qualified(ITEM_COLUMNS)}, c.hash FROM audit_events e"
                " JOIN audit_chain c ON c.position = e.position"
                " WHERE e.organization_id = %s AND e.position > %s ORDER BY e.position LIMIT %s",
                (str(org.id), after, BATCH),
            ):
                for row in rows:
                    line = {**item_json(row), "hash": row["hash"]}
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                written += len(rows)
                after = int(rows[-1]["position"])
        return written
    finally:
        app.close()
        app.db.close()


def _qualified(columns: str) -> str:
    return ", ".join(f"e.{c.strip()}" for c in columns.split(","))


# -- the command line ------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """`flowledger audit verify|export`, under the CLI's subparsers."""
    audit = sub.add_parser("audit", help="verify the log's hash chain, export a tenant's log")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    commands.add_parser("verify", help="recompute the hash chain from the raw store")
    export_parser = commands.add_parser("export", help="a tenant's events as JSON lines")
    export_parser.add_argument("--tenant", required=True, help="the organization's tenant_id")
    export_parser.add_argument("--out", required=True, type=Path, help="FILE.jsonl")


def main(args: Any, settings: Settings, out: TextIO | None = None) -> int:
    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    if args.audit_command == "export":
        written = export(settings, args.tenant, args.out)
        if written is None:
            print(f"flowledger: unknown tenant {args.tenant!r}", file=sys.stderr)
            return 2
        say(f"exported {written} events of {args.tenant} to {args.out}")
        return 0
    result = verify(settings)
    say(
        f"verified {result.verified} events in {result.seconds:.2f} s"
        f" ({result.per_second:,.0f} events/s); chain top {result.chain_top}"
    )
    if result.lag:
        say(f"{result.lag} events not chained yet (projection lag), not checked")
    if result.first_bad is not None:
        say(f"MISMATCH at position {result.first_bad}: {result.reason}")
        return 1
    say("OK: every chained event matches the stored log")
    return 0
