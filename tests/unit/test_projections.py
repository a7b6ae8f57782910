"""The read models answer queries in the contract's shapes, from commands run for real.

Each test drives command handlers against an embedded application (SQLite file), lets the
projections catch up and reads back through the query functions. The integration suite
runs these same tests against PostgreSQL by overriding the `app` fixture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from commands.credits import GrantCredits, TransferCredits, grant_credits, transfer_credits
from commands.execution import (
    ExecuteWorkflow,
    cancel_execution,
    finish_execution,
    queue_execution,
    record_attempt,
    start_execution,
)
from commands.organization import CreateOrganization, Plan, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import (
    RegisterWorkflow,
    UpdateWorkflow,
    archive_workflow,
    register_workflow,
    set_workflow_active,
    update_workflow,
)
from events.application import Flowledger
from projections import all_projections
from projections.credits import balance, list_transactions
from projections.executions import execution_version, get_execution, list_executions, usage_logs
from projections.runner import projection_follower, record_position
from projections.workflows import get_workflow, list_workflows

WORKFLOW_KEYS = [
    "id", "name", "description", "project_id", "n8n_connection_id", "n8n_workflow_id",
    "n8n_webhook_path", "webhook_url", "response_mode", "is_active", "credits_per_execution",
    "timeout_seconds", "retry", "input_schema", "trigger", "tags", "category", "trigger_url",
    "execution_count", "last_executed_at", "created_at", "updated_at",
]  # fmt: skip
EXECUTION_KEYS = [
    "id", "workflow_id", "status", "input", "metadata", "output", "error", "credits_used",
    "attempts", "retry_of", "trigger", "queued_at", "started_at", "finished_at", "duration_ms",
    "logs",
]  # fmt: skip
USAGE_KEYS = [
    "id", "execution_id", "workflow_id", "workflow_name", "credits_used", "status",
    "execution_time_ms", "created_at", "completed_at",
]  # fmt: skip
TRANSACTION_KEYS = [
    "id", "type", "amount", "balance_after", "execution_id", "description", "created_at",
]  # fmt: skip
RFC3339_MS = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class Org:
    id: UUID
    tenant: str


def project(app: Flowledger) -> None:
    for projection in all_projections():
        projection_follower(app, projection).catch_up()


def new_org(app: Flowledger, plan: Plan = "starter") -> Org:
    tenant = f"t-{uuid4().hex[:12]}"
    user = register_user(
        app,
        RegisterUser(email=f"{tenant}@example.com", password="a long password", full_name="Ann"),
    )
    created = create_organization(
        app, user.id, CreateOrganization(name=tenant, tenant_id=tenant, plan_type=plan)
    )
    return Org(created.organization.id, tenant)


def new_workflow(
    app: Flowledger, org: Org, name: str = "Process Customer Data", **fields: Any
) -> UUID:
    cmd = RegisterWorkflow(name=name, webhook_url="https://n8n.example.com/webhook/x", **fields)
    return register_workflow(app, org.id, cmd).id


def queue(app: Flowledger, org: Org, workflow_id: UUID, **input: Any) -> UUID:
    cmd = ExecuteWorkflow(input=input, metadata={"source": "test"})
    return queue_execution(app, org.id, org.tenant, workflow_id, cmd).id


def run(app: Flowledger, org: Org, workflow_id: UUID, outcome: str = "completed") -> UUID:
    """Queue, start (debit) and finish one execution the way the worker does."""
    execution_id = queue(app, org, workflow_id, n=1)
    start_execution(app, execution_id, "test")
    if outcome == "completed":
        record_attempt(app, execution_id, 1, "answered", 200, "n8n answered 200")
        finish_execution(app, execution_id, "completed", output={"ok": True}, duration_ms=150)
    elif outcome == "failed":
        error = {"code": "N8N_ERROR", "status": 500, "body": "boom"}
        finish_execution(app, execution_id, "failed", error=error, attempt=(1, "refused", 500))
    else:
        finish_execution(app, execution_id, outcome)
    return execution_id


def ledger_sum(app: Flowledger, org: Org) -> int:
    items, total = list_transactions(app.db, org.id, limit=200)
    assert len(items) == total
    return sum(item["amount"] for item in items)


# -- workflows -------------------------------------------------------------------------------


def test_workflow_reads_back_in_the_contract_shape(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org, description="Cleans data", tags=["crm"])
    project(app)

    workflow = get_workflow(app.db, org.id, workflow_id)

    assert workflow is not None
    assert list(workflow) == WORKFLOW_KEYS
    assert workflow["id"] == str(workflow_id)
    assert workflow["name"] == "Process Customer Data"
    assert workflow["webhook_url"] == "https://n8n.example.com/webhook/x"
    assert workflow["is_active"] is True
    assert workflow["retry"] == {"max_retries": 0, "backoff_seconds": 2}
    assert workflow["trigger"] == {"type": "manual"}
    assert workflow["tags"] == ["crm"]
    assert workflow["execution_count"] == 0
    assert workflow["last_executed_at"] is None
    assert workflow["trigger_url"] is None
    datetime.strptime(workflow["created_at"], RFC3339_MS)
    assert workflow["created_at"] == workflow["updated_at"]


def test_queued_executions_count_on_their_workflow(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org)
    queue(app, org, workflow_id)
    last = queue(app, org, workflow_id)
    project(app)

    workflow = get_workflow(app.db, org.id, workflow_id)
    execution = get_execution(app.db, org.id, last)

    assert workflow is not None and execution is not None
    assert workflow["execution_count"] == 2
    assert workflow["last_executed_at"] == execution["queued_at"]


def test_updates_and_activation_change_the_workflow(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org)
    time.sleep(0.002)  # timestamps have millisecond resolution
    update_workflow(
        app, org.id, workflow_id, UpdateWorkflow(name="Renamed", credits_per_execution=3)
    )
    set_workflow_active(app, org.id, workflow_id, False)
    project(app)

    workflow = get_workflow(app.db, org.id, workflow_id)

    assert workflow is not None
    assert workflow["name"] == "Renamed"
    assert workflow["credits_per_execution"] == 3
    assert workflow["is_active"] is False
    assert workflow["updated_at"] > workflow["created_at"]


def test_workflow_queries_filter_search_and_page_newest_first(app: Flowledger) -> None:
    org = new_org(app)
    project_id = uuid4()
    first = new_workflow(app, org, "Send invoices", category="billing")
    second = new_workflow(app, org, "Sync leads", description="From the CRM 100% daily")
    third = new_workflow(app, org, "Post to TikTok", category="social", project_id=project_id)
    archived = new_workflow(app, org, "Old sync")
    archive_workflow(app, org.id, archived)
    set_workflow_active(app, org.id, first, False)
    project(app)

    def ids(**filters: Any) -> tuple[list[str], int]:
        items, total = list_workflows(app.db, org.id, **filters)
        return [item["id"] for item in items], total

    assert ids() == ([str(third), str(second), str(first)], 3)
    assert ids(active_only=True) == ([str(third), str(second)], 2)
    assert ids(category="billing") == ([str(first)], 1)
    assert ids(project_id=project_id) == ([str(third)], 1)
    assert ids(search="SYNC") == ([str(second)], 1)
    assert ids(search="crm 100%") == ([str(second)], 1)
    assert ids(search="100_") == ([], 0)
    assert ids(limit=2, offset=1) == ([str(second), str(first)], 3)
    assert get_workflow(app.db, org.id, archived) is None


def test_workflows_of_another_organization_are_not_found(app: Flowledger) -> None:
    mine, theirs = new_org(app), new_org(app)
    workflow_id = new_workflow(app, theirs)
    project(app)

    assert get_workflow(app.db, mine.id, workflow_id) is None
    assert list_workflows(app.db, mine.id) == ([], 0)


# -- executions ------------------------------------------------------------------------------


def test_completed_execution_reads_back_with_its_logs(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org)
    execution_id = run(app, org, workflow_id, "completed")
    project(app)

    execution = get_execution(app.db, org.id, execution_id)

    assert execution is not None
    assert list(execution) == EXECUTION_KEYS
    assert execution["status"] == "completed"
    assert execution["workflow_id"] == str(workflow_id)
    assert execution["input"] == {"n": 1}
    assert execution["metadata"] == {"source": "test"}
    assert execution["output"] == {"ok": True}
    assert execution["error"] is None
    assert execution["credits_used"] == 1
    assert execution["attempts"] == 1
    assert execution["trigger"] == "api"
    assert execution["retry_of"] is None
    assert execution["duration_ms"] == 150
    assert execution["queued_at"] <= execution["started_at"] <= execution["finished_at"]
    messages = [line["message"] for line in execution["logs"]]
    assert messages == [
        "queued by api",
        "started, 1 credits debited",
        "n8n call attempt 1: answered (HTTP 200)",
        "n8n answered 200",
        "completed after 150 ms",
    ]
    assert {line["level"] for line in execution["logs"]} == {"info"}
    assert all(list(line) == ["at", "level", "message"] for line in execution["logs"])


def test_failed_execution_is_refunded_in_full(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org, credits_per_execution=5)
    execution_id = run(app, org, workflow_id, "failed")
    project(app)

    execution = get_execution(app.db, org.id, execution_id)
    refunds, _ = list_transactions(app.db, org.id, type="refund")

    assert execution is not None
    assert execution["status"] == "failed"
    assert execution["credits_used"] == 0
    assert execution["error"] == {"code": "N8N_ERROR", "status": 500, "body": "boom"}
    assert execution["attempts"] == 1
    assert execution["duration_ms"] is not None
    levels = [(line["level"], line["message"]) for line in execution["logs"]]
    assert ("error", "n8n call attempt 1: refused (HTTP 500)") in levels
    assert levels[-1] == ("info", "5 credits refunded")
    assert levels[-2][0] == "error" and levels[-2][1].startswith("failed after ")
    assert [(r["amount"], r["execution_id"]) for r in refunds] == [(5, str(execution_id))]
    assert balance(app.db, org.id)["balance"] == 100  # type: ignore[index]


@pytest.mark.parametrize("outcome", ["timed_out", "cancelled"])
def test_unfinished_executions_are_refunded(app: Flowledger, outcome: str) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org, credits_per_execution=2, timeout_seconds=30)
    execution_id = run(app, org, workflow_id, outcome)
    project(app)

    execution = get_execution(app.db, org.id, execution_id)

    assert execution is not None
    assert execution["status"] == outcome
    assert execution["credits_used"] == 0
    if outcome == "timed_out":
        assert execution["error"] == {"code": "TIMEOUT", "message": "not finished after 30s"}
    else:
        assert execution["error"] is None
    assert execution["logs"][-1]["message"] == "2 credits refunded"
    assert ledger_sum(app, org) == balance(app.db, org.id)["balance"] == 100  # type: ignore[index]


def test_execution_cancelled_while_queued_costs_nothing(app: Flowledger) -> None:
    org = new_org(app)
    execution_id = queue(app, org, new_workflow(app, org))
    cancel_execution(app, org.id, execution_id)
    project(app)

    execution = get_execution(app.db, org.id, execution_id)

    assert execution is not None
    assert execution["status"] == "cancelled"
    assert execution["credits_used"] == 0
    assert execution["started_at"] is None and execution["duration_ms"] is None
    assert list_transactions(app.db, org.id, type="refund") == ([], 0)


def test_execution_rejected_when_the_balance_is_short_at_start(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org, credits_per_execution=60)
    first, second = queue(app, org, workflow_id), queue(app, org, workflow_id)
    start_execution(app, first, "test")
    start_execution(app, second, "test")
    project(app)

    execution = get_execution(app.db, org.id, second)

    assert execution is not None
    assert execution["status"] == "rejected"
    assert execution["credits_used"] == 0
    assert execution["error"] == {
        "code": "INSUFFICIENT_CREDITS",
        "credits_required": 60,
        "credits_available": 40,
    }
    assert execution["logs"][-1]["level"] == "error"
    assert get_execution(app.db, org.id, first)["credits_used"] == 60  # type: ignore[index]


def test_execution_queries_filter_and_page_newest_first(app: Flowledger) -> None:
    org = new_org(app)
    one, two = new_workflow(app, org, "One"), new_workflow(app, org, "Two")
    a = run(app, org, one, "completed")
    time.sleep(0.002)  # timestamps have millisecond resolution: keep the bounds apart
    b = run(app, org, two, "failed")
    time.sleep(0.002)
    c = queue(app, org, one)
    time.sleep(0.002)
    d = run(app, org, one, "completed")
    project(app)

    def ids(**filters: Any) -> tuple[list[str], int]:
        items, total = list_executions(app.db, org.id, **filters)
        return [item["id"] for item in items], total

    everything = [str(d), str(c), str(b), str(a)]
    assert ids() == (everything, 4)
    assert ids(workflow_id=one) == ([str(d), str(c), str(a)], 3)
    assert ids(status="completed") == ([str(d), str(a)], 2)
    assert ids(status="queued", workflow_id=one) == ([str(c)], 1)
    assert ids(limit=2, offset=1) == ([str(c), str(b)], 4)
    queued_b = get_execution(app.db, org.id, b)["queued_at"]  # type: ignore[index]
    queued_c = get_execution(app.db, org.id, c)["queued_at"]  # type: ignore[index]
    assert ids(from_=queued_b, to=queued_c) == ([str(c), str(b)], 2)
    later = datetime.strptime(queued_c, RFC3339_MS) + timedelta(milliseconds=1)
    assert str(c) not in ids(from_=later)[0]
    assert ids(to="2000-01-01T00:00:00Z") == ([], 0)
    assert list_executions(app.db, new_org(app).id) == ([], 0)
    assert get_execution(app.db, new_org(app).id, a) is None


def test_usage_logs_name_the_workflow_and_count_credits(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org, "Process Customer Data", credits_per_execution=2)
    done = run(app, org, workflow_id, "completed")
    failed = run(app, org, workflow_id, "failed")
    update_workflow(app, org.id, workflow_id, UpdateWorkflow(name="Customer Data v2"))
    project(app)

    items, total = usage_logs(app.db, org.id)
    completed, completed_total = usage_logs(app.db, org.id, status="completed")
    execution = get_execution(app.db, org.id, done)

    assert total == 2
    assert all(list(item) == USAGE_KEYS for item in items)
    assert [item["execution_id"] for item in items] == [str(failed), str(done)]
    assert {item["workflow_name"] for item in items} == {"Customer Data v2"}
    assert [item["credits_used"] for item in items] == [0, 2]
    assert completed_total == 1
    assert execution is not None
    assert completed[0] == {
        "id": completed[0]["id"],
        "execution_id": str(done),
        "workflow_id": str(workflow_id),
        "workflow_name": "Customer Data v2",
        "credits_used": 2,
        "status": "completed",
        "execution_time_ms": 150,
        "created_at": execution["queued_at"],
        "completed_at": execution["finished_at"],
    }
    assert completed[0]["id"] != str(done)
    assert usage_logs(app.db, org.id, limit=1, offset=1)[0][0]["execution_id"] == str(done)


def test_execution_version_grows_with_every_change(app: Flowledger) -> None:
    org = new_org(app)
    execution_id = queue(app, org, new_workflow(app, org))
    project(app)
    queued = execution_version(app.db, execution_id)
    start_execution(app, execution_id, "test")
    project(app)
    started = execution_version(app.db, execution_id)

    assert queued is not None and started is not None and started > queued
    assert execution_version(app.db, uuid4()) is None


# -- credits ---------------------------------------------------------------------------------


def test_balance_is_the_sum_of_the_transaction_rows(app: Flowledger) -> None:
    org, friend = new_org(app, "professional"), new_org(app)
    grant_credits(app, org.id, GrantCredits(amount=50, invoice_id="inv-1"), kind="purchase")
    grant_credits(app, org.id, GrantCredits(amount=50, invoice_id="inv-1"), kind="purchase")
    workflow_id = new_workflow(app, org, credits_per_execution=10)
    done = run(app, org, workflow_id, "completed")
    run(app, org, workflow_id, "failed")
    transfer_credits(app, org.id, TransferCredits(to_tenant_id=friend.tenant, amount=30))
    project(app)

    items, total = list_transactions(app.db, org.id)
    current = balance(app.db, org.id)

    assert current is not None
    assert current["balance"] == 1000 + 50 - 10 - 30 == ledger_sum(app, org)
    assert current["updated_at"] == items[0]["created_at"]
    assert [item["type"] for item in items] == [
        "transfer_out", "refund", "debit", "debit", "purchase", "grant",
    ]  # fmt: skip
    assert [item["amount"] for item in items] == [-30, 10, -10, -10, 50, 1000]
    assert [item["balance_after"] for item in items] == [1010, 1040, 1030, 1040, 1050, 1000]
    assert all(list(item) == TRANSACTION_KEYS for item in items)
    assert total == 6 and len({item["id"] for item in items}) == 6
    assert items[3]["execution_id"] == str(done)
    assert items[4]["description"] == "Credits purchased (invoice inv-1)"
    assert items[5]["description"] == "plan opening grant"
    assert balance(app.db, friend.id)["balance"] == 130 == ledger_sum(app, friend)  # type: ignore[index]
    received, _ = list_transactions(app.db, friend.id, type="transfer_in")
    assert [(r["amount"], r["balance_after"]) for r in received] == [(30, 130)]


def test_transactions_filter_by_type_and_page(app: Flowledger) -> None:
    org = new_org(app)
    for amount in (1, 2, 3):
        grant_credits(app, org.id, GrantCredits(amount=amount, description=f"gift {amount}"))
    project(app)

    page, total = list_transactions(app.db, org.id, type="grant", limit=2, offset=1)

    assert total == 4
    assert [item["description"] for item in page] == ["gift 2", "gift 1"]
    assert list_transactions(app.db, org.id, type="debit") == ([], 0)
    enterprise = new_org(app, "enterprise")
    project(app)
    assert balance(app.db, enterprise.id)["balance"] == 0  # type: ignore[index]
    assert list_transactions(app.db, enterprise.id) == ([], 0)
    assert balance(app.db, uuid4()) is None


# -- replay ----------------------------------------------------------------------------------


def test_replaying_from_position_zero_changes_nothing(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org)
    run(app, org, workflow_id, "completed")
    run(app, org, workflow_id, "failed")
    project(app)
    before = snapshot(app, org)

    with app.db.transaction() as cur:
        for projection in all_projections():
            record_position(cur, projection.name, 0)
    project(app)

    assert snapshot(app, org) == before


def test_small_batches_give_the_same_read_models(app: Flowledger) -> None:
    org = new_org(app)
    workflow_id = new_workflow(app, org)
    for outcome in ("completed", "failed", "cancelled", "completed"):
        run(app, org, workflow_id, outcome)
    for projection in all_projections():
        follower = projection_follower(app, projection)
        follower.batch = 3
        follower.catch_up()
    in_small_batches = snapshot(app, org)

    assert in_small_batches["balance"]["balance"] == 98  # type: ignore[index]
    assert in_small_batches["workflows"][0][0]["execution_count"] == 4  # type: ignore[index]


def snapshot(app: Flowledger, org: Org) -> dict[str, object]:
    return {
        "workflows": list_workflows(app.db, org.id),
        "executions": list_executions(app.db, org.id),
        "usage": usage_logs(app.db, org.id),
        "transactions": list_transactions(app.db, org.id),
        "balance": balance(app.db, org.id),
    }
