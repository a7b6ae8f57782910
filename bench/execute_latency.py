"""Figure (4): ``POST /execute`` latency at low concurrency, minus the fake n8n's own.

``clients`` threads each send requests one after the other (keep-alive), with an API key.
One ``/execute`` authenticates, queues and starts the run (one save: the execution and the
debit), calls the fake n8n, completes the run (a second save), waits until the read models
have the result (read-your-writes) and answers. The fake n8n's own latency is measured in
the same run by calling its webhook directly with a body like the gateway's; the figure is
the API's percentile minus the fake's (p50 - p50, p99 - p99).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from bench.harness import Context, summary_ms

WARMUP = 10


def _timed(clients: int, count: int, send: Callable[[httpx.Client], httpx.Response],
           make: Callable[[], httpx.Client]) -> tuple[list[float], int]:  # fmt: skip
    """Latencies (s) of `count` requests per client, after a warm-up; and the failures."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def client_loop() -> None:
        nonlocal failures
        with make() as client:
            for _ in range(WARMUP):
                send(client)
            for _ in range(count):
                started = time.perf_counter()
                answer = send(client)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    failures += answer.status_code != 200

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


def measure(ctx: Context, count: int, clients: int) -> dict[str, Any]:
    tenant = ctx.tenant
    execution_id = str(uuid.uuid4())
    callback = {"status_url": f"{ctx.api}/internal/update-status",
                "error_url": f"{ctx.api}/internal/log-error", "token": "x" * 64}  # fmt: skip
    body = {"execution_id": execution_id, "workflow_id": str(tenant.workflow_id),
            "tenant_id": tenant.tenant_id, "input": {"bench": "latency"}, "metadata": {},
            "callback": callback}  # fmt: skip
    cpu = ctx.cpu()
    fake, fake_failures = _timed(
        clients, count,
        lambda c: c.post("/webhook/sync-bench", json=body,
                         headers={"X-Flowledger-Execution-ID": execution_id}),
        lambda: httpx.Client(base_url=ctx.fake.url, timeout=30),
    )  # fmt: skip
    api, api_failures = _timed(
        clients, count,
        lambda c: c.post("/execute", json={"workflow_id": str(tenant.workflow_id),
                                            "data": {"bench": "latency"}}),
        ctx.client,
    )  # fmt: skip
    ctx.web_requests += clients * (count + WARMUP)
    used = cpu.stop()
    api_s, fake_s = summary_ms(api), summary_ms(fake)
    return {
        "clients": clients,
        "api": api_s,
        "fake_n8n": fake_s,
        "p50_minus_fake_ms": round(api_s["p50_ms"] - fake_s["p50_ms"], 2),
        "p99_minus_fake_ms": round(api_s["p99_ms"] - fake_s["p99_ms"], 2),
        "failures": api_failures + fake_failures,
        "cpu_percent_of_one_core": used,
    }
