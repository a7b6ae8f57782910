"""The event store's recorder on PostgreSQL (`events.recorder.FlowledgerRecorder`).

Proven: a save returns its events' notification ids in order; it is one statement (a call
of `<events table>_insert`, nothing else touches the table) and one transaction; it takes
the table lock, so it waits behind a writer holding the lock a plain insert takes; saving a
version that exists raises RecordConflictError and writes (and notifies) nothing; the
NOTIFY of a save names exactly its aggregates, each once, up to the payload limit, and
"*" beyond it; the reads of an aggregate's events (all of them, or after a version) return
what the library's own `PostgresApplicationRecorder` returns. On a database of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import RecordConflictError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from events.application import Flowledger
from events.freshness import EVERYTHING, MAX_PAYLOAD
from events.index import Index
from events.recorder import FlowledgerRecorder
from tests.conftest import fresh_database, postgres_app
from tests.support.log import statements_sent
from tests.support.waiting import until

TABLE = "flowledger_events"
CHANNEL = "flowledger_events"
TOPIC = "tests.recorder:Event"  # never resolved: these tests stay at the recorder's level


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database("flowledger_recorder") as found:
        yield found


@pytest.fixture(scope="module")
def app(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flowledger]:
    with postgres_app(url, tmp_path_factory.mktemp("var")) as application:
        yield application


@pytest.fixture
def recorder(app: Flowledger) -> FlowledgerRecorder:
    assert isinstance(app.recorder, FlowledgerRecorder)
    return app.recorder


@pytest.fixture
def sql(url: str) -> Iterator[psycopg.Connection]:
    """A plain connection of the test's own (autocommit)."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def listener(url: str) -> Iterator[psycopg.Connection]:
    """A connection listening on the events table's channel from now on."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def events(*versions: tuple[UUID, int]) -> list[StoredEvent]:
    return [StoredEvent(i, v, TOPIC, f"{i}:{v}".encode()) for i, v in versions]


def next_payload(listener: psycopg.Connection) -> str:
    """The payload of the next notification on the channel (fails if none comes)."""
    heard = list(listener.notifies(timeout=10, stop_after=1))
    assert heard, "no notification within 10 s"
    return heard[0].payload


def transactions_of(conn: psycopg.Connection, notification_ids: Sequence[int]) -> int:
    """How many transactions wrote the rows of these notification ids."""
    row = conn.execute(
        f"SELECT count(DISTINCT xmin::text) FROM {TABLE} WHERE notification_id = ANY(%s)",
        (list(notification_ids),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_application_records_with_our_recorder(app: Flowledger) -> None:
    assert type(app.recorder) is FlowledgerRecorder
    assert app.recorder.channel_name == CHANNEL


def test_a_save_returns_the_notification_ids_of_its_events_in_order(
    recorder: FlowledgerRecorder,
) -> None:
    x, y = uuid4(), uuid4()
    saved = events((x, 1), (y, 1), (x, 2), (x, 3))
    ids = recorder.insert_events(saved)
    assert ids is not None and len(ids) == 4
    assert list(ids) == list(range(ids[0], ids[0] + 4))  # ascending, one each, no gap
    found = recorder.select_notifications(start=ids[0], limit=10, stop=ids[-1])
    assert [n.id for n in found] == list(ids)
    assert [(n.originator_id, n.originator_version) for n in found] == [
        (e.originator_id, e.originator_version) for e in saved
    ]
    assert [n.state for n in found] == [e.state for e in saved]
    assert recorder.max_notification_id() == ids[-1]


def test_a_save_of_nothing_records_nothing(recorder: FlowledgerRecorder) -> None:
    before = recorder.max_notification_id()
    assert list(recorder.insert_events([]) or []) == []
    assert recorder.max_notification_id() == before


def test_a_save_is_one_statement_and_one_transaction(
    recorder: FlowledgerRecorder, sql: psycopg.Connection
) -> None:
    with statements_sent(TABLE) as ran:
        ids = recorder.insert_events(events((uuid4(), 1), (uuid4(), 1), (uuid4(), 1)))
    assert list(ran.values()) == [1], ran
    (statement,) = ran
    assert f'"{TABLE}_insert"' in statement
    assert ids is not None and transactions_of(sql, ids) == 1


def test_a_save_takes_the_table_lock(
    recorder: FlowledgerRecorder, url: str, sql: psycopg.Connection
) -> None:
    """A plain INSERT's ROW EXCLUSIVE lock held elsewhere does not stop another plain
    insert, but it does stop a save: the save asks for the EXCLUSIVE table lock first."""
    saved: list[Sequence[int] | None] = []
    with psycopg.connect(url) as holder:  # a transaction holding the lock until commit
        holder.execute(f"LOCK TABLE {TABLE} IN ROW EXCLUSIVE MODE")
        saver = threading.Thread(
            target=lambda: saved.append(recorder.insert_events(events((uuid4(), 1)))),
            daemon=True,
        )
        saver.start()
        until(
            lambda: sql.execute(
                "SELECT 1 FROM pg_locks WHERE relation = %s::regclass"
                " AND mode = 'ExclusiveLock' AND NOT granted",
                (TABLE,),
            ).fetchone(),
            what="the save waiting for the table lock",
        )
        assert not saved
        holder.commit()
    saver.join(timeout=10)
    assert not saver.is_alive() and saved and len(saved[0] or []) == 1


def test_saving_a_version_that_exists_raises_a_conflict_and_writes_nothing(
    recorder: FlowledgerRecorder, listener: psycopg.Connection
) -> None:
    taken, new = uuid4(), uuid4()
    recorder.insert_events(events((taken, 1)))
    assert next_payload(listener) == str(taken)
    before = recorder.max_notification_id()
    with pytest.raises(RecordConflictError):
        recorder.insert_events(events((new, 1), (taken, 1)))
    assert recorder.select_events(new) == []
    assert [e.originator_version for e in recorder.select_events(taken)] == [1]
    assert recorder.max_notification_id() == before
    after = uuid4()
    recorder.insert_events(events((after, 1)))
    assert next_payload(listener) == str(after)  # the failed save notified nothing


def test_the_notification_of_a_save_names_exactly_its_aggregates(
    recorder: FlowledgerRecorder, listener: psycopg.Connection
) -> None:
    x, y, z = uuid4(), uuid4(), uuid4()
    recorder.insert_events(events((x, 1), (y, 1), (x, 2), (z, 1), (y, 2)))
    assert next_payload(listener) == f"{x},{y},{z}"  # each once, in the order of the save


def test_the_notification_of_an_application_save_names_its_aggregates(
    app: Flowledger, listener: psycopg.Connection
) -> None:
    first = Index(kind="test", key=f"k-{uuid4()}", ref=uuid4())
    second = Index(kind="test", key=f"k-{uuid4()}", ref=uuid4())
    recordings = app.save(first, second)
    assert [r.notification.id for r in recordings] == sorted(r.notification.id for r in recordings)
    assert set(next_payload(listener).split(",")) == {str(first.id), str(second.id)}


def test_a_save_names_as_many_aggregates_as_fit_in_a_payload_and_everything_beyond(
    recorder: FlowledgerRecorder, listener: psycopg.Connection
) -> None:
    fit = (MAX_PAYLOAD + 1) // 37  # 36 characters an id, and a comma between two
    many = [uuid4() for _ in range(fit)]
    recorder.insert_events(events(*((i, 1) for i in many)))
    assert next_payload(listener).split(",") == [str(i) for i in many]
    too_many = [uuid4() for _ in range(fit + 1)]
    recorder.insert_events(events(*((i, 1) for i in too_many)))
    assert next_payload(listener) == EVERYTHING


def test_a_save_of_very_many_aggregates_names_everything(
    recorder: FlowledgerRecorder, listener: psycopg.Connection
) -> None:
    ids = recorder.insert_events(events(*((uuid4(), 1) for _ in range(1000))))
    assert ids is not None and len(ids) == 1000
    assert next_payload(listener) == EVERYTHING


def test_reads_of_an_aggregate_return_what_the_librarys_recorder_returns(
    recorder: FlowledgerRecorder,
) -> None:
    x, other = uuid4(), uuid4()
    recorder.insert_events(events((x, 1), (other, 1), (x, 2)))
    recorder.insert_events(events((x, 3), (x, 4), (other, 2), (x, 5)))

    def library(**options: int | bool) -> Sequence[StoredEvent]:
        return PostgresApplicationRecorder.select_events(recorder, x, **options)  # type: ignore[arg-type]

    everything = recorder.select_events(x)
    assert everything == library()
    assert [e.originator_version for e in everything] == [1, 2, 3, 4, 5]
    assert all(type(e.originator_id) is UUID and type(e.state) is bytes for e in everything)
    for gt in (0, 1, 3, 5, 9):
        assert recorder.select_events(x, gt=gt) == library(gt=gt), gt
    assert recorder.select_events(x, gt=3) == everything[3:]
    # the rarer shapes are the library's own
    assert recorder.select_events(x, lte=2) == library(lte=2)
    assert recorder.select_events(x, desc=True, limit=2) == library(desc=True, limit=2)
    assert recorder.select_events(x, gt=1, lte=4) == library(gt=1, lte=4)
    assert recorder.select_events(uuid4()) == [] == list(
        PostgresApplicationRecorder.select_events(recorder, uuid4())
    )


def test_the_application_loads_aggregates_through_these_reads(app: Flowledger) -> None:
    claim = Index(kind="test", key=f"k-{uuid4()}", ref=uuid4())
    app.save(claim)
    loaded = app.repository.get(claim.id, deepcopy_from_cache=False)
    assert (loaded.id, loaded.ref, loaded.version) == (claim.id, claim.ref, claim.version)
    uncached = app.read_many([claim.id], Index)[claim.id]  # one aggregate: `select_events`
    assert (uncached.id, uncached.ref, uncached.version) == (claim.id, claim.ref, 1)
