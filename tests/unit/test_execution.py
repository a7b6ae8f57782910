"""Execution and credit rules, through the command handlers on an embedded store."""

from __future__ import annotations

import threading

import pytest

from commands.credits import (
    GrantCredits,
    TransferCredits,
    account_of,
    grant_credits,
    transfer_credits,
)
from commands.execution import (
    ExecuteWorkflow,
    RecordExecutionStatus,
    cancel_execution,
    finish_execution,
    queue_execution,
    record_execution_status,
    start_execution,
)
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.errors import Conflict, ExecutionFinished, InsufficientCredits, InvalidInput, NotFound


def _org(app: Flowledger, tenant: str = "acme", plan: str = "starter"):
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
    )
    return create_organization(
        app, user.id, CreateOrganization(name=tenant, tenant_id=tenant, plan_type=plan)
    ).organization


def _workflow(app: Flowledger, org, **fields):
    fields.setdefault("webhook_url", "http://127.0.0.1:9/webhook/sync")
    return register_workflow(app, org.id, RegisterWorkflow(name="wf", **fields))


def test_plan_opening_grant_is_credited(app: Flowledger) -> None:
    assert account_of(app, _org(app, "a1", "starter").id).balance == 100
    assert account_of(app, _org(app, "a2", "team").id).balance == 5000
    assert account_of(app, _org(app, "a3", "enterprise").id).balance == 0


def test_tenant_id_is_unique(app: Flowledger) -> None:
    _org(app, "taken")
    user = register_user(app, RegisterUser(email="b@example.com", password="x" * 12, full_name="B"))
    with pytest.raises(Conflict):
        create_organization(app, user.id, CreateOrganization(name="x", tenant_id="taken"))


def test_debits_when_started_and_not_again(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=10)
    execution = queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    assert account_of(app, org.id).balance == 100  # queueing charges nothing
    start_execution(app, execution.id, "m1")
    start_execution(app, execution.id, "other-message")  # a duplicate
    assert account_of(app, org.id).balance == 90


def test_refunds_failed_runs_once(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=10)
    execution = queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    start_execution(app, execution.id, "m1")
    finish_execution(app, execution.id, "failed", error={"code": "N8N_ERROR"})
    finish_execution(app, execution.id, "failed", error={"code": "N8N_ERROR"})
    assert account_of(app, org.id).balance == 100
    with pytest.raises(ExecutionFinished):
        finish_execution(app, execution.id, "completed", output={})


def test_completed_runs_keep_the_debit(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=7)
    execution = queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    start_execution(app, execution.id, "m1")
    done = record_execution_status(
        app, RecordExecutionStatus(execution_id=execution.id, status="completed", data={"ok": 1})
    )
    assert done.status == "completed" and done.output == {"ok": 1}
    assert account_of(app, org.id).balance == 93


def test_refuses_visibly_short_balance(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=101)
    with pytest.raises(InsufficientCredits) as refused:
        queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    assert refused.value.details == {"credits_required": 101, "credits_available": 100}


def test_worker_rejects_when_balance_fell_short(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=60)
    first = queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    second = queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    assert start_execution(app, first.id, "m1").status == "running"
    assert start_execution(app, second.id, "m2").status == "rejected"
    assert account_of(app, org.id).balance == 40


def test_concurrent_starts_never_overspend(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=10)
    runs = [queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow()) for _ in range(20)]
    threads = [threading.Thread(target=start_execution, args=(app, r.id, "m")) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [app.repository.get(r.id).status for r in runs]
    assert statuses.count("running") == 10 and statuses.count("rejected") == 10
    assert account_of(app, org.id).balance == 0


def test_cancel_refunds_and_is_final(app: Flowledger) -> None:
    org = _org(app)
    wf = _workflow(app, org, credits_per_execution=5)
    execution = queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow())
    start_execution(app, execution.id, "m1")
    cancel_execution(app, org.id, execution.id)
    assert account_of(app, org.id).balance == 100
    with pytest.raises(ExecutionFinished):
        cancel_execution(app, org.id, execution.id)


def test_input_schema_is_checked_before_charging(app: Flowledger) -> None:
    org = _org(app)
    schema = {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}
    wf = _workflow(app, org, input_schema=schema)
    with pytest.raises(InvalidInput) as refused:
        queue_execution(app, org.id, "acme", wf.id, ExecuteWorkflow(input={"email": 3}))
    assert refused.value.details["fields"][0]["field"] == "input.email"


def test_other_tenants_workflows_are_not_found(app: Flowledger) -> None:
    org, other = _org(app, "one"), _org(app, "two")
    wf = _workflow(app, org)
    with pytest.raises(NotFound):
        queue_execution(app, other.id, "two", wf.id, ExecuteWorkflow())


def test_grant_with_invoice_id_adds_once(app: Flowledger) -> None:
    org = _org(app)
    grant_credits(app, org.id, GrantCredits(amount=50, invoice_id="inv-1"))
    _, added = grant_credits(app, org.id, GrantCredits(amount=50, invoice_id="inv-1"))
    assert added == 0 and account_of(app, org.id).balance == 150


def test_transfer_moves_credits_and_refuses_overdraft(app: Flowledger) -> None:
    org, other = _org(app, "one"), _org(app, "two")
    transfer_credits(app, org.id, TransferCredits(to_tenant_id="two", amount=30))
    assert (account_of(app, org.id).balance, account_of(app, other.id).balance) == (70, 130)
    with pytest.raises(InsufficientCredits):
        transfer_credits(app, org.id, TransferCredits(to_tenant_id="two", amount=71))
    with pytest.raises(NotFound):
        transfer_credits(app, org.id, TransferCredits(to_tenant_id="nobody", amount=1))
