"""The read side's database: read models, tracking positions, data keys, idempotency keys.

One small interface over PostgreSQL (psycopg 3 pool) and SQLite, so every projection's SQL
is written once. SQL uses psycopg's `%s` / `%(name)s` placeholders; for SQLite they are
rewritten to `?` / `:name`. Portable SQL only: `INSERT ... ON CONFLICT`, TEXT timestamps in
RFC 3339 (they sort as text), JSON as TEXT.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from flowledger.settings import Settings

Row = dict[str, Any]
SCHEMA_LOCK_KEY = 0x466C6F77  # "Flow"
_SQLITE_SCHEMA_LOCK = threading.RLock()
_NAMED = re.compile(r"%\((\w+)\)s")


class Cursor(Protocol):
    dialect: str  # "postgres" or "sqlite", for the rare statement that differs

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]: ...

    # Many rows at once. `executemany`: one statement, many parameter rows
    # (psycopg pipelines them; sqlite3 loops in C). `copy_rows`: append new rows to a table
    # (PostgreSQL `COPY`, several times faster; SQLite `executemany`); no conflict handling.
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None: ...


class Database:
    """Transactions that commit as one, on either backend."""

    def __init__(self, settings: Settings) -> None:
        self.dialect = "postgres" if settings.is_postgres else "sqlite"
        if self.dialect == "postgres":
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool

            self._url = settings.database_url.replace("postgres://", "postgresql://", 1)
            self._pool = ConnectionPool(
                self._url,
                min_size=1,
                max_size=settings.db_pool_max,
                kwargs={"autocommit": True, "row_factory": dict_row},
                open=True,
            )
        else:
            self._path = settings.sqlite_path
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._local = threading.local()

    # -- connections --------------------------------------------------------------------

    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """Everything executed inside commits together, or not at all."""
        if self.dialect == "postgres":
            with self._pool.connection() as conn, conn.transaction():
                yield PgCursor(conn)
        else:
            lite = self._sqlite()
            lite.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteCursor(lite)
            except BaseException:
                lite.execute("ROLLBACK")
                raise
            lite.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        """One statement outside any explicit transaction (reads, single writes)."""
        if self.dialect == "postgres":
            with self._pool.connection() as conn:
                return PgCursor(conn).execute(sql, params)
        return _SqliteCursor(self._sqlite()).execute(sql, params)

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def script(self, statements: Sequence[str]) -> None:
        """Create tables: idempotent DDL, in one transaction, one process at a time."""
        with self.schema_lock(), self.transaction() as cur:
            for statement in statements:
                cur.execute(statement)

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Serialise schema creation across processes.

        `CREATE TABLE IF NOT EXISTS` is not safe when several processes start at once on a
        new database (PostgreSQL raises a duplicate pg_type key), so they take turns.
        """
        if self.dialect != "postgres":
            with _SQLITE_SCHEMA_LOCK:
                yield
            return
        with self.dedicated_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))

    @contextmanager
    def dedicated_connection(self, dict_rows: bool = False) -> Iterator[Any]:
        """A connection held for a long time (advisory locks, LISTEN); Postgres only."""
        import psycopg
        from psycopg.rows import dict_row

        kwargs: dict[str, Any] = {"row_factory": dict_row} if dict_rows else {}
        with psycopg.connect(self._url, autocommit=True, **kwargs) as conn:
            yield conn

    def close(self) -> None:
        if self.dialect == "postgres":
            self._pool.close()
        else:
            local: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if local is not None:
                local.close()
                self._local.conn = None


def pg_cursor(conn: Any) -> Cursor:
    """A `Cursor` on a dedicated PostgreSQL connection opened with `dict_rows=True`."""
    return PgCursor(conn)


class PgCursor:
    """A `Cursor` on one PostgreSQL connection opened with `dict_rows=True`."""

    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        with self._conn.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall()) if cur.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(sql, rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with (
                self._conn.cursor() as cur,
                cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)


class _SqliteCursor:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        cur = self._conn.execute(_sqlite_sql(sql), params)
        return [dict(row) for row in cur.fetchall()] if cur.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(_sqlite_sql(sql), rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(columns))
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _sqlite_sql(sql: str) -> str:
    return _NAMED.sub(r":\1", sql).replace("%s", "?").replace("%%", "%")
