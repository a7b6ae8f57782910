"""The library's PostgreSQL recorder, with its hot statements composed once.

`PostgresApplicationRecorder` builds its SQL with `psycopg.sql` objects and composes them
for every call: the table lock and `NOTIFY` of every save, and the read of an aggregate's
events on every load and every fast-forward of a cached aggregate (two or three per API
request). Composing was a tenth of a request's CPU, and the dict rows of the reads more.
Here the same statements are composed to text once, reads of an aggregate's events take
tuple rows, and everything else is the library's own (selected with
`APPLICATION_RECORDER_TOPIC`, so the library builds and configures it as usual).

The `NOTIFY` of a save also names the aggregates it saved (`events.freshness`): every process
then knows which of its cached aggregates are still current without asking the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import InterfaceError, OperationalError
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Identifier, Literal

from events.freshness import payload


class FlowledgerRecorder(PostgresApplicationRecorder):
    """`PostgresApplicationRecorder` with composed-once statements and tuple-row reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._texts: dict[str, str] = {}
        table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        columns = "SELECT originator_version, topic, state FROM {0} WHERE originator_id = %s"
        self._statements: dict[str, Composable] = {
            "events": SQL(columns + " ORDER BY originator_version ASC").format(table),
            "events_after": SQL(
                columns + " AND originator_version > %s ORDER BY originator_version ASC"
            ).format(table),
            "notify": SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
            "notify_with": SQL("SELECT pg_notify({0}, %s)").format(Literal(self.channel_name)),
        }
        for i, statement in enumerate(self.lock_table_statements):
            assert isinstance(statement, Composable)
            self._statements[f"lock_{i}"] = statement
        self._statements["insert"] = self.insert_events_statement

    def _text(self, name: str, conn: Any) -> str:
        text = self._texts.get(name)
        if text is None:
            text = self._texts[name] = self._statements[name].as_string(conn)
        return text

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        if lte is not None or desc or limit is not None:  # rare shapes: the library's own
            return super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            if gt is None:
                curs.execute(self._text("events", conn), (originator_id,), prepare=True)
            else:
                curs.execute(self._text("events_after", conn), (originator_id, gt), prepare=True)
            return [
                StoredEvent(originator_id, version, topic, bytes(state))
                for version, topic, state in curs.fetchall()
            ]

    def _lock_table(self, curs: Any) -> None:
        for i in range(len(self.lock_table_statements)):
            curs.execute(self._text(f"lock_{i}", curs.connection), prepare=True)

    def _notify_channel(self, curs: Any, names: str = "") -> None:
        """The library's NOTIFY, with the saved aggregates' ids as its payload (one
        statement text whatever the payload: `pg_notify` with a parameter)."""
        if names:
            with curs.connection.cursor() as other:  # its result row is not the insert's
                other.execute(self._text("notify_with", curs.connection), (names,), prepare=True)
        else:
            curs.execute(self._text("notify", curs.connection))

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        ids = [e.originator_id for e in stored_events]
        self._notify_channel(curs, payload([i if isinstance(i, UUID) else UUID(i) for i in ids]))
        pg_stored_events = [
            self.construct_pg_stored_event(
                e.originator_id, e.originator_version, e.topic, e.state
            )
            for e in stored_events
        ]
        curs.execute(self._text("insert", curs.connection), (pg_stored_events,))
