"""Figure (6): resident memory of one gunicorn worker after 10,000 requests.

Every request the benchmark sent to gunicorn counts (the other figures' included); the rest
is topped up with ``POST /workflows/{id}/execute`` (the request that grows the process: each
one adds an execution to the application's aggregate cache) until both workers have had
``per_worker`` requests on average. VmRSS of each gunicorn worker (children of the master)
is read from ``/proc/<pid>/status``; the figure is the larger one.
"""

from __future__ import annotations

from typing import Any

from bench import load
from bench.harness import Context, EventLog, rss_mib


def snapshot(ctx: Context) -> dict[str, float]:
    return {str(pid): round(rss_mib(pid), 1) for pid in ctx.stack.web_workers()}


def measure(ctx: Context, per_worker: int, connections: int) -> dict[str, Any]:
    workers = ctx.stack.web_workers()
    wanted = per_worker * len(workers)
    missing = wanted - ctx.web_requests
    if missing > 0:
        log = EventLog(ctx)
        try:

            def enough() -> bool:
                log.refresh()
                return log.queued() >= missing

            url = f"{ctx.api}/workflows/{ctx.tenant.workflow_id}/execute"
            result = load.hammer(url, {"input": {"bench": "memory"}},
                                 {"X-API-Key": ctx.tenant.api_key}, connections=connections,
                                 seconds=600, until=enough)  # fmt: skip
            ctx.web_requests += result.requests
        finally:
            log.close()
    rss = snapshot(ctx)
    return {
        "rss_mib": rss,
        "max_rss_mib": max(rss.values()),
        "requests_total": ctx.web_requests,
        "workers": len(workers),
        "per_worker_target": per_worker,
    }
