"""Outgoing webhooks end to end: log → dispatcher → fan_out → deliver → a real HTTP receiver.

Run on both backends (SQLite + StubBroker, PostgreSQL + Redis), with the retry delays scaled
down (`webhook_backoff_scale`). Signatures are checked with an implementation of the Standard
Webhooks algorithm written here, independent of `workers.webhooks`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from commands.credits import GrantCredits, grant_credits
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.webhook import CreateEndpoint, create_endpoint
from events.application import Flowledger
from events.delivery import Delivery, delivery_id
from flowledger.settings import Settings
from projections.formats import event_id
from tests.integration.test_pipeline import running
from tests.support.waiting import until
from tests.support.webhook_receiver import Receiver, serve, standard_webhooks_valid

SCALE = 0.01  # 5 s, 30 s, 2 min → 50 ms, 300 ms, 1.2 s


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    got = Receiver()
    server = serve(got)
    yield got, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["embedded", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "embedded":
        return Settings(
            database_url=f"sqlite:///{tmp_path}/es.db",
            var_dir=tmp_path,
            webhook_backoff_scale=SCALE,
        )
    base: Settings = request.getfixturevalue("pg_settings")
    return base.model_copy(
        update={
            "redis_url": "redis://127.0.0.1:6379/0",
            "broker_namespace": f"fl-test-{uuid4().hex[:8]}",
            "webhook_backoff_scale": SCALE,
        }
    )


@pytest.fixture
def system(backend: Settings) -> Iterator[Flowledger]:
    """Dispatcher, the deliveries read model and 8 worker threads."""
    yield from running(
        backend, with_dispatcher=True, projections=("webhook_deliveries",), threads=8
    )


def organization(app: Flowledger) -> UUID:
    tenant = f"t-{uuid4().hex[:10]}"
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
    )
    cmd = CreateOrganization(name="A", tenant_id=tenant)
    return create_organization(app, user.id, cmd).organization.id  # type: ignore[no-any-return]


def endpoint(app: Flowledger, org_id: UUID, url: str, **fields: Any) -> tuple[UUID, str]:
    cmd = CreateEndpoint(url=url, event_types=["credits.granted"], **fields)
    created, secret = create_endpoint(app, org_id, cmd)
    return created.id, secret


def grant(app: Flowledger, org_id: UUID, amount: int = 5) -> UUID:
    """A `credits.granted` webhook event; returns its id."""
    account, _ = grant_credits(app, org_id, GrantCredits(amount=amount))
    [last] = app.events.get(account.id, desc=True, limit=1)
    return event_id(last)


def delivery(app: Flowledger, endpoint_id: UUID, webhook_id: UUID) -> Delivery:
    found = until(lambda: app.find(delivery_id(endpoint_id, webhook_id), Delivery))
    assert isinstance(found, Delivery)
    return found


def test_delivers_a_signed_event_that_an_independent_verifier_accepts(
    system: Flowledger, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    org_id = organization(system)
    endpoint_id, secret = endpoint(system, org_id, f"{url}/a")
    webhook_id = grant(system, org_id, 7)
    [request] = until(lambda: got.ok_for("/a"), what="the delivery")
    assert request.headers["webhook-id"] == str(webhook_id)
    assert standard_webhooks_valid(secret, request.headers, request.body)
    simple = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-webhook-signature"] == f"sha256={simple}"
    body = request.json
    assert set(body) == {"id", "event", "timestamp", "organization_id", "tenant_id", "data"}
    assert body["id"] == str(webhook_id) and body["event"] == "credits.granted"
    assert body["organization_id"] == str(org_id) and body["data"]["amount"] == 7
    assert not standard_webhooks_valid(secret, request.headers, request.body + b" ")
    done = until(lambda: delivery(system, endpoint_id, webhook_id).status == "succeeded")
    assert done


def test_signs_with_a_rotated_secret_at_once(
    system: Flowledger, receiver: tuple[Receiver, str]
) -> None:
    """The workers cache an endpoint's opened secret: the delivery right after a rotation
    is signed with the new secret, not the cached old one."""
    from commands.webhook import rotate_endpoint_secret

    got, url = receiver
    org_id = organization(system)
    endpoint_id, old = endpoint(system, org_id, f"{url}/r")
    grant(system, org_id)
    [before] = until(lambda: got.ok_for("/r"), what="the delivery before the rotation")
    assert standard_webhooks_valid(old, before.headers, before.body)
    _, new = rotate_endpoint_secret(system, org_id, endpoint_id)
    grant(system, org_id)
    [_, after] = until(lambda: got.ok_for("/r")[1:] and got.ok_for("/r"), what="the next one")
    assert standard_webhooks_valid(new, after.headers, after.body)
    assert not standard_webhooks_valid(old, after.headers, after.body)


def test_retries_a_failing_receiver_and_delivers_once_with_the_same_webhook_id(
    system: Flowledger, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    got.fail_first["/flaky"] = 3
    org_id = organization(system)
    endpoint_id, secret = endpoint(system, org_id, f"{url}/flaky", max_attempts=4)
    webhook_id = grant(system, org_id)
    until(lambda: got.ok_for("/flaky"), what="the 4th attempt")
    time.sleep(0.3)  # nothing more arrives after the success
    requests = [r for r in got.got if r.path == "/flaky"]
    assert len(requests) == 4 and len(got.ok_for("/flaky")) == 1
    assert {r.headers["webhook-id"] for r in requests} == {str(webhook_id)}
    assert {r.body for r in requests} == {requests[0].body}
    assert all(standard_webhooks_valid(secret, r.headers, r.body) for r in requests)
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert gaps[0] < gaps[1] < gaps[2], gaps  # backoff grows: ~50 ms, ~300 ms, ~1.2 s
    done = until(lambda: delivery(system, endpoint_id, webhook_id).status == "succeeded")
    assert done
    attempts = delivery(system, endpoint_id, webhook_id).attempts
    assert [a["status_code"] for a in attempts] == [500, 500, 500, 204]


def test_gives_up_after_max_attempts_then_a_redelivery_reaches_the_receiver_once_up(
    system: Flowledger,
) -> None:
    got = Receiver()
    probe = serve(got)  # reserve a port, then take the receiver down
    port = probe.server_port
    probe.shutdown()
    probe.server_close()
    org_id = organization(system)
    endpoint_id, _ = endpoint(system, org_id, f"http://127.0.0.1:{port}/down", max_attempts=2)
    webhook_id = grant(system, org_id)
    dead = until(lambda: delivery(system, endpoint_id, webhook_id).status == "failed")
    assert dead
    attempts = delivery(system, endpoint_id, webhook_id).attempts
    assert len(attempts) == 2 and all(a["status_code"] is None for a in attempts)
    server = serve(got, port)  # the receiver is back
    try:
        from commands.webhook import request_redelivery
        from workers.webhooks import deliver

        request_redelivery(system, org_id, delivery_id(endpoint_id, webhook_id))
        deliver.send(str(delivery_id(endpoint_id, webhook_id)))
        [request] = until(lambda: got.ok_for("/down"), what="the redelivery")
        assert request.headers["webhook-id"] == str(webhook_id)
        until(lambda: delivery(system, endpoint_id, webhook_id).status == "succeeded")
    finally:
        server.shutdown()
        server.server_close()


def test_a_receiver_down_then_up_within_the_retries_gets_the_event(system: Flowledger) -> None:
    got = Receiver()
    probe = serve(got)
    port = probe.server_port
    probe.shutdown()
    probe.server_close()
    org_id = organization(system)
    endpoint_id, _ = endpoint(system, org_id, f"http://127.0.0.1:{port}/later", max_attempts=5)
    webhook_id = grant(system, org_id)
    until(lambda: len(delivery(system, endpoint_id, webhook_id).attempts) >= 2, what="failures")
    server = serve(got, port)
    try:
        [request] = until(lambda: got.ok_for("/later"), what="the delivery after the outage")
        assert request.headers["webhook-id"] == str(webhook_id)
    finally:
        server.shutdown()
        server.server_close()


def test_fans_one_event_out_to_50_endpoints(
    system: Flowledger, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    org_id = organization(system)
    ids = [endpoint(system, org_id, f"{url}/fan/{n}")[0] for n in range(50)]
    started = time.monotonic()
    webhook_id = grant(system, org_id)
    until(lambda: len(got.ok) >= 50, what="50 deliveries")
    elapsed = time.monotonic() - started
    assert sorted(r.path for r in got.ok) == sorted(f"/fan/{n}" for n in range(50))
    assert {r.headers["webhook-id"] for r in got.ok} == {str(webhook_id)}
    print(f"fan-out of one event to 50 endpoints: {elapsed * 1000:.0f} ms")  # bench (8) times it
    assert all(delivery(system, i, webhook_id) for i in ids)


def test_a_slow_endpoint_does_not_delay_the_others(
    system: Flowledger, receiver: tuple[Receiver, str]
) -> None:
    """8 worker threads, at most 4 concurrent POSTs per endpoint: while 10 deliveries to a
    receiver that sleeps 6 s are in flight, a delivery to a fast one is answered before any
    slow one (without the cap, the slow POSTs hold all 8 threads and the fast one waits for
    a slow one to finish). The proof is that order, not a time limit."""
    got, url = receiver
    got.sleep["/slow"] = 6.0
    org_id = organization(system)
    endpoint(system, org_id, f"{url}/slow")
    for _ in range(10):
        grant(system, org_id)
    time.sleep(0.3)  # the slow endpoint's deliveries now hold (at most 4) threads
    endpoint(system, org_id, f"{url}/fast")
    grant(system, org_id)
    [fast] = until(lambda: got.ok_for("/fast"), timeout=60, what="the fast endpoint")
    with got.lock:
        arrived = list(got.arrived)
    assert "/slow" in arrived[: arrived.index("/fast")]  # slow POSTs were in flight first
    assert all(fast.at < slow.at for slow in got.ok_for("/slow"))  # and none had finished
