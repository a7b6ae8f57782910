"""The pipeline: log → dispatcher → Dramatiq worker → fake n8n → outcome, with the debit.

Run twice: embedded (SQLite, StubBroker) and production-shaped (PostgreSQL with
LISTEN/NOTIFY, Redis broker); the worker runs in this process, n8n is a real HTTP server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from commands.credits import account_of
from commands.execution import ExecuteWorkflow, queue_execution
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.execution import Execution
from flowledger.processes import projection_followers, run_followers
from flowledger.settings import Settings
from tests.support.fake_n8n import FakeN8n, verify_signature
from workers import broker as broker_setup
from workers import context


@pytest.fixture(params=["embedded", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "embedded":
        settings = Settings(database_url=f"sqlite:///{tmp_path}/es.db", var_dir=tmp_path)
    else:
        base = request.getfixturevalue("pg_settings")
        settings = base.model_copy(
            update={
                "redis_url": "redis://127.0.0.1:6379/0",
                "broker_namespace": f"fl-test-{uuid4().hex[:8]}",
            }
        )
    return settings


@pytest.fixture
def system(backend: Settings) -> Iterator[Flowledger]:
    """Dispatcher and worker running; the read models are not needed here."""
    yield from running(backend, with_dispatcher=True, projections=())


def running(
    settings: Settings,
    *,
    with_dispatcher: bool,
    projections: tuple[str, ...] = ("executions",),
    threads: int = 4,
) -> Iterator[Flowledger]:
    """A worker in this process; the dispatcher (or not: every message is then lost) and
    the named read models."""
    broker = broker_setup.setup(settings)
    import workers.actors  # noqa: F401
    from workers.dispatcher import dispatcher

    app = Flowledger(settings)
    context.use(app)
    followers = [dispatcher(app)] if with_dispatcher else []
    followers += projection_followers(app, projections) if projections else []
    run_followers(followers)
    worker = broker_setup.start_embedded_worker(broker, threads=threads)
    yield app
    for f in followers:
        f.stop()
    worker.stop(timeout=2000)
    broker.close()
    app.close()


@pytest.fixture
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        server.slow_seconds = 3
        yield server


def run_one(app: Flowledger, url: str, credits: int = 5, **fields) -> tuple[UUID, UUID]:
    tenant = f"t-{uuid4().hex[:10]}"
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
    )
    org = create_organization(
        app, user.id, CreateOrganization(name="A", tenant_id=tenant)
    ).organization
    wf = register_workflow(
        app,
        org.id,
        RegisterWorkflow(name="w", webhook_url=url, credits_per_execution=credits, **fields),
    )
    execution = queue_execution(app, org.id, tenant, wf.id, ExecuteWorkflow(input={"n": 1}))
    return org.id, execution.id


def until_terminal(app: Flowledger, execution_id: UUID, timeout: float = 10) -> Execution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = app.repository.get(execution_id)
        if execution.is_terminal:
            return execution
        time.sleep(0.02)
    raise AssertionError(f"not terminal: {app.repository.get(execution_id).status}")


def test_completes_a_sync_run_and_keeps_the_debit(system: Flowledger, n8n: FakeN8n) -> None:
    org_id, execution_id = run_one(system, n8n.webhook_url("sync"))
    done = until_terminal(system, execution_id)
    assert done.status == "completed" and done.output["echo"] == {"n": 1}
    assert account_of(system, org_id).balance == 95
    [request] = n8n.requests_for("/webhook/sync")
    assert request.header("X-Flowledger-Execution-ID") == str(execution_id)


def test_signs_the_call_with_the_client_secret(system: Flowledger, n8n: FakeN8n) -> None:
    org_id, execution_id = run_one(system, n8n.webhook_url("sync"))
    until_terminal(system, execution_id)
    from commands.organization import client_secret
    from events.organization import Organization

    secret = client_secret(system, system.repository.get(org_id))
    assert isinstance(system.repository.get(org_id), Organization)
    assert verify_signature(n8n.requests_for("/webhook/sync")[0], secret)


def test_refunds_when_n8n_fails(system: Flowledger, n8n: FakeN8n) -> None:
    org_id, execution_id = run_one(system, n8n.webhook_url("fail"))
    failed = until_terminal(system, execution_id)
    assert failed.status == "failed"
    assert failed.error["code"] == "N8N_ERROR" and failed.error["status"] == 500
    assert account_of(system, org_id).balance == 100


def test_retries_5xx_with_backoff_then_completes(system: Flowledger, n8n: FakeN8n) -> None:
    retry = {"max_retries": 3, "backoff_seconds": 0.05}
    _, execution_id = run_one(system, n8n.webhook_url("flaky"), retry=retry)
    done = until_terminal(system, execution_id)
    assert done.status == "completed" and done.attempts == 3
    assert len(n8n.requests_for("/webhook/flaky")) == 3


def test_does_not_retry_4xx(system: Flowledger, n8n: FakeN8n) -> None:
    retry = {"max_retries": 3, "backoff_seconds": 0.05}
    _, execution_id = run_one(system, n8n.webhook_url("badrequest"), retry=retry)
    assert until_terminal(system, execution_id).status == "failed"
    assert len(n8n.requests_for("/webhook/badrequest")) == 1


def test_times_out_and_refunds(system: Flowledger, n8n: FakeN8n) -> None:
    org_id, execution_id = run_one(system, n8n.webhook_url("slow"), timeout_seconds=1)
    assert until_terminal(system, execution_id).status == "timed_out"
    assert account_of(system, org_id).balance == 100


def test_a_duplicate_message_does_not_call_n8n_twice(system: Flowledger, n8n: FakeN8n) -> None:
    from workers.execution import call_n8n

    _, execution_id = run_one(system, n8n.webhook_url("sync-duplicate"))
    call_n8n.send(str(execution_id))  # as if the dispatcher re-sent after a crash
    assert until_terminal(system, execution_id).status == "completed"
    time.sleep(0.3)
    assert len(n8n.requests_for("/webhook/sync-duplicate")) == 1
