"""Event → triggered execution started, at LOW load (issue 3: target p50 <= 50 ms).

A workflow with the trigger ``{"type": "event", "event_types": ["bench.ping"]}`` (pointing at
the fake n8n, like the benchmark's other workflow) is registered over HTTP; then, one every
50-100 ms, a client sends ``POST /api/v1/events`` (``event_type: bench.ping``) with the
organization's API key, as n8n or an app would. The chain: the API records the
``AutomationEvent`` naming the matched workflow → the dispatcher sends ``trigger_workflows``
→ a worker queues the run (id derived from (event, workflow)) → the dispatcher sends
``call_n8n`` → a worker records ``Started``, debits and calls n8n.

Latency = from just before the POST is sent (wall clock) to the timestamp of the run's
``Started`` event (read from the event store: the ``Execution`` aggregate's ``started_at``).
Also shown, for information: the POST's own round trip (201 with the event recorded).
"""

from __future__ import annotations

import random
import time
from typing import Any
from uuid import UUID

import httpx

from bench.harness import Context, expect, summary_ms, wait_until

EVENT_TYPE = "bench.ping"


def register_workflow(ctx: Context) -> UUID:
    """The event-triggered workflow (registering needs an admin: the operator's token)."""
    headers = {"Authorization": f"Bearer {ctx.tenant.token}", "X-Tenant-ID": ctx.tenant.tenant_id}
    with httpx.Client(base_url=ctx.api, headers=headers, timeout=60) as http:
        workflow = expect(http.post("/workflows", json={
            "name": "Bench on bench.ping",
            "webhook_url": f"{ctx.fake.url}/webhook/sync-bench-event",
            "response_mode": "sync",
            "credits_per_execution": 1,
            "timeout_seconds": 600,
            "trigger": {"type": "event", "event_types": [EVENT_TYPE]},
        }), 201)  # fmt: skip
    ctx.web_requests += 1
    return UUID(workflow["id"])


def measure(ctx: Context, count: int, gap: tuple[float, float] = (0.05, 0.1)) -> dict[str, Any]:
    from commands.automation_event import execution_key
    from events.execution import Execution

    app = ctx.app()
    workflow_id = register_workflow(ctx)
    sent: dict[UUID, float] = {}  # execution id -> wall clock just before the POST
    round_trips: list[float] = []
    with ctx.client() as http:
        for i in range(count):
            time.sleep(random.uniform(*gap))
            wall, t0 = time.time(), time.monotonic()
            answer = http.post("/events", json={"event_type": EVENT_TYPE, "event_data": {"i": i}})
            round_trips.append(time.monotonic() - t0)
            event = expect(answer, 201)
            if event["triggered_workflows"] != [str(workflow_id)]:
                raise RuntimeError(f"the event triggered {event['triggered_workflows']}, "
                                   f"not the workflow {workflow_id}")  # fmt: skip
            key = execution_key(UUID(event["id"]), workflow_id)
            sent[Execution.create_id(key=key)] = wall
    ctx.web_requests += count
    started: dict[UUID, float] = {}

    def all_started() -> bool:
        for execution_id in sent.keys() - started.keys():
            execution = app.find(execution_id, Execution)
            if execution is not None and execution.started_at is not None:
                started[execution_id] = execution.started_at.timestamp()
        return len(started) == count

    wait_until(all_started, 60, 0.1, "every event-triggered execution to have started")
    return {
        "event_to_started": summary_ms([started[e] - wall for e, wall in sent.items()]),
        "post_round_trip": summary_ms(round_trips),
        "workflow_id": str(workflow_id),
        "gap_ms": [1000 * gap[0], 1000 * gap[1]],
    }
