"""`/metrics` in the embedded mode: one process, a plain registry, numbers read at scrape time."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_api_harness import Harness, assert_error


def scrape(api: Harness, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`, keyed by name and sorted labels."""
    result = api.call("GET", "/metrics", headers=headers)
    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(result.text)
        for sample in family.samples
    }


def requests(samples: dict, method: str, route: str, status: str) -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples.get(("flowledger_http_requests_total", labels), 0.0)


def test_counts_requests_by_route_template_and_status(api: Harness) -> None:
    token = api.user("owner@example.com")
    api.organization(token, "acme")
    route = "/api/v1/workflows/{workflow_id:uuid}"
    before = scrape(api)
    for n in range(3):  # three different paths, one route
        path = f"/api/v1/workflows/00000000-0000-4000-8000-00000000000{n}"
        assert api.call("GET", path, token).status_code == 404
    assert api.call("GET", "/api/v1/workflows", token).status_code == 200
    assert api.call("GET", "/no/such/place").status_code == 404
    after = scrape(api)
    assert requests(after, "GET", route, "404") - requests(before, "GET", route, "404") == 3
    assert requests(after, "GET", "/api/v1/workflows", "200") == 1
    assert requests(after, "GET", "unmatched", "404") == 1
    assert not any("00000000" in str(key) for key in after)  # no raw paths as labels
    count = (("method", "GET"), ("route", route))
    assert after[("flowledger_http_request_duration_seconds_count", count)] == 3
    assert after[("flowledger_http_request_duration_seconds_sum", count)] > 0


def test_reports_lag_queues_deliveries_and_alerts_at_scrape_time(api: Harness) -> None:
    token = api.user("owner@example.com")
    api.organization(token, "acme")
    api.settle()
    samples = scrape(api)
    head = samples[("flowledger_log_position", ())]
    assert head == api.position() > 0
    lags = {
        dict(labels)["projection"]: value
        for (name, labels), value in samples.items()
        if name == "flowledger_projection_lag"
    }
    assert {"workflows", "executions", "credit_transactions", "alerts"} <= set(lags)
    assert all(0 <= lag <= head for lag in lags.values())
    # no dispatcher runs in this harness: it is behind by the whole log
    assert samples[("flowledger_dispatcher_lag", ())] == head
    ready = (("queue", "executions"), ("state", "ready"))
    assert samples[("flowledger_queue_messages", ready)] == 0
    for status in ("pending", "succeeded", "failed"):
        assert samples[("flowledger_webhook_deliveries", (("status", status),))] == 0
    assert samples[("flowledger_alerts_active", ())] == 0
    assert not any(name == "flowledger_metrics_source_errors" for name, _ in samples)


def test_a_failing_source_is_reported_not_a_500(api: Harness) -> None:
    api.deps.db.script(["DROP TABLE alerts"])  # a read model gone missing
    samples = scrape(api)
    errors = (("source", "database"),)
    assert samples[("flowledger_metrics_source_errors", errors)] == 1
    assert ("flowledger_queue_messages", (("queue", "executions"), ("state", "ready"))) in samples


def test_a_metrics_token_when_configured(tmp_path: Path) -> None:
    with Harness.start(tmp_path, metrics_token="scrape-me") as api:
        assert_error(api.call("GET", "/metrics"), 401, "UNAUTHORIZED")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(api.call("GET", "/metrics", headers=wrong), 401, "UNAUTHORIZED")
        assert scrape(api, Authorization="Bearer scrape-me")
