"""How deliveries and their attempts are written: group commit of the worker threads' saves,
the fan-out's one save, an attempt recorded on the delivery the actor loaded, the endpoint's
secret opened once per sealed value. On both event stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import RecordConflictError

from commands.webhook import (
    CreateEndpoint,
    create_deliveries,
    create_endpoint,
    endpoint_secret,
    record_attempt_on,
    request_redelivery,
    rotate_endpoint_secret,
)
from events.application import Flowledger
from events.delivery import Delivery
from events.group_save import GroupSave
from events.webhook_endpoint import WebhookEndpoint
from flowledger.settings import Settings


@pytest.fixture(params=["embedded", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flowledger]:
    if request.param == "embedded":
        settings = Settings(database_url=f"sqlite:///{tmp_path}/es.db", var_dir=tmp_path)
    else:
        settings = request.getfixturevalue("pg_settings")
    application = Flowledger(settings)
    yield application
    application.close()


class HeldSaves:
    """The real application, whose first save waits until `release()`: the other threads'
    saves queue behind it meanwhile, as they do behind a slow commit."""

    def __init__(self, app: Flowledger) -> None:
        self.app = app
        self.gate = threading.Event()
        self.calls: list[int] = []  # events per save

    def __getattr__(self, name: str) -> Any:  # the rest is the real application's
        return getattr(self.app, name)

    def save(self, *objs: Any) -> Any:
        if not self.calls:
            self.calls.append(len(objs))
            self.gate.wait(timeout=30)
        else:
            self.calls.append(len(objs))
        return self.app.save(*objs)


def endpoint(app: Flowledger, org_id: UUID, url: str = "https://hooks.example.com/a") -> Any:
    created, _ = create_endpoint(app, org_id, CreateEndpoint(url=url, event_types=["*"]))
    return created


def deliveries(app: Flowledger, count: int) -> list[Delivery]:
    org_id = uuid4()
    endpoints = [endpoint(app, org_id, f"https://hooks.example.com/{n}") for n in range(count)]
    ids = create_deliveries(app, endpoints, uuid4(), "credits.granted", {"amount": 1})
    return [app.load(i, Delivery) for i in ids]


def attempt(delivery: Delivery) -> Delivery:
    at = datetime.now(UTC).isoformat()
    delivery.record_attempt(
        at=at, status_code=204, duration_ms=1, error=None, succeeded=True, next_attempt_at=None
    )
    return delivery


def save_in_threads(
    group: GroupSave, items: list[Delivery]
) -> tuple[dict[int, BaseException], list[threading.Thread]]:
    """A thread per item saving it through `group`; the first is started, the rest not."""
    errors: dict[int, BaseException] = {}

    def run(n: int) -> None:
        try:
            group.save(items[n])
        except BaseException as e:
            errors[n] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(items))]
    threads[0].start()
    return errors, threads


def test_threads_saving_while_a_save_is_in_flight_share_the_next_transaction(
    app: Flowledger,
) -> None:
    items = [attempt(d) for d in deliveries(app, 6)]
    held = HeldSaves(app)
    group = GroupSave(held)  # type: ignore[arg-type]
    errors, threads = save_in_threads(group, items)
    assert _until(lambda: held.calls == [1])  # the first thread's save is in flight
    for t in threads[1:]:
        t.start()
    assert _until(lambda: group.queued() == 5)
    held.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == {}
    assert held.calls == [1, 5]  # the five waiting threads: one save
    assert group.transactions == 2
    for d in items:
        assert app.load(d.id, Delivery).status == "succeeded"


def test_a_conflict_in_a_shared_transaction_fails_only_its_own_thread(app: Flowledger) -> None:
    first, stale, fine = deliveries(app, 3)
    copy = app.load(stale.id, Delivery)
    app.save(attempt(copy))  # another copy of the message recorded it first
    items = [attempt(first), attempt(stale), attempt(fine)]
    held = HeldSaves(app)
    group = GroupSave(held)  # type: ignore[arg-type]
    errors, threads = save_in_threads(group, items)
    assert _until(lambda: held.calls == [1])
    for t in threads[1:]:
        t.start()
    assert _until(lambda: group.queued() == 2)
    held.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert set(errors) == {1} and isinstance(errors[1], RecordConflictError)
    assert len(app.load(stale.id, Delivery).attempts) == 1
    assert app.load(fine.id, Delivery).status == "succeeded"
    assert app.load(first.id, Delivery).status == "succeeded"


def test_an_attempt_on_a_delivery_changed_meanwhile_is_recorded_on_the_current_one(
    app: Flowledger,
) -> None:
    [delivery] = deliveries(app, 1)
    loaded = app.load(delivery.id, Delivery)  # what the actor loaded before its POST
    app.save(attempt(app.load(delivery.id, Delivery)))  # meanwhile: a first attempt...
    request_redelivery(app, delivery.organization_id, delivery.id)  # ...and a redelivery
    recorded = record_attempt_on(
        app,
        loaded,
        at=datetime.now(UTC),
        status_code=500,
        duration_ms=3,
        error="HTTP 500",
        next_attempt_at=datetime.now(UTC),
        save=GroupSave(app),
    )
    now = app.load(delivery.id, Delivery)
    assert now.version == recorded.version == 4
    assert [a["status_code"] for a in now.attempts] == [204, 500]
    assert now.status == "pending" and now.round_attempts == 1


def test_a_repeated_fan_out_creates_only_the_deliveries_not_there_yet(app: Flowledger) -> None:
    org_id = uuid4()
    a, b = endpoint(app, org_id, "https://a.example.com/x"), endpoint(app, org_id)
    event_id = uuid4()
    first = create_deliveries(app, [a], event_id, "credits.granted", {"n": 1})
    again = create_deliveries(app, [a, b], event_id, "credits.granted", {"n": 2})
    assert again[0] == first[0]
    assert app.load(first[0], Delivery).payload == {"n": 1}  # the first one is kept
    assert app.load(again[1], Delivery).payload == {"n": 2}  # the missing one is created
    assert create_deliveries(app, [a, b], event_id, "credits.granted", {"n": 3}) == again


def test_a_rotated_secret_is_used_at_once(app: Flowledger) -> None:
    org_id = uuid4()
    created, secret = create_endpoint(
        app, org_id, CreateEndpoint(url="https://a.example.com/x", event_types=["*"])
    )
    assert endpoint_secret(app, app.load(created.id, WebhookEndpoint)) == secret
    _, rotated = rotate_endpoint_secret(app, org_id, created.id)
    assert rotated != secret
    assert endpoint_secret(app, app.load(created.id, WebhookEndpoint)) == rotated


def _until(check: Any, timeout: float = 10.0) -> bool:
    from tests.support.waiting import until

    return bool(until(check, timeout=timeout))
