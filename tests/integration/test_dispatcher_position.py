"""The dispatcher's tracking position on PostgreSQL (`workers.dispatcher.dispatcher`, a
`projections.runner.Follower` reading the whole log, `filter_in_sql=False`, with an `idle`
callback), sending to the real Redis broker.

Proven here:
* a follower that reads the whole log and drops other topics itself hands exactly the
  events of its topics, and ends at the log's top, as the SQL-filtered follower does;
* the dispatcher caught up (`catch_up()`, then its `idle` callback, as `run` calls it)
  has its position at the log's top even when the last events are of topics it does not
  route, after enqueueing the routed events' messages on Redis; a new dispatcher starts
  from there and finds nothing to send;
* running (`run` in a thread), it records the log's top by itself once it has caught up,
  and again after more events it does not route.

Each test has a database and a broker namespace of its own (keys deleted afterwards).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import redis
from dramatiq.message import Message

from commands.execution import ExecuteWorkflow, queue_execution
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.execution import Execution
from flowledger.settings import Settings
from projections.runner import Follower, Item, position, topic_of
from tests.conftest import fresh_database
from tests.support.waiting import until
from workers import broker as broker_setup

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flowledger]:
    """The application on a new PostgreSQL database; the global broker on Redis, in a
    namespace of its own; the actors declared on it."""
    namespace = f"fl-test-{uuid4().hex[:8]}"
    with fresh_database() as url:
        settings = Settings(
            database_url=url,
            jwt_secret="test-jwt-secret-" + uuid4().hex,
            var_dir=tmp_path,
            redis_url=REDIS_URL,
            broker_namespace=namespace,
        )
        broker = broker_setup.setup(settings)
        import workers.actors  # noqa: F401  (after the broker: the import-order rule)

        application = Flowledger(settings)
        try:
            yield application
        finally:
            application.close()
            application.db.close()
            broker.client.close()  # type: ignore[attr-defined]
            broker_setup.setup(Settings())  # the in-process broker again, for what follows
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def user(app: Flowledger, name: str) -> UUID:
    user_id: UUID = register_user(
        app, RegisterUser(email=f"{name}@example.com", password="x" * 12, full_name="O")
    ).id
    return user_id


def a_queued_run(app: Flowledger, tenant: str = "acme") -> UUID:
    org = create_organization(
        app, user(app, tenant), CreateOrganization(name="A", tenant_id=tenant)
    ).organization
    wf = register_workflow(
        app, org.id, RegisterWorkflow(name="w", webhook_url="http://127.0.0.1:9/webhook/sync")
    )
    run_id: UUID = queue_execution(app, org.id, tenant, wf.id, ExecuteWorkflow()).id
    return run_id


def top(app: Flowledger) -> int:
    return app.recorder.max_notification_id() or 0


def last_topic(app: Flowledger) -> str:
    [last] = app.recorder.select_notifications(start=top(app), limit=1)
    return last.topic


def test_reading_the_whole_log_hands_only_the_topics_and_ends_at_the_top(
    app: Flowledger,
) -> None:
    a_queued_run(app, "one")
    a_queued_run(app, "two")
    user(app, "last-of-the-log")  # not of the follower's topic
    topics = frozenset({topic_of(Execution.Queued)})
    assert last_topic(app) not in topics
    seen: dict[bool, list[int]] = {True: [], False: []}
    ends: dict[bool, list[int]] = {True: [], False: []}
    for in_sql in (True, False):

        def handle(items: list[Item], last: int, in_sql: bool = in_sql) -> None:
            assert all(isinstance(i.event, Execution.Queued) for i in items)
            seen[in_sql].extend(i.position for i in items)
            ends[in_sql].append(last)

        follower = Follower(
            app, f"probe-{in_sql}", handle, topics=topics, batch=3, filter_in_sql=in_sql
        )
        follower.catch_up()
        assert not follower.step()  # caught up: nothing new
    assert len(seen[False]) == 2 and seen[False] == seen[True]
    assert ends[False][-1] == ends[True][-1] == top(app)
    assert len(ends[False]) > 1  # several whole-log batches of 3, some without its topic
    assert ends[False] == sorted(ends[False])


def test_the_caught_up_dispatcher_is_at_the_top_even_after_events_it_does_not_route(
    app: Flowledger,
) -> None:
    from workers.dispatcher import NAME, dispatcher
    from workers.execution import call_n8n

    run_id = a_queued_run(app)
    user(app, "not-routed-1")
    user(app, "not-routed-2")
    follower = dispatcher(app)
    assert follower.topics is not None and last_topic(app) not in follower.topics
    follower.catch_up()
    assert follower.idle is not None
    follower.idle()  # what `run` calls once caught up
    assert position(app.db, NAME) == top(app)

    client = redis.Redis.from_url(REDIS_URL)
    try:
        queue = f"{app.settings.broker_namespace}:{call_n8n.queue_name}"
        sent = [Message.decode(m) for m in client.hvals(f"{queue}.msgs")]
    finally:
        client.close()
    calls = [m for m in sent if m.actor_name == "call_n8n"]
    assert [m.args for m in calls] == [(str(run_id),)]  # sent before the position moved

    again = dispatcher(app)  # a restart: from the recorded position
    assert not again.step()


def test_the_running_dispatcher_records_the_top_once_caught_up(app: Flowledger) -> None:
    from workers.dispatcher import NAME, dispatcher

    a_queued_run(app)
    follower = dispatcher(app)
    thread = threading.Thread(target=follower.run, name="test-dispatcher", daemon=True)
    thread.start()
    try:
        until(lambda: position(app.db, NAME) == top(app), timeout=10, what="the log's top")
        for n in range(3):  # events it reads and does not route: the position still moves
            user(app, f"quiet-{n}")
        assert last_topic(app) not in (follower.topics or ())
        expected = top(app)
        until(lambda: position(app.db, NAME) == expected, timeout=10, what="the new top")
    finally:
        follower.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
