"""A customer's whole journey over HTTP, against the real processes."""

from __future__ import annotations

import concurrent.futures
from collections import Counter

from tests.e2e.conftest import Tenant, sign_up
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import Stack


def test_runs_a_workflow_async_and_charges_it(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("sync-journey"), credits_per_execution=3)
    queued = tenant.api.post(f"/workflows/{wf['id']}/execute", json={"input": {"n": 1}})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    done = tenant.execution(queued.json()["execution_id"])
    assert done["status"] == "completed" and done["output"]["echo"] == {"n": 1}
    assert done["credits_used"] == 3 and done["attempts"] == 1
    assert tenant.balance() == 97


def test_execute_answers_with_n8n_output(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("sync-execute"))
    answer = tenant.api.post("/execute", json={"workflow_id": wf["id"], "data": {"q": "é"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["status"] == "completed"
    assert body["data"]["echo"] == {"q": "é"}
    assert body["credits_used"] == 1 and body["credits_remaining"] == 99
    waited = tenant.api.post(f"/workflows/{wf['id']}/execute", json={"input": {}, "wait": True})
    assert waited.status_code == 200 and waited.json()["status"] == "completed"


def test_callback_mode_completes_when_n8n_calls_back(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("callback-e2e"), response_mode="callback")
    queued = tenant.api.post(f"/workflows/{wf['id']}/execute", json={"input": {}})
    done = tenant.execution(queued.json()["execution_id"])
    assert done["status"] == "completed" and done["output"] == {"result": "called back"}
    assert tenant.balance() == 99


def test_refunds_failed_and_timed_out_runs(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    failing = tenant.workflow(n8n.webhook_url("fail-e2e"), credits_per_execution=5)
    slow = tenant.workflow(n8n.webhook_url("slow-e2e"), credits_per_execution=5, timeout_seconds=1)
    failed = tenant.api.post(f"/workflows/{failing['id']}/execute", json={"input": {}})
    late = tenant.api.post(f"/workflows/{slow['id']}/execute", json={"input": {}})
    assert tenant.execution(failed.json()["execution_id"])["error"]["status"] == 500
    assert tenant.execution(late.json()["execution_id"])["status"] == "timed_out"
    assert tenant.balance() == 100
    kinds = Counter(t["type"] for t in tenant.transactions())
    assert kinds == {"grant": 1, "debit": 2, "refund": 2}
    assert sum(t["amount"] for t in tenant.transactions()) == tenant.balance()


def test_execute_maps_n8n_errors_to_502(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("fail-sync"))
    answer = tenant.api.post("/execute", json={"workflow_id": wf["id"], "data": {}})
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "N8N_ERROR"
    execution_id = answer.json()["error"]["details"]["execution_id"]
    assert tenant.execution(execution_id)["status"] == "failed"
    assert tenant.balance() == 100


def _spend_concurrently(tenant: Tenant, workflow_id: str, runs: int) -> list[str]:
    """Submit `runs` executions at once; the ids of the accepted ones.

    Once workers have debited, the API's visible balance check refuses with 402 at once,
    so a submission is either accepted (202) or refused before anything is written.
    """

    def execute(_: int) -> str | None:
        answer = tenant.api.post(f"/workflows/{workflow_id}/execute", json={"input": {}})
        assert answer.status_code in (202, 402), answer.text
        return str(answer.json()["execution_id"]) if answer.status_code == 202 else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=runs) as pool:
        return [i for i in pool.map(execute, range(runs)) if i is not None]


def test_twenty_concurrent_runs_spend_exactly_the_balance(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)  # starter: 100 credits
    wf = tenant.workflow(n8n.webhook_url("sync-concurrent"), credits_per_execution=10)
    ids = _spend_concurrently(tenant, wf["id"], 20)
    statuses = Counter(tenant.execution(i)["status"] for i in ids)
    assert statuses["completed"] == 10 and set(statuses) <= {"completed", "rejected"}
    assert tenant.balance() == 0
    assert all(t["balance_after"] >= 0 for t in tenant.transactions())


def test_refunds_of_concurrent_failures_all_arrive(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("fail-concurrent"), credits_per_execution=10)
    ids = _spend_concurrently(tenant, wf["id"], 20)
    statuses = Counter(tenant.execution(i)["status"] for i in ids)
    assert statuses["failed"] >= 10 and set(statuses) <= {"failed", "rejected"}
    assert tenant.balance() == 100
    kinds = Counter(t["type"] for t in tenant.transactions())
    assert kinds["debit"] == kinds["refund"] == statuses["failed"]
