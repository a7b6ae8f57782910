"""The real web process (gunicorn, 2 workers) and Dramatiq worker: the rate limit is one
count in Redis across both gunicorn workers, and `/metrics` adds up both workers' counters
and the Dramatiq worker's own metrics (prometheus-client multiprocess files).

Which gunicorn worker served what is read from the per-process metrics files
(`<metrics dir>/web-<master pid>/counter_<worker pid>.db`), one file at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fresh_database
from tests.e2e.conftest import Tenant, sign_up
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import Stack
from tests.support.waiting import until

WINDOW = 60


@pytest.fixture(scope="module")
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, n8n: FakeN8n) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("monitoring")
    env = {
        "FLOWLEDGER_RATE_LIMIT_SCALE": "1",  # the real limits
        "FLOWLEDGER_METRICS_DIR": str(workdir / "metrics"),
        "FLOWLEDGER_N8N_URL": n8n.url,
    }
    with fresh_database("flowledger_e2e_monitoring") as url:
        system = Stack(workdir, url, extra_env=env)
        try:
            yield system.start("web", "worker", "dispatcher", "projector")
        finally:
            system.stop()


def web_dir(stack: Stack) -> Path:
    return Path(stack.env["FLOWLEDGER_METRICS_DIR"]) / f"web-{stack.procs['web'].pid}"


def served_by_worker(stack: Stack, route: str) -> dict[str, float]:
    """Requests to `route` each gunicorn worker counted, from its own file."""
    counts = {}
    for path in sorted(web_dir(stack).glob("counter_*.db")):
        total = 0.0
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == "flowledger_http_requests_total":
                    total += sample.value if sample.labels["route"] == route else 0
        counts[path.stem.removeprefix("counter_")] = total
    return counts


def fresh_get(url: str, headers: dict[str, str]) -> httpx.Response:
    """One request on its own connection, so the kernel may hand it to either worker."""
    return httpx.get(url, headers={**headers, "Connection": "close"}, timeout=30)


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{stack.url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def test_two_gunicorn_workers_share_one_rate_limit_count(stack: Stack) -> None:
    assert stack.env["FLOWLEDGER_RATE_LIMIT_SCALE"] == "1"
    route = "/api/v1/workflows"
    for _attempt in range(3):
        tenant: Tenant = sign_up(stack)
        headers = dict(tenant.api.headers)
        into_minute = time.time() % WINDOW
        if into_minute > WINDOW - 25:  # start early in a window (they are fixed minutes)
            time.sleep(WINDOW - into_minute + 0.05)
        before = served_by_worker(stack, route)
        with ThreadPoolExecutor(14) as pool:
            answers = list(pool.map(fresh_get, [stack.url + route] * 70, [headers] * 70))
        if len({a.headers["X-RateLimit-Reset"] for a in answers}) == 1:
            break
    else:
        raise AssertionError("no burst of 70 fitted in one window")
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 60 and statuses.count(429) == 10, statuses
    for answer in answers:
        assert answer.headers["X-RateLimit-Limit"] == "60"
        assert "X-RateLimit-Remaining" in answer.headers and "X-RateLimit-Reset" in answer.headers
    remaining = sorted(int(a.headers["X-RateLimit-Remaining"]) for a in answers)
    assert remaining == [0] * 11 + list(range(1, 60))  # each count seen once, across workers
    for answer in (a for a in answers if a.status_code == 429):
        error = answer.json()["error"]
        assert error["code"] == "RATE_LIMIT_EXCEEDED"
        assert answer.headers["Retry-After"] == str(error["details"]["retry_after"])
    after = served_by_worker(stack, route)
    served = {pid: n - before.get(pid, 0) for pid, n in after.items()}
    assert sum(served.values()) == 70
    assert len([n for n in served.values() if n > 0]) == 2, served  # both workers answered


def test_metrics_add_up_both_workers_and_show_dramatiq_and_lag(stack: Stack, n8n: FakeN8n) -> None:
    tenant = sign_up(stack)
    workflow = tenant.workflow(n8n.webhook_url("sync"))
    before = scrape(stack)
    with ThreadPoolExecutor(8) as pool:
        health = list(pool.map(fresh_get, [f"{stack.url}/health"] * 40, [{}] * 40))
    assert {h.status_code for h in health} == {200}
    assert health[0].json()["checks"] == {"database": "ok", "redis": "ok", "n8n": "ok"}
    after = scrape(stack)
    labels = {"method": "GET", "route": "/health", "status": "200"}
    counted = total(after, "flowledger_http_requests_total", **labels)
    assert counted - total(before, "flowledger_http_requests_total", **labels) == 40
    per_worker = served_by_worker(stack, "/health")
    assert sum(per_worker.values()) == counted

    runs = [
        tenant.api.post(f"/workflows/{workflow['id']}/execute", json={"input": {}}) for _ in "abc"
    ]
    assert {r.status_code for r in runs} == {202}, [r.text for r in runs]
    for response in runs:
        assert tenant.execution(response.json()["execution_id"])["status"] == "completed"

    def dramatiq_counted() -> dict[Any, float] | None:
        samples = scrape(stack)
        done = total(samples, "dramatiq_messages_total", queue_name="executions")
        return samples if done >= 3 else None

    samples = until(dramatiq_counted, timeout=30, what="dramatiq's metrics of the 3 runs")
    assert (
        total(samples, "dramatiq_message_duration_milliseconds_count", queue_name="executions") >= 3
    )
    assert ("flowledger_dispatcher_lag", ()) in samples
    lags = {
        dict(labels)["projection"]
        for (name, labels), _ in samples.items()
        if name == "flowledger_projection_lag"
    }
    assert {"executions", "workflows", "alerts"} <= lags
    ready = (("queue", "executions"), ("state", "ready"))
    assert ("flowledger_queue_messages", ready) in samples
    assert not any(name == "flowledger_metrics_source_errors" for name, _ in samples)
