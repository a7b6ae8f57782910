"""Figure (5): commit of an event → its actor starting, at LOW load; and what idling costs.

One execution every 50-100 ms is queued by this process with the command handler itself
(``queue_execution``, straight into the stack's database), and its commit time is taken when
the save returns. Then the chain runs: PostgreSQL NOTIFY → the dispatcher wakes, reads the
log, sends the Dramatiq message → a worker thread's poll of Redis finds it → ``call_n8n``
starts, loads the execution and the credit account, debits (``Started``), saves, and calls
n8n. Two ends are reported:

* **→ Started**: the timestamp of the ``Started`` event, taken by the actor when it records
  the start (after its two loads, before its save): the closest we get to "the actor began";
* **→ n8n called**: when the fake n8n received the call (CLOCK_MONOTONIC is shared by every
  process): an upper bound that also holds the start's save and the request.

Also shown: commit → the ``executions`` read model has it (what read-your-writes waits for
in the API, e.g. in ``/execute``).

Idle cost: Redis commands/s (``INFO stats`` ``total_commands_processed``) while nothing
happens, minus the baseline measured before the stack started, and the CPU the idle
processes burn. Dramatiq's Redis consumer polls (no blocking pop), so low latency costs
polls: see ``FLOWLEDGER_WORKER_TIMEOUT_MS`` and ``workers/broker.py``.
"""

from __future__ import annotations

import random
import time
from typing import Any
from uuid import UUID

import redis

from bench.harness import REDIS_URL, Context, cpu_seconds, redis_rate, summary_ms, tree, wait_until


def baseline_redis(seconds: float) -> float:
    """Redis commands/s with no stack running (other clients, our own INFO calls)."""
    return redis_rate(redis.Redis.from_url(REDIS_URL), seconds)


def idle_cost(ctx: Context, seconds: float, baseline: float) -> dict[str, Any]:
    """Redis commands/s and CPU of each stack process over `seconds` of nothing to do."""
    pids = {name: tree(ctx.stack.pid(name)) for name in ctx.stack.procs}
    cpu0 = {name: cpu_seconds(p) for name, p in pids.items()}
    t0 = time.monotonic()
    gross = redis_rate(redis.Redis.from_url(REDIS_URL), seconds)
    elapsed = time.monotonic() - t0
    cpu = {n: round(100 * (cpu_seconds(p) - cpu0[n]) / elapsed, 1) for n, p in pids.items()}
    return {
        "redis_commands_per_s": round(gross - baseline, 1),
        "redis_commands_per_s_gross": round(gross, 1),
        "redis_baseline_per_s": round(baseline, 1),
        "idle_cpu_percent_of_one_core": cpu,
        "seconds": seconds,
    }


def _read_model_lag(app: Any, committed: float) -> float:
    """Seconds from `committed` until the `executions` read model has our position (the wait
    of read-your-writes), polled every 0.5 ms."""
    position = int(app.recorder.max_notification_id() or 0)
    while True:
        row = app.db.one("SELECT position FROM tracking WHERE name = 'executions'")
        if row and int(row["position"]) >= position:
            return time.monotonic() - committed
        if time.monotonic() - committed > 10:
            raise TimeoutError("the executions read model did not catch up in 10 s")
        time.sleep(0.0005)


def measure(ctx: Context, count: int, gap: tuple[float, float] = (0.05, 0.1)) -> dict[str, Any]:
    from commands.execution import ExecuteWorkflow, queue_execution
    from events.execution import Execution

    app, tenant = ctx.app(), ctx.tenant
    ctx.fake.reset()
    commits: dict[UUID, tuple[float, float]] = {}
    to_read_model: list[float] = []
    for i in range(count):
        time.sleep(random.uniform(*gap))
        cmd = ExecuteWorkflow.model_validate({"input": {"probe": i}})
        execution = queue_execution(app, tenant.org_id, tenant.tenant_id, tenant.workflow_id, cmd)
        commits[execution.id] = (time.monotonic(), time.time())
        to_read_model.append(_read_model_lag(app, commits[execution.id][0]))

    def called() -> dict[UUID, float]:
        return {
            UUID(r["headers"]["x-flowledger-execution-id"]): float(r["received_at"])
            for r in ctx.fake.requests("/webhook/")
            if r["headers"].get("x-flowledger-execution-id")
        }

    wait_until(lambda: len(called().keys() & commits.keys()) == count, 60, 0.1,
               "the fake n8n to receive every low-load execution")  # fmt: skip
    received = called()
    started: dict[UUID, float] = {}

    def all_started() -> bool:
        for execution_id in commits.keys() - started.keys():
            execution = app.load(execution_id, Execution, "execution")
            if execution.started_at is not None:
                started[execution_id] = execution.started_at.timestamp()
        return len(started) == count

    wait_until(all_started, 30, 0.1, "every low-load execution to have started")
    to_started = [started[e] - wall for e, (_, wall) in commits.items()]
    to_called = [received[e] - mono for e, (mono, _) in commits.items()]
    return {
        "commit_to_started": summary_ms(to_started),
        "commit_to_read_model": summary_ms(to_read_model),
        "commit_to_n8n_called": summary_ms(to_called),
        "gap_ms": [1000 * gap[0], 1000 * gap[1]],
    }
