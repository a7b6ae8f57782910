"""The Redis broker that wakes its consumers (`workers.broker.FlowledgerRedisBroker` and
`WakingRedisConsumer`) against the real Redis, with real Dramatiq Workers in this process.

Proven here:
* an idle Worker blocked on its wake list (`poll_ms` of a minute) runs a message enqueued
  later by another broker instance within seconds: only the enqueue's wake token can do it;
* every enqueue pushes a wake token, one per queue touched by an `enqueue_many`, and a wake
  list never holds more than `WAKE_TOKENS`;
* `enqueue_many` puts a delayed message on the `.DQ` queue with its eta and the others on
  the main queue, and a Worker runs them all (the delayed one not before its eta);
* after `SCRIPT FLUSH`, `enqueue_many` loads the script again and enqueues each message once;
* a message fetched by a broker that then stops heartbeating (a dead worker) is run by a
  live Worker once that heartbeat is stale, by the maintenance of its idle fetches alone
  (both brokers have a maintenance chance of 0).

Each test has a namespace of its own (`fl-test-<hex>`), whose keys are deleted afterwards.
The brokers are made here, never set as dramatiq's global broker, and the actors are
declared on them explicitly (no actor module is imported).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import dramatiq
import pytest
import redis
from dramatiq.common import current_millis
from dramatiq.message import Message

from tests.support.waiting import until
from workers.broker import WAKE_TOKENS, FlowledgerRedisBroker

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

Maker = Callable[..., FlowledgerRedisBroker]


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    yield client
    client.close()


@pytest.fixture
def namespace(admin: redis.Redis) -> Iterator[str]:
    """A namespace for this test; every key under it is deleted afterwards."""
    name = f"fl-test-{uuid4().hex[:8]}"
    yield name
    keys = list(admin.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        admin.delete(*keys)


@pytest.fixture
def make(namespace: str) -> Iterator[Maker]:
    """`make(**options)`: a broker on this test's namespace; its connections are named after
    the namespace (so `CLIENT LIST` tells them apart) and closed after the test."""
    made: list[FlowledgerRedisBroker] = []

    def make_one(**options: Any) -> FlowledgerRedisBroker:
        broker = FlowledgerRedisBroker(
            host=REDIS_HOST,
            port=REDIS_PORT,
            db=0,
            client_name=namespace,
            namespace=namespace,
            **options,
        )
        made.append(broker)
        return broker

    yield make_one
    for broker in made:
        broker.client.close()


@contextmanager
def working(broker: FlowledgerRedisBroker, worker_timeout: int) -> Iterator[dramatiq.Worker]:
    """A Dramatiq Worker of two threads on `broker`, started as `start_embedded_worker` does
    (`process_boot` first); stopped afterwards, its blocked consumers woken to notice."""
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_timeout=worker_timeout, worker_threads=2)
    worker.start()
    try:
        yield worker
    finally:
        # Idle worker threads wait up to worker_timeout on their in-memory queue; they are
        # daemons and have nothing left to do, so the stop does not wait for them long.
        worker.stop(timeout=500)
        queues = broker.get_declared_queues() | broker.delay_queues
        for thread in worker.consumers.values():
            for queue in queues:  # a token each: a consumer blocked in BLPOP returns
                broker.client.lpush(broker.wake_key(queue), 1)
            thread.join(timeout=10)


def blocked_consumers(admin: redis.Redis, namespace: str) -> int:
    """Connections of this namespace's brokers blocked in a BLPOP right now."""
    return sum(
        1
        for client in admin.client_list()
        if client.get("name") == namespace
        and "b" in client.get("flags", "")
        and client.get("cmd") == "blpop"
    )


def plain(queue_name: str, n: int = 0) -> Message[Any]:
    """A message for an actor nobody runs (tests that only look at Redis)."""
    return Message(queue_name=queue_name, actor_name="nobody", args=(n,), kwargs={}, options={})


def ids(admin: redis.Redis, key: str) -> list[str]:
    return [raw.decode() for raw in admin.lrange(key, 0, -1)]


def test_an_idle_worker_is_woken_by_an_enqueue_not_by_its_long_wait(
    make: Maker, admin: redis.Redis, namespace: str
) -> None:
    """Consumers wait up to a minute on their wake lists; each message still runs within
    the test's 10 s bound, so it was the enqueue's wake token that ended the wait."""
    broker = make(poll_ms=60_000, delay_poll_ms=60_000)
    producer = make()  # another process's broker, in effect: same namespace, its own id
    ran: list[int] = []
    done = threading.Condition()

    @dramatiq.actor(broker=broker, queue_name="wake", max_retries=0)
    def note(n: int) -> None:
        with done:
            ran.append(n)
            done.notify_all()

    with working(broker, worker_timeout=60_000):
        for n in (1, 2):  # idle from the start, then idle again after a message
            until(
                lambda: blocked_consumers(admin, namespace) == 2,  # "wake" and "wake.DQ"
                timeout=10,
                what="both consumers blocked on their wake lists",
            )
            producer.enqueue(note.message(n))
            with done:
                assert done.wait_for(lambda n=n: n in ran, timeout=10), f"message {n} not run"
    assert ran == [1, 2]


def test_each_enqueue_pushes_a_wake_token_and_a_wake_list_stays_at_wake_tokens(
    make: Maker, admin: redis.Redis, namespace: str
) -> None:
    broker = make()
    key = broker.wake_key("tokens")
    assert key == f"{namespace}:wake:tokens"
    lengths = []
    for n in range(WAKE_TOKENS + 8):
        broker.enqueue(plain("tokens", n))
        lengths.append(admin.llen(key))
    assert lengths == [min(n, WAKE_TOKENS) for n in range(1, WAKE_TOKENS + 9)]
    broker.enqueue_many([(plain("tokens", n), None) for n in range(3 * WAKE_TOKENS)])
    assert admin.llen(key) == WAKE_TOKENS
    assert admin.llen(f"{namespace}:tokens") == 4 * WAKE_TOKENS + 8  # every message queued


def test_enqueue_many_pushes_one_token_per_queue_it_touches(
    make: Maker, admin: redis.Redis
) -> None:
    broker = make()
    batch = [(plain("left", n), None) for n in range(5)] + [(plain("right", 9), None)]
    batch += [(plain("left", 7), None), (plain("right", 8), 60_000)]
    broker.enqueue_many(batch)
    assert admin.llen(broker.wake_key("left")) == 1
    assert admin.llen(broker.wake_key("right")) == 1
    assert admin.llen(broker.wake_key("right.DQ")) == 1  # the delayed one's queue


def test_enqueue_many_puts_a_delayed_message_on_the_delay_queue_and_a_worker_runs_all(
    make: Maker, admin: redis.Redis, namespace: str
) -> None:
    broker = make()
    ran: dict[int, int] = {}  # n → when it ran (epoch ms)

    @dramatiq.actor(broker=broker, queue_name="mixed", max_retries=0)
    def note(n: int) -> None:
        ran[n] = current_millis()

    before = current_millis()
    sent = broker.enqueue_many(
        [(note.message(1), None), (note.message(2), 300), (note.message(3), None)]
    )
    after = current_millis()
    redis_ids = [m.options["redis_message_id"] for m in sent]
    assert len(set(redis_ids)) == 3
    assert [m.queue_name for m in sent] == ["mixed", "mixed.DQ", "mixed"]
    assert ids(admin, f"{namespace}:mixed") == [redis_ids[0], redis_ids[2]]
    assert ids(admin, f"{namespace}:mixed.DQ") == [redis_ids[1]]
    delayed = Message.decode(admin.hget(f"{namespace}:mixed.DQ.msgs", redis_ids[1]))
    eta = delayed.options["eta"]
    assert before + 300 <= eta <= after + 300
    assert delayed.args == (2,) and delayed.queue_name == "mixed.DQ"
    for i in (0, 2):
        stored = Message.decode(admin.hget(f"{namespace}:mixed.msgs", redis_ids[i]))
        assert "eta" not in stored.options and stored.queue_name == "mixed"
    assert admin.llen(broker.wake_key("mixed")) == 1
    assert admin.llen(broker.wake_key("mixed.DQ")) == 1

    with working(broker, worker_timeout=100):
        until(lambda: sorted(ran) == [1, 2, 3], timeout=10, what="all three messages run")
        until(  # acked: nothing left in either queue's messages
            lambda: (
                admin.hlen(f"{namespace}:mixed.msgs") == 0
                and admin.hlen(f"{namespace}:mixed.DQ.msgs") == 0
            ),
            timeout=10,
            what="every message acked",
        )
    assert ran[2] >= eta  # the delayed message ran no earlier than its eta


def test_enqueue_many_loads_the_script_again_after_redis_lost_it(
    make: Maker, admin: redis.Redis, namespace: str
) -> None:
    broker = make()
    first = broker.enqueue(plain("flushed", 0))  # loads the dispatch script if needed
    sha = broker.scripts["dispatch"].sha
    assert admin.script_exists(sha) == [True]
    admin.script_flush()
    assert admin.script_exists(sha) == [False]
    sent = broker.enqueue_many([(plain("flushed", 1), None), (plain("flushed", 2), None)])
    assert admin.script_exists(sha) == [True]
    expected = [m.options["redis_message_id"] for m in (first, *sent)]
    assert ids(admin, f"{namespace}:flushed") == expected  # each once, in order
    fetched = [Message.decode(raw) for raw in broker.fetch("flushed", 10)]
    assert [m.args for m in fetched] == [(0,), (1,), (2,)]


def test_a_dead_workers_unacked_message_is_run_by_a_live_worker_after_its_heartbeat_is_stale(
    make: Maker, admin: redis.Redis, namespace: str
) -> None:
    """The dead broker fetches a message and makes no call again (no heartbeat). Neither
    broker does maintenance by chance, so only the live consumer's forced maintenance (its
    first fetch, and each fetch after a wait that ran out) can hand the message over."""
    dead = make(heartbeat_timeout=1000, maintenance_chance=0)
    live = make(heartbeat_timeout=1000, maintenance_chance=0)
    ran: list[tuple[int, str]] = []

    @dramatiq.actor(broker=live, queue_name="orphans", max_retries=0)
    def note(n: int) -> None:
        ran.append((n, "live"))

    enqueued = dead.enqueue(note.message(7))
    redis_id = enqueued.options["redis_message_id"]
    [data] = dead.fetch("orphans", 1)
    assert Message.decode(data).options["redis_message_id"] == redis_id
    acks = f"{namespace}:__acks__.{dead.broker_id}.orphans"
    heartbeats = f"{namespace}:__heartbeats__"
    assert admin.smembers(acks) == {redis_id.encode()}
    assert admin.llen(f"{namespace}:orphans") == 0  # fetched: only the dead broker holds it
    assert admin.zscore(heartbeats, dead.broker_id) is not None

    with working(live, worker_timeout=200):  # consumers wait 200 ms at most
        until(lambda: ran, timeout=10, what="the dead worker's message run by the live one")
        until(
            lambda: admin.hlen(f"{namespace}:orphans.msgs") == 0,
            timeout=10,
            what="the message acked by the live worker",
        )
    assert ran == [(7, "live")]
    assert not admin.exists(acks)  # requeued out of the dead worker's unacked set
    assert admin.zscore(heartbeats, dead.broker_id) is None  # and the dead worker forgotten
