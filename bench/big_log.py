"""A large, realistic notification log for the replay benchmarks (rebuild, audit verify).

`fill(app, events)` writes about `events` events the way the running system would: a few
organizations (each with its owner, credit account and workflows) made by the real command
handlers, then executions that are queued, started (with the debit on the account),
completed or failed (failures refunded), made with the aggregates' own methods. Many
aggregates go into one `save`, so the recorder's table lock is taken once per batch and a
million events take a minute or two rather than an hour.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any
from uuid import UUID

from commands.credits import GrantCredits, account_of, grant_credits
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.execution import Execution

ORGANIZATIONS = 4
WORKFLOWS_PER_ORGANIZATION = 5
EXECUTIONS_PER_SAVE = 250  # about 1,000 events per save (one table lock)
EVENTS_PER_EXECUTION = 4  # Queued, Started + Debited, Completed (or Failed + Refunded)


def setup_tenants(app: Flowledger, label: str) -> list[tuple[UUID, list[UUID]]]:
    """Organizations with plenty of credits and their workflows, via the command handlers."""
    tenants = []
    for n in range(ORGANIZATIONS):
        owner = register_user(
            app,
            RegisterUser(
                email=f"owner{n}@{label}.example.com", password="x" * 12, full_name=f"Owner {n}"
            ),
        )
        created = create_organization(
            app,
            owner.id,
            CreateOrganization(name=f"Org {n}", tenant_id=f"{label}-{n}", plan_type="enterprise"),
        )
        org_id = created.organization.id
        grant_credits(app, org_id, GrantCredits(amount=10**9, description="bench"))
        workflows = [
            register_workflow(
                app,
                org_id,
                RegisterWorkflow(name=f"wf {n}.{w}", webhook_url="http://127.0.0.1:9/webhook/x"),
            ).id
            for w in range(WORKFLOWS_PER_ORGANIZATION)
        ]
        tenants.append((org_id, workflows))
    return tenants


def _execution(org_id: UUID, tenant_id: str, workflow_id: UUID, n: int) -> Execution:
    return Execution(
        organization_id=org_id,
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        input={"n": n, "text": "hello world"},
        metadata={"source": "bench"},
        trigger="api",
        credits=1,
        timeout_seconds=300,
        retry={"max_attempts": 3, "backoff_seconds": 1},
        response_mode="async",
        target_url="http://127.0.0.1:9/webhook/x",
    )


def fill(
    app: Flowledger,
    events: int,
    *,
    label: str = "biglog",
    progress: Callable[[int], Any] | None = None,
    seed: int = 7,
) -> int:
    """Append about `events` events; returns how many the log holds afterwards.

    `progress(n)` is called with the number of events added by each save.
    """
    rng = random.Random(seed)
    before = app.recorder.max_notification_id() or 0
    tenants = setup_tenants(app, label)
    accounts = {org_id: account_of(app, org_id) for org_id, _ in tenants}
    tenant_ids = {org_id: f"{label}-{n}" for n, (org_id, _) in enumerate(tenants)}
    made = (app.recorder.max_notification_id() or 0) - before
    n = 0
    while made < events:
        org_id, workflows = tenants[n % len(tenants)]
        account = accounts[org_id]
        batch: list[Any] = []
        for _ in range(min(EXECUTIONS_PER_SAVE, max(1, (events - made) // EVENTS_PER_EXECUTION))):
            run = _execution(org_id, tenant_ids[org_id], rng.choice(workflows), n)
            account.debit(1, run.id)
            run.start(debited=1, runner="bench")
            if rng.random() < 0.9:
                run.complete({"ok": True, "n": n}, duration_ms=rng.randint(20, 2000))
            else:
                run.fail({"message": "n8n said no", "code": "N8N_ERROR"}, duration_ms=50)
                account.refund(run.refund_due, run.id)
            batch.append(run)
            n += 1
        recordings = app.save(account, *batch)
        made += len(recordings)
        if progress is not None:
            progress(len(recordings))
    return int(app.recorder.max_notification_id() or 0)
