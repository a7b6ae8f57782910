"""Figure (2): accepted async executions/s through gunicorn (2 workers).

``POST /workflows/{id}/execute`` with ``X-API-Key`` (202, queued) as fast as the server
answers, over ``connections`` keep-alive connections, for ``seconds``. Each accepted request
authenticates the key, loads the workflow and the credit account, and saves one new
``Execution`` (one event): the same save the ceiling (1) makes, plus the web framework, the
auth and the loads around it. Target: at least 0.6 x (1).

Measured three times, stopping processes in between: with the whole pipeline running (the
workers start and finish the runs at the same time, on the same two cores and the same
event store), with the projector alone still running (dispatcher, worker and scheduler
stopped), and with the API alone (gunicorn, PostgreSQL and Redis), which is the figure
compared with (1): the ceiling, too, is measured with nothing else on the machine. The
other two are shown for information.
"""

from __future__ import annotations

import time
from typing import Any

from bench import load
from bench.harness import QUEUED, Context, EventLog


def per_execution(cpu_percent: dict[str, float], rate: float) -> dict[str, float]:
    """CPU milliseconds each part spent per execution, from percent of a core and a rate."""
    if not rate:
        return {}
    return {part: round(10 * value / rate, 2) for part, value in cpu_percent.items()}


def measure(ctx: Context, seconds: float, connections: int) -> dict[str, Any]:
    log = EventLog(ctx)
    try:
        url = f"{ctx.api}/workflows/{ctx.tenant.workflow_id}/execute"
        transactions = log.transactions()
        cpu = ctx.cpu()
        result = load.hammer(url, {"input": {"bench": "accept"}},
                             {"X-API-Key": ctx.tenant.api_key},
                             connections=connections, seconds=seconds)  # fmt: skip
        ctx.web_requests += result.requests
        used = cpu.stop()
        log.refresh()
        accepted = result.count(202)
        time.sleep(1.5)  # PostgreSQL flushes its transaction statistics about once a second
        committed = log.transactions()["commits"] - transactions["commits"]
        return {
            "cpu_percent_of_one_core": used,
            "cpu_ms_per_execution": per_execution(used, accepted / result.seconds),
            "accepted_per_s": round(accepted / result.seconds, 1),
            "accepted": accepted,
            "queued_in_log": log.count(QUEUED),
            "committed_transactions_per_execution": round(committed / accepted, 1)
            if accepted
            else None,
            "connections": connections,
            "load": result.as_dict(),
        }
    finally:
        log.close()
