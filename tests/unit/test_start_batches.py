"""Starting several queued runs together: `start_executions`, `Flowledger.read_many` and the
worker's batch function `workers.execution._start_batch`, on an embedded store.

Proven: the runs of a batch (of one organization or several) are all started and each
organization's account is debited run after run, in the order of the batch, so a run the
balance can no longer pay is `rejected`; a run already past `queued` is returned untouched;
the same run twice in one batch is started once, by its first runner; a missing run fails
the whole batch with NotFound and starts nothing; `read_many` returns the aggregates of the
asked kind only; the batch function starts each run alone when the batch fails, so a
missing run fails only its own caller. The runs' organizations have tenants of their own,
so `tests/integration/test_start_batches_postgres.py` runs these tests on a shared database.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest

from commands.credits import account_of
from commands.execution import (
    ExecuteWorkflow,
    queue_execution,
    start_execution,
    start_executions,
)
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.errors import NotFound
from events.execution import Execution
from events.organization import Organization
from events.workflow import Workflow
from workers import context
from workers.execution import _start_batch


def organization(app: Flowledger, plan: str = "starter") -> Organization:
    """A new organization with a tenant of its own (starter: 100 credits, team: 5000)."""
    tenant = f"t-{uuid4().hex[:12]}"
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
    )
    cmd = CreateOrganization(name=tenant, tenant_id=tenant, plan_type=plan)
    return create_organization(app, user.id, cmd).organization


def workflow(app: Flowledger, org: Organization, price: int) -> Workflow:
    return register_workflow(
        app,
        org.id,
        RegisterWorkflow(
            name="wf", webhook_url="http://127.0.0.1:9/webhook/sync", credits_per_execution=price
        ),
    )


def queued(app: Flowledger, org: Organization, wf: Workflow, count: int = 1) -> list[UUID]:
    """Ids of `count` new queued runs of the workflow."""
    return [
        queue_execution(app, org.id, org.tenant_id, wf.id, ExecuteWorkflow()).id
        for _ in range(count)
    ]


def stored(app: Flowledger, execution_id: UUID) -> Execution:
    """The run as recorded (loaded from the store, not the object a handler returned)."""
    return app.load(execution_id, Execution, "execution")


def test_runs_of_two_organizations_start_together_each_account_debited(
    app: Flowledger,
) -> None:
    one, two = organization(app), organization(app)
    first, second = queued(app, one, workflow(app, one, 10), 2)
    (third,) = queued(app, two, workflow(app, two, 25))
    started = start_executions(app, [(first, "m1"), (third, "m3"), (second, "m2")])
    assert [e.id for e in started] == [first, third, second]
    assert [(e.status, e.runner, e.debited) for e in started] == [
        ("running", "m1", 10),
        ("running", "m3", 25),
        ("running", "m2", 10),
    ]
    for run in started:
        recorded = stored(app, run.id)
        assert (recorded.status, recorded.runner, recorded.version) == (
            "running",
            run.runner,
            run.version,
        )
    assert account_of(app, one.id).balance == 80
    assert account_of(app, two.id).balance == 75


def test_an_account_pays_the_runs_in_batch_order_and_rejects_what_it_cannot(
    app: Flowledger,
) -> None:
    org = organization(app)  # 100 credits
    a, b, c = queued(app, org, workflow(app, org, 40), 3)
    started = start_executions(app, [(c, "mc"), (a, "ma"), (b, "mb")])
    assert [e.status for e in started] == ["running", "running", "rejected"]
    assert [stored(app, i).status for i in (c, a, b)] == ["running", "running", "rejected"]
    assert stored(app, b).debited == 0
    assert account_of(app, org.id).balance == 20


def test_a_run_already_past_queued_is_returned_untouched(app: Flowledger) -> None:
    org = organization(app)
    running, fresh = queued(app, org, workflow(app, org, 10), 2)
    start_execution(app, running, "owner")
    before = stored(app, running).version
    started = start_executions(app, [(running, "duplicate"), (fresh, "m2")])
    assert [(e.status, e.runner) for e in started] == [("running", "owner"), ("running", "m2")]
    assert (stored(app, running).runner, stored(app, running).version) == ("owner", before)
    assert account_of(app, org.id).balance == 80  # each debited once


def test_a_batch_of_runs_already_started_changes_nothing(app: Flowledger) -> None:
    org = organization(app)
    (run,) = queued(app, org, workflow(app, org, 10))
    start_execution(app, run, "owner")
    account_version = account_of(app, org.id).version
    again = start_executions(app, [(run, "other"), (run, "another")])
    assert [(e.status, e.runner) for e in again] == [("running", "owner")] * 2
    assert account_of(app, org.id).version == account_version


def test_the_same_run_twice_in_a_batch_is_started_once_by_its_first_runner(
    app: Flowledger,
) -> None:
    org = organization(app)
    (run,) = queued(app, org, workflow(app, org, 10))
    started = start_executions(app, [(run, "first"), (run, "second")])
    assert [(e.status, e.runner) for e in started] == [("running", "first")] * 2
    assert stored(app, run).runner == "first"
    assert account_of(app, org.id).balance == 90


def test_a_missing_run_fails_the_batch_with_not_found_and_starts_nothing(
    app: Flowledger,
) -> None:
    org = organization(app)
    (run,) = queued(app, org, workflow(app, org, 10))
    missing = uuid4()
    with pytest.raises(NotFound) as refused:
        start_executions(app, [(run, "m1"), (missing, "m2")])
    assert refused.value.details == {"execution_id": str(missing)}
    assert stored(app, run).status == "queued"
    assert account_of(app, org.id).balance == 100


def test_an_id_of_another_kind_is_not_a_run(app: Flowledger) -> None:
    org = organization(app)
    (run,) = queued(app, org, workflow(app, org, 10))
    with pytest.raises(NotFound):
        start_executions(app, [(run, "m1"), (org.id, "m2")])
    assert stored(app, run).status == "queued"


def test_the_runs_returned_are_the_callers_own_not_the_cached_ones(app: Flowledger) -> None:
    org = organization(app)
    first, second = queued(app, org, workflow(app, org, 10), 2)
    started = start_executions(app, [(first, "m1"), (second, "m2")])
    for run in started:
        assert run is not app.current(run.id, Execution)


def test_read_many_returns_the_aggregates_of_the_asked_kind_only(app: Flowledger) -> None:
    org = organization(app)
    wf = workflow(app, org, 10)
    first, second = queued(app, org, wf, 2)
    start_execution(app, second, "m2")
    missing = uuid4()
    found = app.read_many([first, org.id, second, missing, wf.id, first], Execution)
    assert set(found) == {first, second}
    assert (found[first].status, found[second].status) == ("queued", "running")
    assert found[second].version == stored(app, second).version
    assert set(app.read_many([first, org.id, wf.id], Workflow)) == {wf.id}
    accounts = app.read_many([org.id, first], Organization)
    assert list(accounts) == [org.id] and accounts[org.id].tenant_id == org.tenant_id
    assert app.read_many([missing], Execution) == {}


def test_read_many_gives_fresh_objects_free_to_change(app: Flowledger) -> None:
    org = organization(app)
    first, second = queued(app, org, workflow(app, org, 10), 2)
    found = app.read_many([first, second], Execution)
    found[first].start(debited=0, runner="not saved")
    assert stored(app, first).status == "queued"
    assert app.read_many([first, second], Execution)[first].status == "queued"


# -- the worker's batch function ---------------------------------------------------------


@pytest.fixture
def worker_app(app: Flowledger, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flowledger]:
    """`app` as the workers' application (`workers.context`), given back after the test."""
    monkeypatch.setattr(context, "_app", None)
    context.use(app)
    yield app


def test_the_batch_function_starts_a_batch_together(worker_app: Flowledger) -> None:
    org = organization(worker_app)
    first, second = queued(worker_app, org, workflow(worker_app, org, 30), 2)
    outcomes = _start_batch([(first, "m1"), (second, "m2")])
    assert [(e.id, e.status, e.runner) for e in outcomes] == [  # type: ignore[union-attr]
        (first, "running", "m1"),
        (second, "running", "m2"),
    ]
    assert account_of(worker_app, org.id).balance == 40


def test_a_missing_run_fails_only_its_own_caller_in_the_batch(worker_app: Flowledger) -> None:
    org = organization(worker_app)
    first, second = queued(worker_app, org, workflow(worker_app, org, 30), 2)
    missing = uuid4()
    outcomes = _start_batch([(first, "m1"), (missing, "m2"), (second, "m3")])
    assert len(outcomes) == 3
    assert isinstance(outcomes[1], NotFound)
    started = [outcomes[0], outcomes[2]]
    assert all(isinstance(e, Execution) for e in started)
    assert [(e.id, e.status, e.runner) for e in started] == [  # type: ignore[union-attr]
        (first, "running", "m1"),
        (second, "running", "m3"),
    ]
    assert [stored(worker_app, i).status for i in (first, second)] == ["running", "running"]
    assert account_of(worker_app, org.id).balance == 40


def test_a_batch_of_one_missing_run_raises_not_found(worker_app: Flowledger) -> None:
    with pytest.raises(NotFound):
        _start_batch([(uuid4(), "m1")])


def test_a_batch_of_one_starts_its_run(worker_app: Flowledger) -> None:
    org = organization(worker_app)
    (run,) = queued(worker_app, org, workflow(worker_app, org, 30))
    (outcome,) = _start_batch([(run, "m1")])
    assert isinstance(outcome, Execution) and (outcome.status, outcome.runner) == (
        "running",
        "m1",
    )
    assert account_of(worker_app, org.id).balance == 70


# -- what the batched path must keep of the single-run path ------------------------------


def test_accounts_debited_by_batched_starts_are_still_snapshotted(app: Flowledger) -> None:
    """`Flowledger.snapshotting_intervals` snapshots a CreditAccount every 200 versions
    ("snapshots keep their loads short"). The one-run start used to save the account
    itself (`app.save(execution, account)`), so a busy organization's account got its
    snapshots. `start_executions` saves the account through `save_grouped`, which records
    events only: the library snapshots only the aggregates handed to `save`, so an account
    debited on this path (every worker start) is never snapshotted, and a process that
    loads it cold replays its whole history."""
    org = organization(app, "team")  # 5000 credits
    wf = workflow(app, org, 1)
    runs = queued(app, org, wf, 210)
    for at in range(0, len(runs), 30):
        start_executions(app, [(run, "m") for run in runs[at : at + 30]])
    account = account_of(app, org.id)
    assert account.version > 200
    snapshots = list(app.snapshots.get(account.id)) if app.snapshots else []
    assert snapshots, (
        f"no snapshot of a CreditAccount at version {account.version} "
        f"(interval {Flowledger.snapshotting_intervals[CreditAccount]})"
    )
