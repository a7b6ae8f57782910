"""A schedule-triggered workflow run by the `flowledger scheduler` process, over HTTP."""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import Tenant, sign_up
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import Stack


def scheduled_runs(tenant: Tenant, workflow_id: str) -> list[dict[str, Any]]:
    page = tenant.api.get("/executions", params={"workflow_id": workflow_id, "limit": 100})
    assert page.status_code == 200, page.text
    return [e for e in page.json()["items"] if e["trigger"] == "schedule"]


def test_the_scheduler_runs_a_workflow_every_second_until_deactivated(
    stack: Stack, n8n: FakeN8n
) -> None:
    tenant = sign_up(stack)
    trigger = {"type": "schedule", "cron": "* * * * * *", "timezone": "UTC", "catchup": "none"}
    wf = tenant.workflow(n8n.webhook_url("sync-scheduled"), trigger=trigger)
    deadline = time.monotonic() + 30
    while len(scheduled_runs(tenant, wf["id"])) < 3:
        assert time.monotonic() < deadline, stack.log("scheduler")[-3000:]
        time.sleep(0.2)
    done = tenant.execution(scheduled_runs(tenant, wf["id"])[-1]["id"])
    assert done["status"] == "completed" and done["credits_used"] == 1
    slots = [e["metadata"]["scheduled_for"] for e in scheduled_runs(tenant, wf["id"])]
    assert len(slots) == len(set(slots))  # one run per slot

    assert tenant.api.post(f"/workflows/{wf['id']}/deactivate").status_code == 200
    time.sleep(1.5)  # a slot being fired as it was deactivated may still land
    settled = len(scheduled_runs(tenant, wf["id"]))
    time.sleep(2.5)
    assert len(scheduled_runs(tenant, wf["id"])) == settled
