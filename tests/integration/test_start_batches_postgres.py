"""Starting several queued runs together, on PostgreSQL: `Flowledger.read_many` and
`start_executions`.

Proven: `read_many` of several aggregates is one query on the events table (the statements
psycopg sends, counted) and returns the aggregates of the asked kind only, each with all its
events; `start_executions` records the starts, rejections and debits of a whole batch,
across organizations, in ONE transaction (the new rows share one `xmin`). The embedded
store's tests of the same handlers (`tests/unit/test_start_batches.py`) run here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from uuid import UUID, uuid4

import psycopg
import pytest

from commands.credits import account_of
from commands.execution import start_execution, start_executions
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.execution import Execution
from events.ids import credit_account_id
from flowledger.settings import Settings
from tests.conftest import fresh_database, postgres_app
from tests.support.log import statements_sent
from tests.unit.test_start_batches import (
    organization,
    queued,
    test_a_batch_of_runs_already_started_changes_nothing,
    test_a_missing_run_fails_the_batch_with_not_found_and_starts_nothing,
    test_a_run_already_past_queued_is_returned_untouched,
    test_an_account_pays_the_runs_in_batch_order_and_rejects_what_it_cannot,
    test_an_id_of_another_kind_is_not_a_run,
    test_read_many_gives_fresh_objects_free_to_change,
    test_read_many_returns_the_aggregates_of_the_asked_kind_only,
    test_runs_of_two_organizations_start_together_each_account_debited,
    test_the_runs_returned_are_the_callers_own_not_the_cached_ones,
    test_the_same_run_twice_in_a_batch_is_started_once_by_its_first_runner,
    workflow,
)

__all__ = [
    "test_a_batch_of_runs_already_started_changes_nothing",
    "test_a_missing_run_fails_the_batch_with_not_found_and_starts_nothing",
    "test_a_run_already_past_queued_is_returned_untouched",
    "test_an_account_pays_the_runs_in_batch_order_and_rejects_what_it_cannot",
    "test_an_id_of_another_kind_is_not_a_run",
    "test_read_many_gives_fresh_objects_free_to_change",
    "test_read_many_returns_the_aggregates_of_the_asked_kind_only",
    "test_runs_of_two_organizations_start_together_each_account_debited",
    "test_the_runs_returned_are_the_callers_own_not_the_cached_ones",
    "test_the_same_run_twice_in_a_batch_is_started_once_by_its_first_runner",
]

TABLE = "flowledger_events"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database("flowledger_starts") as found:
        yield found


@pytest.fixture
def app(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flowledger]:
    with postgres_app(url, tmp_path_factory.mktemp("var")) as application:
        yield application


@pytest.fixture
def sql(url: str) -> Iterator[psycopg.Connection]:
    """A plain connection of the test's own (autocommit)."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def transactions_writing(
    conn: psycopg.Connection, originator_ids: Sequence[UUID], after: int
) -> int:
    """How many transactions wrote these aggregates' events after notification id `after`."""
    row = conn.execute(
        f"SELECT count(DISTINCT xmin::text) FROM {TABLE}"
        " WHERE originator_id = ANY(%s) AND notification_id > %s",
        (list(originator_ids), after),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_read_many_is_one_query_for_several_aggregates(
    app: Flowledger, sql: psycopg.Connection
) -> None:
    org = organization(app)
    wf = workflow(app, org, 10)
    first, second, third = queued(app, org, wf, 3)
    start_execution(app, second, "m2")  # a second event for one of them
    with statements_sent(TABLE) as ran:
        found = app.read_many([first, second, org.id, third, uuid4(), wf.id], Execution)
    assert sum(ran.values()) == 1, ran
    assert set(found) == {first, second, third}
    assert [found[i].status for i in (first, second, third)] == ["queued", "running", "queued"]
    assert found[second].version == 2 and found[second].runner == "m2"


def test_a_batch_of_starts_is_one_transaction_across_organizations(
    app: Flowledger, sql: psycopg.Connection
) -> None:
    one, two = organization(app), organization(app)  # 100 credits each
    a, b, c = queued(app, one, workflow(app, one, 40), 3)
    (d,) = queued(app, two, workflow(app, two, 30))
    at = app.recorder.max_notification_id() or 0
    started = start_executions(app, [(a, "ma"), (d, "md"), (b, "mb"), (c, "mc")])
    assert [e.status for e in started] == ["running", "running", "running", "rejected"]
    accounts = [credit_account_id(one.id), credit_account_id(two.id)]
    written = [a, b, c, d, *accounts]
    assert transactions_writing(sql, written, at) == 1
    row = sql.execute(
        f"SELECT count(*), count(DISTINCT originator_id) FROM {TABLE}"
        " WHERE notification_id > %s",
        (at,),
    ).fetchone()
    assert row == (7, 6)  # 3 starts, 1 rejection, 3 debits (2 + 1), of 4 runs and 2 accounts
    assert (account_of(app, one.id).balance, account_of(app, two.id).balance) == (20, 70)


def test_separate_starts_are_separate_transactions(
    app: Flowledger, sql: psycopg.Connection
) -> None:
    """The counting itself tells one save from several: two starts are two transactions."""
    org = organization(app)
    first, second = queued(app, org, workflow(app, org, 10), 2)
    at = app.recorder.max_notification_id() or 0
    start_execution(app, first, "m1")
    start_execution(app, second, "m2")
    assert transactions_writing(sql, [first, second, credit_account_id(org.id)], at) == 2


def test_another_processs_start_is_seen_by_the_next_batch(
    app: Flowledger, url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two workers (two applications on one database): the second's batch reads the runs
    and the account from the store, so it neither starts a run twice nor overspends."""
    other = Flowledger(
        Settings(
            database_url=url,
            jwt_secret="test-jwt-secret-" + uuid.uuid4().hex,
            var_dir=tmp_path_factory.mktemp("var"),
        )
    )
    try:
        org = organization(app)  # 100 credits
        a, b, c = queued(app, org, workflow(app, org, 40), 3)
        assert account_of(other, org.id).balance == 100  # cached by the other worker
        assert [e.status for e in start_executions(app, [(a, "w1"), (b, "w1")])] == [
            "running",
            "running",
        ]
        again = start_executions(other, [(b, "w2"), (c, "w2")])
        assert [(e.status, e.runner) for e in again] == [("running", "w1"), ("rejected", None)]
        assert other.load(credit_account_id(org.id), CreditAccount).balance == 20
    finally:
        other.close()
        other.db.close()
