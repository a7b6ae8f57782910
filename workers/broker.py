"""The Dramatiq broker of Flowledger: Redis in production, in-process StubBroker when embedded.

Import-order rule: ``@dramatiq.actor`` binds an actor to the *global* broker when the
decorator runs (``dramatiq.get_broker()``), and with no global broker set, dramatiq quietly
makes a default ``RedisBroker`` (127.0.0.1, namespace "dramatiq"). So every entry point calls
``setup(settings)`` before importing any actor module:

* API / dispatcher / ``flowledger run``: ``setup(settings)`` first, then import the actors;
* worker: ``dramatiq workers.broker:setup workers.actors ...`` — the CLI calls ``setup()``
  (settings from ``FLOWLEDGER_*``) before importing the actor modules.

As a safety net, actors already declared on the previous global broker are moved onto the
new one (with a warning), so a wrong import order still delivers to the right broker.

Latency: dramatiq 2.2.1's Redis consumer has no blocking pop. An idle consumer runs the
``fetch`` Lua script (LPOP) and then sleeps ``compute_backoff(misses, factor=5,
max_backoff=timeout)``, i.e. 5, 10, 20 ... ms, capped at the Worker's ``worker_timeout``
(1000 ms), so a lone message waits ~0.4 s (p50), up to ~0.9 s; polling every 10 ms instead
cost ~800 Redis commands/s and a quarter of an idle worker's core. Our broker wakes its
consumers instead: every enqueue also pushes a token onto the queue's wake list (in the
same round trip as the enqueue script), and a consumer that found its queue empty blocks
on that list (``BLPOP``) until a token arrives or ``timeout`` passes. A message is fetched
about a millisecond after it was enqueued, and an idle consumer makes one call per timeout.
Every producer must therefore enqueue through this broker (``setup``/``make_broker``, as every
entry point of Flowledger does): a message enqueued by a stock ``RedisBroker`` is fetched only
when a consumer's wait runs out. Numbers: ``python -m bench.broker_latency``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

__all__ = ["FlowledgerRedisBroker", "make_broker", "setup", "start_embedded_worker"]

log = logging.getLogger(__name__)

_ours: weakref.WeakSet[Broker] = weakref.WeakSet()  # brokers made by make_broker
_booted: weakref.WeakSet[Broker] = weakref.WeakSet()  # brokers that saw process_boot

#: Longest idle wait (ms) of a queue's consumer on its wake list: how often an idle
#: consumer fetches anyway (a heartbeat, and a stop request noticed). A message never
#: waits for it: its enqueue wakes the consumer.
POLL_MS = 1000
#: Delay queues (``.DQ``: retries, ``send_with_options(delay=...)``): their consumer holds
#: the fetched messages until due and must come back to move them, so it waits at most
#: this long; it bounds how late a delayed message runs.
DELAY_POLL_MS = 500
#: While every worker thread's share of prefetched messages is taken, the consumer
#: re-checks this often (no Redis call): a thread finishing frees room for the next fetch.
BUSY_POLL_MS = 5
#: Tokens kept on a wake list: each wakes one blocked consumer, so this many consumers of
#: one queue can be woken at once; more tokens would only cost empty fetches later.
WAKE_TOKENS = 16
#: Chance per million dispatches to requeue dead workers' messages (dramatiq: 1000). An
#: idle consumer also runs it after every wait that ran out (``WakingRedisConsumer``), so
#: a dead worker's messages come back within about ``POLL_MS`` of ``heartbeat_timeout``.
MAINTENANCE_CHANCE = 10_000
#: Failed actors retry after ~1 s, 2 s, 4 s ... capped at 5 min (dramatiq: 15 s .. 7 days):
#: transient faults (a DB restart) heal fast, 20 tries span about an hour.
RETRY_MIN_BACKOFF_MS = 1_000
RETRY_MAX_BACKOFF_MS = 300_000
MAX_RETRIES = 20
#: Handlers of events should be short; one stuck for 5 min is killed and retried.
TIME_LIMIT_MS = 300_000
#: Embedded Worker: the StubBroker consumer *blocks* on ``Queue.get``, so this does not
#: delay messages; it bounds how late delayed messages run and how long ``stop()`` takes.
EMBEDDED_WORKER_TIMEOUT_MS = 100


class WakingRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, blocking on its queue's wake list when the queue is empty.

    The same fetch (the broker's ``fetch`` script: prefetch, heartbeat, maintenance) and the
    same bookkeeping as ``_RedisConsumer.__next__``; only the idle sleep differs. A token
    pushed between the empty fetch and the ``BLPOP`` stays on the list, so no wake-up is
    lost; a stale token costs one empty fetch.
    """

    broker: FlowledgerRedisBroker

    def __init__(self, broker: FlowledgerRedisBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:  # fmt: skip
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wake_key = broker.wake_key(queue_name)
        self.maintain = True  # the first fetch, and each one after a wait that ran out

    def requeue(self, messages: Any) -> None:
        """Put unfinished messages back (a stopping worker) and wake another consumer."""
        super().requeue(messages)
        self.broker.wake(self.queue_name)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # as dramatiq: skip, never crash on it
                        continue
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:  # every prefetched message is still being worked on
                    time.sleep(BUSY_POLL_MS / 1000)
                    return None
                self.message_cache = self.broker.fetch(self.queue_name, room,
                                                       maintain=self.maintain)  # fmt: skip
                self.maintain = False
                if not self.message_cache:
                    woken = self.broker.client.blpop([self.wake_key], timeout=self.timeout / 1000)
                    self.maintain = woken is None
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None


class FlowledgerRedisBroker(RedisBroker):
    """RedisBroker whose enqueues wake the queue's consumers (``WakingRedisConsumer``).

    ``enqueue_many`` sends several messages in one round trip (the dispatcher's batches).
    An idle consumer waits at most ``poll_ms`` (``delay_poll_ms`` for ``.DQ``), or the
    Worker's ``worker_timeout`` if that is shorter.
    """

    def __init__(self, *, poll_ms: int = POLL_MS, delay_poll_ms: int = DELAY_POLL_MS, **kw: Any):
        super().__init__(**kw)
        self.poll_ms = poll_ms
        self.delay_poll_ms = delay_poll_ms

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:wake:{queue_name}"

    def wake(self, queue_name: str) -> None:
        """A wake token for the queue's consumers (what every enqueue sends too)."""
        pipe = self.client.pipeline(transaction=False)
        self._wake_on(pipe, queue_name)
        pipe.execute()

    def _wake_on(self, pipe: Any, queue_name: str) -> None:
        pipe.lpush(self.wake_key(queue_name), 1)
        pipe.ltrim(self.wake_key(queue_name), 0, WAKE_TOKENS - 1)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        cap = self.delay_poll_ms if queue_name.endswith(".DQ") else self.poll_ms
        return WakingRedisConsumer(self, queue_name, prefetch, min(timeout, cap))

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        return self.enqueue_many([(message, delay)])[0]

    def enqueue_many(self, messages: Sequence[tuple[Message, int | None]]) -> list[Message]:
        """Enqueue each (message, delay) as ``RedisBroker.enqueue`` does, in one pipeline,
        with one wake token per queue touched."""
        sent: list[tuple[Message, int | None]] = []
        for message, delay in messages:
            # A unique id per enqueue: a retried message is enqueued again (as dramatiq).
            message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
            if delay is not None:
                eta = current_millis() + delay
                message = message.copy(queue_name=dq_name(message.queue_name),
                                       options={"eta": eta})  # fmt: skip
            self.emit_before("enqueue", message, delay)
            sent.append((message, delay))
        try:
            lost = self._enqueue_pipeline([message for message, _ in sent])
            if lost:  # Redis restarted or flushed its scripts: load it, send only those again
                script = self.scripts["dispatch"]
                script.sha = self.client.script_load(script.script)
                if self._enqueue_pipeline(lost):
                    raise redis.exceptions.NoScriptError("the dispatch script is not loaded")
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
        for message, delay in sent:
            self.emit_after("enqueue", message, delay)
        return [message for message, _ in sent]

    def _enqueue_pipeline(self, messages: list[Message]) -> list[Message]:
        """The enqueue scripts and wake tokens, one round trip; the messages whose script
        Redis did not know (NOSCRIPT: not enqueued), others' errors raised. ``evalsha`` is
        queued as is: a script object in a pipeline makes redis-py ask ``SCRIPT EXISTS``
        first, one more round trip per batch (``enqueue_many`` loads the script when lost;
        another client may load it meanwhile, so only the refused ones are sent again)."""
        pipe = self.client.pipeline(transaction=False)
        queues: list[str] = []
        for message in messages:
            maintenance = self._should_do_maintenance("enqueue")
            self._dispatch_on(pipe, "enqueue", message.queue_name, maintenance,
                              message.options["redis_message_id"], message.encode())  # fmt: skip
            if message.queue_name not in queues:
                queues.append(message.queue_name)
        for queue_name in queues:
            self._wake_on(pipe, queue_name)
        results = pipe.execute(raise_on_error=False)
        lost = []
        for message, result in zip(messages, results, strict=False):
            if isinstance(result, redis.exceptions.NoScriptError):
                lost.append(message)
            elif isinstance(result, Exception):
                raise result
        return lost

    def fetch(self, queue_name: str, count: int, *, maintain: bool = False) -> list[bytes]:
        """The ``fetch`` script; with `maintain`, its queue maintenance runs for sure.

        An idle consumer fetches with maintenance after each wait that ran out: dramatiq
        leaves maintenance (requeueing the unacked messages of dead workers) to chance per
        call, and a blocked consumer makes about one call a second, not hundreds.
        """
        maintenance = 1 if maintain else self._should_do_maintenance("fetch")
        try:
            return list(self._dispatch_on(self.client, "fetch", queue_name, maintenance, count))
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _dispatch_on(self, client: Any, command: str, queue_name: str, maintenance: int,
                     *args: Any) -> Any:  # fmt: skip
        """The broker's ``dispatch`` script on `client` (a pipeline queues it), with the
        arguments ``RedisBroker._dispatch`` gives it."""
        argv = [command, current_millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                self.dead_message_ttl, maintenance, self._max_unpack_size(), *args]  # fmt: skip
        if isinstance(client, redis.client.Pipeline):
            return client.evalsha(self.scripts["dispatch"].sha, 1, self.namespace, *argv)
        return self.scripts["dispatch"](keys=[self.namespace], args=argv, client=client)


def enqueue_many(broker: Broker, messages: Sequence[tuple[Message, int | None]]) -> None:
    """Several messages in one round trip where the broker can (Redis), else one by one."""
    if isinstance(broker, FlowledgerRedisBroker):
        broker.enqueue_many(messages)
        return
    for message, delay in messages:
        broker.enqueue(message, delay=delay)


def _middleware() -> list[Middleware]:
    """dramatiq's default middleware, configured, plus CurrentMessage (for causation ids)."""
    return [
        AgeLimit(),  # no default max age: events must not be dropped; actors may opt in
        TimeLimit(time_limit=TIME_LIMIT_MS),
        ShutdownNotifications(),  # actors opt in with notify_shutdown=True
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=MAX_RETRIES,
            min_backoff=RETRY_MIN_BACKOFF_MS,
            max_backoff=RETRY_MAX_BACKOFF_MS,
        ),
        CurrentMessage(),
    ]


def make_broker(
    redis_url: str | None,
    *,
    namespace: str = "flowledger",
    heartbeat_timeout_ms: int = 15000,
    poll_ms: int = POLL_MS,
) -> dramatiq.Broker:
    """Make the broker, set it as dramatiq's global broker and return it.

    ``heartbeat_timeout_ms``: a worker whose heartbeat (sent with each fetch, every few
    ms) is older than this is dead, and its fetched-but-unacked messages are requeued at
    the next maintenance. Keep it well above any pause of a live worker (GC, Redis blip):
    a live worker taken for dead runs its messages twice.
    """
    broker: Broker
    if redis_url:
        broker = FlowledgerRedisBroker(
            url=redis_url,
            namespace=namespace,
            heartbeat_timeout=heartbeat_timeout_ms,
            maintenance_chance=MAINTENANCE_CHANCE,
            poll_ms=poll_ms,
            middleware=_middleware(),
        )
    else:
        broker = StubBroker(middleware=_middleware())
    _ours.add(broker)
    _adopt_actors(broker)
    dramatiq.set_broker(broker)
    return broker


def _adopt_actors(broker: Broker) -> None:
    """Move actors declared on the previous global broker (wrong import order) to ``broker``."""
    previous = dramatiq.broker.global_broker
    if previous is None or previous is broker:
        return
    ours = previous in _ours  # re-setup (tests) vs wrong import order
    for actor in list(previous.actors.values()):
        log.log(
            logging.DEBUG if ours else logging.WARNING,
            "actor %s was declared on another broker; rebinding it",
            actor.actor_name,
        )
        actor.broker = broker
        broker.declare_actor(actor)


_setup_key: tuple[Any, ...] | None = None


def setup(settings: Any = None) -> dramatiq.Broker:
    """Configure the global broker from ``Settings`` once per process; idempotent.

    With no argument the settings are read from ``FLOWLEDGER_*`` env vars, which is how the
    ``dramatiq workers.broker:setup ...`` CLI calls it. Calling it again with the same
    values returns the same broker; with other values it makes a new one (tests).
    """
    global _setup_key
    worker_process = settings is None  # the dramatiq CLI's worker processes
    if settings is None:
        from flowledger.logs import configure
        from flowledger.settings import load_settings

        settings = load_settings()
        configure(settings.log_format, settings.log_level)  # the dramatiq CLI's worker process
        if settings.redis_url is None:
            log.warning("FLOWLEDGER_REDIS_URL is unset: in-process StubBroker, nothing to consume")
    key = (
        settings.redis_url,
        getattr(settings, "broker_namespace", "flowledger"),
        settings.heartbeat_timeout_ms,
        settings.worker_timeout_ms,
    )
    current = dramatiq.broker.global_broker
    if key == _setup_key and current is not None:
        return current
    broker = make_broker(key[0], namespace=key[1], heartbeat_timeout_ms=key[2], poll_ms=key[3])
    if worker_process and settings.redis_url:  # Dramatiq's own metrics
        broker.add_middleware(_prometheus(settings.metrics_path))
    _setup_key = key
    return broker


# -- dramatiq's Prometheus middleware in the worker processes -----------------------------------


def _prometheus(root: Any) -> Middleware:
    """dramatiq's Prometheus middleware, writing prometheus-client multiprocess files under
    ``<metrics dir>/dramatiq-<supervisor pid>/`` (the CLI forks its worker processes from
    one supervisor), where ``/metrics`` (api/metrics.py) reads them. Its own exposition
    server (a fork listening on :9191) is left out: one scrape endpoint, no port clash.
    """
    path = root / f"dramatiq-{os.getppid()}"
    path.mkdir(parents=True, exist_ok=True)
    os.environ["dramatiq_prom_db"] = str(path)  # noqa: SIM112 (dramatiq reads it at import)
    from dramatiq.middleware import prometheus

    prometheus.DB_PATH = str(path)  # and here if it was imported before

    class Prometheus(prometheus.Prometheus):
        def after_process_boot(self, broker: Broker) -> None:
            # prometheus-client picks file-backed values when imported; pick again here in
            # case something imported it before the directory was set.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
            from prometheus_client import values

            values.ValueClass = values.get_value_class()
            super().after_process_boot(broker)

        @property
        def forks(self) -> list[Any]:
            return []

    return Prometheus()


def start_embedded_worker(
    broker: dramatiq.Broker,
    threads: int = 8,
    *,
    worker_timeout_ms: int = EMBEDDED_WORKER_TIMEOUT_MS,
) -> dramatiq.Worker:
    """Start worker threads in this process (``flowledger run``); call ``.stop()`` at exit.

    Emits ``process_boot`` once per broker first, as the ``dramatiq`` CLI does in each worker
    process: without it TimeLimit never starts its watchdog thread and time limits are
    silently not enforced. Run one Worker per process (``start`` leaves a middleware on
    the broker). ``worker.stop(timeout=ms)`` waits for running actors (default 10 min);
    with a StubBroker the prefetched-but-unstarted messages (up to 2 per thread) are
    dropped, not requeued: everything is in memory anyway, so the dispatcher must resend
    from its own position after a restart.
    """
    if broker not in _booted:  # a second process_boot would start TimeLimit's thread twice
        broker.emit_after("process_boot")
        _booted.add(broker)
    worker = dramatiq.Worker(broker, worker_timeout=worker_timeout_ms, worker_threads=threads)
    worker.start()
    return worker
