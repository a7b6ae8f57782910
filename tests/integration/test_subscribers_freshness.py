"""FAILING ON PURPOSE (a bug report): the dispatcher's `Subscribers` trusts a cached
registry through `Flowledger.current`, so an endpoint added while the dispatcher's process
has not yet heard the save's NOTIFY is missed, and the miss is remembered.

`workers/subscribers.py` says an answer "is never older than the event being dispatched
(the log is read in order)". Since `events/freshness.py` (commit c31b6f6) that holds only
once the dispatcher's process has heard the NOTIFY of the registry's save: `current` serves
a cached aggregate without a query while no NOTIFY has named it. The dispatcher reads the
log on its own connection and may read the registry's `Added` before its listener thread
hears that save (a busy dispatcher does not wait for NOTIFYs to read the next batch, and
the listener thread needs the GIL). `Subscribers` then stores "no endpoint" until the next
registry event, so every later webhook event of that organization is not fanned out (not
only for the short window the freshness docstring accepts for read-only lookups).

Here the window is held open deterministically: two applications on one PostgreSQL
database stand for the API process (writes) and the dispatcher's process (reads, its
connections named by `application_name`), and the PostgreSQL backend of the dispatcher
side's listener is paused (SIGSTOP, then SIGCONT) while the API adds an endpoint. Needs the
PostgreSQL server on this machine and the right to signal its processes (root).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest

from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.webhook import CreateEndpoint, archive_endpoint, create_endpoint
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.webhook_endpoint import WebhookSubscriptions
from flowledger.settings import Settings
from tests.conftest import fresh_database
from tests.support.log import Log
from tests.support.waiting import until
from workers import broker

broker.setup(Settings())  # the in-process broker, before the actor modules are imported

from workers.dispatcher import Send, sends_for  # noqa: E402
from workers.subscribers import Subscribers  # noqa: E402


def fanned(sends: list[Send]) -> list[list[object]]:
    return [pair for s in sends if s.actor.actor_name == "fan_out_many" for pair in s.args[0]]


def workflow(app: Flowledger, org_id: UUID) -> UUID:
    cmd = RegisterWorkflow(name="wf", webhook_url="http://127.0.0.1:9/webhook/sync")
    wf_id: UUID = register_workflow(app, org_id, cmd).id
    return wf_id


def endpoint(app: Flowledger, org_id: UUID) -> UUID:
    cmd = CreateEndpoint(url="https://hooks.example.com/in", event_types=["*"])
    endpoint_id: UUID = create_endpoint(app, org_id, cmd)[0].id
    return endpoint_id


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Flowledger, Flowledger, str, str]]:
    """(the API's app, the dispatcher's app, the database URL, the dispatcher side's
    application_name), on one new database."""
    name = f"fl-dispatcher-{uuid4().hex[:8]}"
    with fresh_database() as url:
        secret = "test-jwt-secret-" + uuid4().hex
        api = Flowledger(Settings(database_url=url, jwt_secret=secret, var_dir=tmp_path))
        dispatcher_side = Flowledger(
            Settings(
                database_url=f"{url}?application_name={name}",
                jwt_secret=secret,
                var_dir=tmp_path,
            )
        )
        try:
            yield api, dispatcher_side, url, name
        finally:
            for app in (dispatcher_side, api):
                app.close()
                app.db.close()


def listener_backend(url: str, application_name: str) -> int:
    """The PostgreSQL backend of the dispatcher side's freshness listener."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND query ILIKE 'LISTEN%%'",
            (application_name,),
        ).fetchall()
    [(pid,)] = rows
    return int(pid)


def test_an_endpoint_added_before_the_dispatcher_heard_its_save_is_still_fanned_out(
    two_processes: tuple[Flowledger, Flowledger, str, str],
) -> None:
    api, side, url, name = two_processes
    user = register_user(api, RegisterUser(email="o@example.com", password="x" * 12, full_name="O"))
    org_id = create_organization(
        api, user.id, CreateOrganization(name="A", tenant_id="acme")
    ).organization.id
    first = endpoint(api, org_id)
    log, subscribers = Log(side), Subscribers(side)
    assert fanned(sends_for(log.batch(), subscribers))  # an endpoint: fanned out
    assert side.freshness is not None
    until(lambda: side.freshness.mark() is not None, timeout=10, what="the listener")

    heard = side.freshness.mark() or 0
    archive_endpoint(api, org_id, first)  # the only endpoint goes
    until(lambda: (side.freshness.mark() or 0) > heard, timeout=10, what="its NOTIFY heard")
    workflow(api, org_id)
    batch = log.batch()
    assert any(isinstance(i.event, WebhookSubscriptions.Removed) for i in batch)
    assert fanned(sends_for(batch, subscribers)) == []  # right: no endpoint now

    pid = listener_backend(url, name)
    os.kill(pid, signal.SIGSTOP)  # the dispatcher side hears nothing for now
    try:
        endpoint(api, org_id)  # a new endpoint: WebhookSubscriptions.Added in the log
        second_wf = workflow(api, org_id)
        batch = log.batch()
        assert any(isinstance(i.event, WebhookSubscriptions.Added) for i in batch)
        while_unheard = fanned(sends_for(batch, subscribers))
    finally:
        os.kill(pid, signal.SIGCONT)

    heard = side.freshness.mark() or 0
    until(lambda: (side.freshness.mark() or 0) > heard, timeout=10, what="the NOTIFYs heard")
    third_wf = workflow(api, org_id)  # later still, once everything was heard
    afterwards = fanned(sends_for(log.batch(), subscribers))
    assert (while_unheard, afterwards) == ([[str(second_wf), 1]], [[str(third_wf), 1]])
