"""The library's PostgreSQL recorder, with a save in one statement and reads composed once.

`PostgresApplicationRecorder` saves in a pipelined transaction of five statements (set the
lock timeout, lock the table, NOTIFY, insert, commit) and composes its `psycopg.sql`
statements for every call, as it does for the read of an aggregate's events on every load
and fast-forward. Per save that machinery was about half of an API request's CPU. Here a
save is one call of a PL/pgSQL function doing the same (created beside the library's tables,
`<events table>_insert`), reads of an aggregate's events are composed once and take tuple
rows, and everything else is the library's own (selected with `APPLICATION_RECORDER_TOPIC`,
so the library builds and configures it as usual).

The `NOTIFY` of a save also names the aggregates it saved (`events.freshness`): every process
then knows which of its cached aggregates are still current without asking the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, Notification, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Identifier, Literal

from events.freshness import payload


def notification(
    id: int, originator_id: UUID, originator_version: int, topic: str, state: bytes
) -> Notification:
    """A `Notification` without the frozen dataclass's `__init__` (five `object.__setattr__`
    calls, a tenth of a rebuild partition's reading)."""
    made = object.__new__(Notification)
    made.__dict__.update(
        id=id,
        originator_id=originator_id,
        originator_version=originator_version,
        topic=topic,
        state=state,
    )
    return made


class FlowledgerRecorder(PostgresApplicationRecorder):
    """`PostgresApplicationRecorder` with composed-once statements, tuple-row reads and
    one round trip per save."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._texts: dict[str, str] = {}
        schema = Identifier(self.datastore.schema)
        table = SQL("{0}.{1}").format(schema, Identifier(self.events_table_name))
        function = SQL("{0}.{1}").format(schema, Identifier(f"{self.events_table_name}_insert"))
        columns = "SELECT originator_version, topic, state FROM {0} WHERE originator_id = %s"
        self._statements: dict[str, Composable] = {
            "events": SQL(columns + " ORDER BY originator_version ASC").format(table),
            "events_after": SQL(
                columns + " AND originator_version > %s ORDER BY originator_version ASC"
            ).format(table),
            "insert": SQL("SELECT * FROM {0}((%s), %s)").format(function),
            "events_of": SQL(
                "SELECT originator_id, originator_version, topic, state FROM {0}"
                " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
            ).format(table),
            "after": SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM {0} WHERE notification_id > %s::bigint ORDER BY notification_id LIMIT %s"
            ).format(table),
        }
        # A save in one statement (so one round trip, autocommitted): the library's table
        # lock (commits in the order of their notification ids, so followers never pass
        # a gap), the NOTIFY naming the saved aggregates, and the insert.
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {function}(events {schema}.{event}[], names text) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
                "BEGIN "
                "PERFORM set_config('lock_timeout', {timeout}, true); "
                "LOCK TABLE {table} IN EXCLUSIVE MODE; "
                "PERFORM pg_notify({channel}, names); "
                "RETURN QUERY INSERT INTO {table} AS t "
                "(originator_id, originator_version, topic, state) "
                "SELECT originator_id, originator_version, topic, state FROM unnest(events) "
                "RETURNING notification_id; "
                "END; $BODY$"
            ).format(
                function=function,
                schema=schema,
                event=Identifier(self.stored_event_type_name),
                timeout=Literal(f"{self.datastore.lock_timeout}s"),
                table=table,
                channel=Literal(self.channel_name),
            )
        )

    def _text(self, name: str, conn: Any) -> str:
        text = self._texts.get(name)
        if text is None:
            text = self._texts[name] = self._statements[name].as_string(conn)
        return text

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The events in one transaction (the insert function's statement), their
        notification ids in order; a version already taken raises IntegrityError."""
        if not stored_events:
            return []
        rows = [
            self.construct_pg_stored_event(
                e.originator_id, e.originator_version, e.topic, e.state
            )
            for e in stored_events
        ]
        names = payload([e.originator_id for e in stored_events])  # type: ignore[misc]
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._text("insert", conn), (rows, names), prepare=True)
            return [row[0] for row in curs.fetchall()]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """The events of several aggregates, in one query, by aggregate then version."""
        return [StoredEvent(*row) for row in self._rows("events_of", (list(originator_ids),))]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications_after(self, after: int, limit: int) -> list[Notification]:
        """`select_notifications` of the whole log after a position (what the followers
        read per batch): one constant statement with tuple rows, where the library composes
        its SQL for each call and builds dict rows (a third of a follower's CPU per batch)."""
        return [notification(*row) for row in self._rows("after", (after, limit))]

    def _rows(self, name: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._text(name, conn), params, prepare=True)
            return curs.fetchall()

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
        uid = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            if gt is None:
                curs.execute(self._text("events", conn), (uid,), prepare=True)
            else:
                curs.execute(self._text("events_after", conn), (uid, gt), prepare=True)
            return [
                StoredEvent(uid, version, topic, bytes(state))
                for version, topic, state in curs.fetchall()
            ]
