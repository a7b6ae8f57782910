"""kill -9 at the worst moments: nothing accepted is lost, nothing is charged twice."""

from __future__ import annotations

import time
from collections import Counter

import psycopg

from tests.e2e.conftest import Tenant, sign_up
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import Stack


def _debits_per_execution(tenant: Tenant) -> Counter[str]:
    return Counter(t["execution_id"] for t in tenant.transactions() if t["type"] == "debit")


def _stored_events(stack: Stack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM flowledger_events").fetchone()
        return int(row[0]) if row else 0


def test_worker_killed_mid_call_finishes_every_run_once(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("slow-crash"), credits_per_execution=2)
    n8n.slow_seconds = 1.5
    ids = [
        tenant.api.post(f"/workflows/{wf['id']}/execute", json={"input": {"i": i}}).json()[
            "execution_id"
        ]
        for i in range(4)
    ]
    n8n.wait_for_requests(1, timeout=15, path="/webhook/slow-crash")
    stack.kill("worker")  # SIGKILL while n8n calls are in flight
    stack.start("worker")
    finished = [tenant.execution(i, timeout=60) for i in ids]
    assert {e["status"] for e in finished} == {"completed"}
    debits = _debits_per_execution(tenant)
    assert all(debits[i] == 1 for i in ids)
    assert tenant.balance() == 100 - 2 * len(ids)


def test_dispatcher_killed_between_send_and_track_loses_nothing(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    wf = tenant.workflow(n8n.webhook_url("sync-dispatch-crash"), credits_per_execution=1)
    stack.kill("dispatcher")
    events_before = _stored_events(stack)
    ids = [
        tenant.api.post(f"/workflows/{wf['id']}/execute", json={"input": {"i": i}}).json()[
            "execution_id"
        ]
        for i in range(10)
    ]
    # This copy dies by SIGKILL right after sending its first batch, before tracking it.
    stack.start("dispatcher", env={"FLOWLEDGER_FAILPOINT": "dispatcher.after_send:1"})
    deadline = time.monotonic() + 20
    while stack.procs["dispatcher"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.procs["dispatcher"].returncode == -9
    stack.procs.pop("dispatcher")
    stack.start("dispatcher")  # re-sends what the dead copy had not tracked
    finished = [tenant.execution(i, timeout=60) for i in ids]
    assert {e["status"] for e in finished} == {"completed"}
    assert all(count == 1 for count in _debits_per_execution(tenant).values())
    assert tenant.balance() == 90
    assert _stored_events(stack) > events_before + 10  # queued, started, completed...
