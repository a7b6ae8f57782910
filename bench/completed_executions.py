"""Figure (3): completed executions/s end to end, and how many saves one execution costs.

For ``seconds``, the load generator submits ``POST /workflows/{id}/execute`` (API key, 202)
as fast as gunicorn accepts; every run goes API → event store → dispatcher → Dramatiq →
worker (start + debit, call the fake n8n, which answers at once, complete) → completed.
The clock runs from the first submission until the event log holds a terminal event for
every submitted run; the figure is completed runs / that time. The log is read directly
(the events table after the starting position), so no read model's lag is included.

Saves per execution: transactions that wrote events (distinct ``xmin`` of the rows, one per
``Application.save``) and events, over the runs of the phase. Rolled-back transactions of
the database in the meantime (``pg_stat_database``) are mostly saves that lost an
optimistic-concurrency race (the credit account is one hot aggregate) and were retried.
"""

from __future__ import annotations

import time
from typing import Any

from bench import load
from bench.accepted_executions import per_execution
from bench.harness import TERMINAL, Context, EventLog, wait_until


def measure(ctx: Context, seconds: float, connections: int) -> dict[str, Any]:
    log = EventLog(ctx)
    try:
        log.refresh()
        transactions = log.transactions()
        url = f"{ctx.api}/workflows/{ctx.tenant.workflow_id}/execute"
        cpu = ctx.cpu()
        started = time.monotonic()
        submitted = load.hammer(url, {"input": {"bench": "e2e"}}, {"X-API-Key": ctx.tenant.api_key},
                                connections=connections, seconds=seconds)  # fmt: skip
        ctx.web_requests += submitted.requests
        submit_seconds = time.monotonic() - started

        def all_terminal() -> bool:
            log.refresh()
            return log.terminal() >= log.queued() > 0

        budget = 120 + log.refresh().get("events.execution:Execution.Queued", 0) / 20
        wait_until(all_terminal, budget, 0.05, "every submitted execution to finish")
        elapsed = time.monotonic() - started
        used = cpu.stop()
        time.sleep(1.5)  # PostgreSQL flushes its transaction statistics about once a second
        after = log.transactions()
        saves = log.saves()
        queued = log.queued()
        by_status = {
            status: log.count(topic) for topic, status in TERMINAL.items() if log.count(topic)
        }
        completed = by_status.get("completed", 0)
        return {
            "executions": queued,
            "by_status": by_status,
            "seconds": round(elapsed, 3),
            "submit_seconds": round(submit_seconds, 3),
            "completed_per_s": round(completed / elapsed, 1),
            "accepted_per_s_while_submitting": round(submitted.count(202) / submitted.seconds, 1),
            "load": submitted.as_dict(),
            "cpu_percent_of_one_core": used,
            "cpu_ms_per_execution": per_execution(used, queued / elapsed),
            "saves_per_execution": round(saves["saves"] / queued, 2) if queued else None,
            "events_per_execution": round(saves["events"] / queued, 2) if queued else None,
            "events_by_topic": dict(sorted(log.counts.items())),
            "rolled_back_transactions": after["rollbacks"] - transactions["rollbacks"],
            "committed_transactions": after["commits"] - transactions["commits"],
        }
    finally:
        log.close()
