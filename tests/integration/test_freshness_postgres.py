"""Read-only lookups that trust a cached aggregate until a NOTIFY names it
(`events.freshness`, `Flowledger.cached`), on PostgreSQL.

Two applications on one database stand for two processes. Proven: a change saved by the
other process shows in `cached` once this process's listener has heard its NOTIFY; this
process's own saves (`save` and the group commit) show in `cached` at once; with
`trust_notified_cache=False` every lookup reads what the store holds, even a change that
no NOTIFY announced; a payload naming everything ("*") brings every cached aggregate up to
date. What is not asserted is staleness: how long a change goes unheard is up to the
scheduler, so the tests wait (bounded) for freshness, never for a stale answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from commands.credits import GrantCredits, grant_credits
from commands.execution import start_executions
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.execution import Execution
from events.ids import credit_account_id
from flowledger.settings import Settings
from tests.conftest import fresh_database
from tests.support.waiting import until
from tests.unit.test_start_batches import organization, queued, workflow

CHANNEL = "flowledger_events"
#: `make(**settings)`: a new application on the test database (another "process").
Make = Callable[..., Flowledger]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database("flowledger_freshness") as found:
        yield found


@pytest.fixture
def make(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Make]:
    """Applications on the test database, each standing for a process; closed after."""
    made: list[Flowledger] = []

    def make(**options: object) -> Flowledger:
        var_dir: Path = tmp_path_factory.mktemp("var")
        settings = Settings(
            database_url=url,
            jwt_secret="test-jwt-secret-" + uuid.uuid4().hex,
            var_dir=var_dir,
            **options,  # type: ignore[arg-type]
        )
        made.append(Flowledger(settings))
        return made[-1]

    yield make
    for app in made:
        app.close()
        app.db.close()


def listening(app: Flowledger) -> Flowledger:
    """The application, once its listener is up (the first lookup starts it)."""
    freshness = app.freshness
    assert freshness is not None
    until(lambda: freshness.mark() is not None, timeout=15, what="the listener to listen")
    return app


def balance(app: Flowledger, org_id: UUID) -> int | None:
    account = app.cached(credit_account_id(org_id), CreditAccount)
    return None if account is None else account.balance


def status(app: Flowledger, execution_id: UUID) -> str | None:
    execution = app.cached(execution_id, Execution)
    return None if execution is None else execution.status


def changed_unannounced(url: str, writer: Flowledger, org_id: UUID, amount: int) -> None:
    """Grant credits by writing the events into the table directly, with no NOTIFY: a
    change committed that no listener hears of."""
    account = writer.load(credit_account_id(org_id), CreditAccount)
    account.grant(amount, kind="grant")
    stored = [writer.mapper.to_stored_event(e) for e in account.collect_events()]
    with psycopg.connect(url) as conn:  # one transaction, committed on leaving
        for event in stored:
            conn.execute(
                "INSERT INTO flowledger_events (originator_id, originator_version, topic, state)"
                " VALUES (%s, %s, %s, %s)",
                (event.originator_id, event.originator_version, event.topic, event.state),
            )


def test_postgres_applications_trust_notified_caches_by_default(make: Make) -> None:
    assert make().freshness is not None
    assert make(trust_notified_cache=False).freshness is None


def test_another_processs_change_shows_once_its_notify_is_heard(make: Make) -> None:
    a, b = make(), make()
    org = organization(b)  # 100 credits
    assert balance(a, org.id) == 100
    listening(a)
    assert balance(a, org.id) == 100  # cached, read after the listener listens
    grant_credits(b, org.id, GrantCredits(amount=50))
    until(lambda: balance(a, org.id) == 150, what="A to see B's grant")
    grant_credits(b, org.id, GrantCredits(amount=7))  # and again: the trust is renewed
    until(lambda: balance(a, org.id) == 157, what="A to see B's second grant")


def test_a_change_to_another_aggregate_leaves_the_cached_one_right(make: Make) -> None:
    a, b = make(), make()
    one, two = organization(b), organization(b)
    listening(a)
    assert (balance(a, one.id), balance(a, two.id)) == (100, 100)
    grant_credits(b, two.id, GrantCredits(amount=5))
    until(lambda: balance(a, two.id) == 105, what="A to see B's grant")
    assert balance(a, one.id) == 100


def test_own_saves_show_at_once(make: Make) -> None:
    a = make()
    org = organization(a)
    listening(a)
    assert balance(a, org.id) == 100
    grant_credits(a, org.id, GrantCredits(amount=25))  # `app.save` of the account
    assert balance(a, org.id) == 125


def test_own_group_commits_show_at_once(make: Make) -> None:
    a = make()
    org = organization(a)
    first, second = queued(a, org, workflow(a, org, 10), 2)
    listening(a)
    assert balance(a, org.id) == 100
    assert [status(a, i) for i in (first, second)] == ["queued", "queued"]
    start_executions(a, [(first, "m1"), (second, "m2")])  # saved through `save_grouped`
    assert balance(a, org.id) == 80
    assert [status(a, i) for i in (first, second)] == ["running", "running"]


def test_another_processs_group_commit_shows_once_heard(make: Make) -> None:
    a, b = make(), make()
    org = organization(b)
    first, second = queued(b, org, workflow(b, org, 10), 2)
    listening(a)
    assert balance(a, org.id) == 100
    assert status(a, first) == "queued"
    start_executions(b, [(first, "m1"), (second, "m2")])
    until(lambda: balance(a, org.id) == 80, what="A to see B's debits")
    until(lambda: status(a, first) == "running", what="A to see the start")


def test_without_trust_every_lookup_reads_the_store(make: Make, url: str) -> None:
    a = make(trust_notified_cache=False)
    b = make()
    org = organization(b)
    assert balance(a, org.id) == 100
    grant_credits(b, org.id, GrantCredits(amount=10))
    assert balance(a, org.id) == 110  # no waiting for any NOTIFY
    changed_unannounced(url, b, org.id, 5)
    assert balance(a, org.id) == 115  # nor does it need one


def test_a_payload_naming_everything_brings_every_cached_aggregate_up_to_date(
    make: Make, url: str
) -> None:
    a, b = make(), make()
    one, two = organization(b), organization(b)
    listening(a)
    assert (balance(a, one.id), balance(a, two.id)) == (100, 100)
    changed_unannounced(url, b, one.id, 1)
    changed_unannounced(url, b, two.id, 2)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, '*')", (CHANNEL,))
    until(
        lambda: (balance(a, one.id), balance(a, two.id)) == (101, 102),
        what="A to read both accounts again",
    )


def test_a_payload_that_is_not_ours_is_taken_as_everything(make: Make, url: str) -> None:
    a, b = make(), make()
    org = organization(b)
    listening(a)
    assert balance(a, org.id) == 100
    changed_unannounced(url, b, org.id, 3)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, 'not an aggregate id')", (CHANNEL,))
    until(lambda: balance(a, org.id) == 103, what="A to read the account again")


def test_current_always_reads_the_store_even_when_trusting(make: Make, url: str) -> None:
    """What follows the log (the dispatcher, the actors) reads with `current`: the log can be
    read before its NOTIFY is heard, so `current` never trusts the cache."""
    a, b = make(), make()
    org = organization(b)
    listening(a)
    assert balance(a, org.id) == 100  # cached and trusted from here on
    changed_unannounced(url, b, org.id, 5)
    account = a.current(credit_account_id(org.id), CreditAccount)
    assert account is not None and account.balance == 105
