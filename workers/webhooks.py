"""Delivering outgoing webhooks: fan-out of an event, then one POST per delivery attempt.

`fan_out` turns one domain event into deliveries for every matching active endpoint of the
organization (one save for all of them) and sends a `deliver` for each (the dispatcher sends
`fan_out_many`: the same for every such event of a batch of the log, in one message).
`deliver` makes one attempt, records it, and schedules the next one as a delayed message to
itself (about 5 s, 30 s, 2 min, 10 min, ... with ±20 % jitter, times
`webhook_backoff_scale`), until success or `max_attempts` (then the delivery is dead:
`failed`). Both are safe to run twice: a repeated fan-out creates nothing (deterministic
delivery ids), and a finished delivery is not sent.

A per-endpoint cap on concurrent POSTs (Dramatiq's `ConcurrentRateLimiter`, on Redis when
configured) keeps a slow endpoint from holding every worker thread: over the cap, the
message is put back with a short delay and the thread goes on with other endpoints' work.

CPU per delivery (bench figure (7), see bench/README.md): an attempt reads its delivery (one
query) and the endpoint (the cached aggregate, brought up to date by one query, not copied),
opens each sealed secret once, POSTs with `http.client` on a kept-alive
connection (`workers.http_post`), takes and gives back its slot in one Redis round trip
each, and saves its outcome in a transaction shared with the other threads' attempts
(`events.group_save`): each save wakes the dispatcher and every read model.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import random
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from uuid import UUID, uuid4

import dramatiq
import structlog
from dramatiq.rate_limits import ConcurrentRateLimiter, RateLimiterBackend
from dramatiq.rate_limits.backends import RedisBackend, StubBackend
from eventsourcing.application import project_aggregate

from commands.webhook import (
    create_deliveries,
    endpoint_secret,
    endpoints_of,
    note_endpoint_outcome,
    record_attempt_on,
)
from events.application import Flowledger
from events.delivery import Delivery, delivery_id
from events.errors import NotFound
from events.organization import Organization
from events.webhook_endpoint import WebhookEndpoint
from projections.formats import iso
from workers import context, http_post
from workers.webhook_events import Outgoing, body, outgoing

log = structlog.get_logger()
QUEUE = "webhooks"
TIMEOUT_SECONDS = 10.0
#: Seconds before attempt 2, 3, 4 ... (the last value repeats).
BACKOFF = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
#: Concurrent POSTs per endpoint, across every worker process sharing the Redis.
PER_ENDPOINT = 4
#: How long a held slot lasts if its worker dies mid-POST (timeout plus margin).
SLOT_TTL_MS = 30_000
#: Over the cap, try again after this long (ms, jittered).
BUSY_DELAY_MS = 200
#: How long an attempt's save waits for other threads' attempts to share its transaction.
GROUP_LINGER_S = 0.002
#: A pending delivery this far past its due time has lost its message (see sweep_deliveries).
SWEEP_GRACE = timedelta(minutes=10)


def backoff_seconds(attempt: int, scale: float = 1.0) -> float:
    """The wait after failed attempt number `attempt` (1-based), with ±20 % jitter."""
    base = BACKOFF[min(attempt, len(BACKOFF)) - 1]
    return base * scale * random.uniform(0.8, 1.2)


def sign(secret: str, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    """The Standard Webhooks headers plus `X-Webhook-Signature` (hex HMAC of the body)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    v1 = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    simple = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{v1}",
        "X-Webhook-Signature": f"sha256={simple}",
        "Content-Type": "application/json",
        "User-Agent": "Flowledger-Webhooks/1",
    }


#: `RedisBackend.incr`/`decr` in one round trip: the value plus `amount` (missing: 0), set
#: with the TTL when within the bound. Dramatiq's own do the same with WATCH, GET, MULTI,
#: SET, EXEC (4-5 round trips, and again after every WatchError when threads share a key).
_BOUNDED_ADD = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if (tonumber(ARGV[1]) > 0 and value > tonumber(ARGV[2]))
    or (tonumber(ARGV[1]) < 0 and value < tonumber(ARGV[2])) then
  return 0
end
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return 1
"""


class ScriptedRedisBackend(RedisBackend):
    """Dramatiq's Redis rate-limiter backend with `incr` and `decr` as one Lua script each."""

    def __init__(self, *, url: str) -> None:
        super().__init__(url=url)
        self._bounded_add = self.client.register_script(_BOUNDED_ADD)

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        return bool(self._bounded_add(keys=[key], args=[amount, maximum, ttl]))

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        return bool(self._bounded_add(keys=[key], args=[-amount, minimum, ttl]))


class EndpointSlots(ConcurrentRateLimiter):
    """Dramatiq's ConcurrentRateLimiter taking a slot in one call: its `_acquire` tries
    `add` (SET NX) before `incr`, and `incr` of a missing key does the same, so after the
    first delivery to an endpoint the `add` was a wasted round trip each time."""

    def _acquire(self) -> bool:
        return bool(self.backend.incr(self.key, 1, maximum=self.limit, ttl=self.ttl))


@cache
def _backend(redis_url: str | None) -> RateLimiterBackend:
    if redis_url is None:
        return StubBackend()  # the embedded mode is one process
    return ScriptedRedisBackend(url=redis_url)


def _limiter(app: Flowledger, endpoint_id: UUID) -> ConcurrentRateLimiter:
    namespace = app.settings.broker_namespace
    key = f"{namespace}:webhook-endpoint:{endpoint_id}"
    backend = _backend(app.settings.redis_url)
    return EndpointSlots(backend, key, limit=PER_ENDPOINT, ttl=SLOT_TTL_MS)


def start_deliveries(app: Flowledger, endpoints: list[WebhookEndpoint], item: Outgoing) -> int:
    """Create the deliveries of one webhook event and send them; returns how many."""
    if not endpoints:
        return 0
    org = app.current(item.organization_id, Organization)
    if org is None:
        raise NotFound("organization not found")
    ids = create_deliveries(app, endpoints, item.id, item.type, body(item, org.tenant_id))
    for one in ids:
        deliver.send(str(one))
    return len(ids)


#: Events per `fan_out_many` message: a retried message fans out at most this many again
#: (each a no-op when its deliveries exist: deterministic ids).
FAN_OUT_BATCH = 100


@dramatiq.actor(queue_name=QUEUE, max_retries=20)
def fan_out_many(events: list[list[Any]]) -> None:
    """`fan_out` of several events, `[aggregate_id, version]` each: what the
    dispatcher sends, one message per batch of the log it read, instead of one per event
    (most events go to no endpoint, and a message costs more than finding that out)."""
    app = context.app()
    for aggregate_id, version in events:
        _fan_out(app, aggregate_id, int(version))


@dramatiq.actor(queue_name=QUEUE, max_retries=20)
def fan_out(event_id: str, aggregate_id: str, version: int) -> None:
    """Deliveries of one domain event (read back from the store) to every matching endpoint."""
    _fan_out(context.app(), aggregate_id, version)


def _fan_out(app: Flowledger, aggregate_id: str, version: int) -> None:
    # Most organizations have no endpoint: find out from the (cached) current aggregate
    # before reading the event and the aggregate as of its version.
    now: Any = app.repository.get(UUID(aggregate_id), deepcopy_from_cache=False)
    endpoints = endpoints_of(app, now.organization_id)
    if not endpoints:
        return
    events = list(app.events.get(UUID(aggregate_id), gt=version - 1, lte=version))
    for item in (o for e in events for o in outgoing(app, e)):
        if item.organization_id != now.organization_id:
            endpoints = endpoints_of(app, item.organization_id)
        wanted = [e for e in endpoints if _subscribed(e, item)]
        sent = start_deliveries(app, wanted, item)
        log.info("webhook.fanned_out", event_id=str(item.id), event_type=item.type, deliveries=sent)


def _subscribed(endpoint: WebhookEndpoint, item: Outgoing) -> bool:
    """Wants this type and existed when the event happened (a late fan-out sends no history)."""
    return endpoint.wants(item.type) and endpoint.created_on <= item.timestamp


def send_test(app: Flowledger, endpoint: WebhookEndpoint) -> UUID:
    """A `webhook.test` ping to one endpoint, whatever its event types; the delivery id."""
    item = Outgoing(
        uuid4(), "webhook.test", endpoint.organization_id, datetime.now(UTC), {"ping": True}
    )
    start_deliveries(app, [endpoint], item)
    return delivery_id(endpoint.id, item.id)


@dramatiq.actor(queue_name=QUEUE, max_retries=20, time_limit=60_000)
def deliver(delivery_id: str) -> None:
    """One attempt of a pending delivery, within the endpoint's concurrency cap."""
    app = context.app()
    delivery = _delivery(app, UUID(delivery_id))
    if delivery.status != "pending" or delivery.attempts_left <= 0:
        return
    with _limiter(app, delivery.endpoint_id).acquire(raise_on_failure=False) as acquired:
        if not acquired:
            delay = int(BUSY_DELAY_MS * random.uniform(0.5, 1.5))
            deliver.send_with_options(args=(delivery_id,), delay=delay)
            return
        _attempt(app, delivery)


def _delivery(app: Flowledger, delivery_id: UUID) -> Delivery:
    """The delivery, read from its events (one query).

    Not through the repository: a delivery is attempted once or a few times, mostly in
    another process than the one that created it, so the cache would miss (and look for a
    snapshot first, a second query) and then keep an object nobody reads again.
    """
    found: Any = project_aggregate(None, app.events.get(delivery_id))
    if not isinstance(found, Delivery):
        raise NotFound("delivery not found")
    return found


def _attempt(app: Flowledger, delivery: Delivery) -> None:
    endpoint = app.current(delivery.endpoint_id, WebhookEndpoint)
    if endpoint is None:
        raise NotFound("webhook endpoint not found")
    at = datetime.now(UTC)
    started = time.monotonic()
    status_code: int | None = None
    if endpoint.archived or (not endpoint.is_active and delivery.event_type != "webhook.test"):
        error: str | None = "endpoint disabled"
    else:
        status_code, error = _post(app, endpoint, delivery)
    duration_ms = int((time.monotonic() - started) * 1000)
    retry_in = None
    if error is not None and delivery.attempts_left > 1 and error != "endpoint disabled":
        retry_in = backoff_seconds(delivery.round_attempts + 1, app.settings.webhook_backoff_scale)
    next_at = at + timedelta(seconds=retry_in) if retry_in is not None else None
    delivery = record_attempt_on(
        app,
        delivery,
        at=at,
        status_code=status_code,
        duration_ms=duration_ms,
        error=error,
        next_attempt_at=next_at,
        save=app.group(GROUP_LINGER_S),  # the threads' attempts share commits
    )
    log.info(
        "webhook.attempted",
        delivery_id=str(delivery.id),
        endpoint_id=str(endpoint.id),
        status_code=status_code,
        duration_ms=duration_ms,
        error=error,
        retry_in=retry_in,
    )
    # Only a failure or the first success after failures changes the endpoint's streak.
    if error != "endpoint disabled" and (error is not None or endpoint.failing_since):
        note_endpoint_outcome(app, endpoint.id, succeeded=error is None)
    if retry_in is not None:
        deliver.send_with_options(args=(str(delivery.id),), delay=int(retry_in * 1000))


def _post(
    app: Flowledger, endpoint: WebhookEndpoint, delivery: Delivery
) -> tuple[int | None, str | None]:
    """One signed POST; (status code, error) with error None for a 2xx."""
    payload = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = sign(
        endpoint_secret(app, endpoint), str(delivery.event_id), int(time.time()), payload
    )
    try:
        status = http_post.post(endpoint.url, payload, headers, TIMEOUT_SECONDS)
    except TimeoutError:
        return None, f"timed out after {TIMEOUT_SECONDS:g} s"
    except (OSError, http.client.HTTPException, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"[:500]
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"


def sweep_deliveries(app: Flowledger, now: datetime | None = None) -> list[str]:
    """Re-send `deliver` for pending deliveries long overdue (a lost delayed message).

    The grace is long because a busy endpoint's backlog legitimately waits its turn; a
    duplicate message costs at most a second POST, which receivers dedupe on `webhook-id`.
    """
    from projections.deliveries import overdue

    now = now or datetime.now(UTC)
    ids = overdue(app.db, iso(now - SWEEP_GRACE))
    for one in ids:
        deliver.send(one)
    if ids:
        log.warning("webhook.recovery_resent", deliveries=len(ids))
    return ids
