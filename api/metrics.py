"""`/metrics` (no prefix): Prometheus text format.

What it shows:

* `flowledger_http_requests_total{method, route, status}` and the latency histogram
  `flowledger_http_request_duration_seconds{method, route}`, labelled by Falcon's route
  template (`/api/v1/executions/{execution_id}`, `unmatched` for unknown paths), so the
  number of series stays bounded whatever clients send;
* Dramatiq's own metrics (`dramatiq_messages_total`, `..._errors_total`, `..._retries_total`,
  `dramatiq_message_duration_milliseconds`, ...) written by dramatiq's Prometheus
  middleware in the worker processes (enabled in `workers/broker.py`);
* computed at scrape time, from the database and the broker: `flowledger_log_position`,
  `flowledger_projection_lag{projection}`, `flowledger_dispatcher_lag`,
  `flowledger_queue_messages{queue, state}`, `flowledger_webhook_deliveries{status}`
  (deliveries by current outcome) and `flowledger_alerts_active`.

Processes. gunicorn runs several worker processes and Dramatiq several more, so counters
live in prometheus-client's multiprocess files: each server (a gunicorn master, a Dramatiq
supervisor) writes under `<FLOWLEDGER_METRICS_DIR>/<kind>-<its pid>/`, and a scrape, by
whichever gunicorn worker answers it, merges the files of every such directory whose server
is alive (directories of dead servers are ignored, and removed when a web server starts).
The directory must therefore be on the host the web and worker processes share. The
embedded mode (`flowledger run`, tests) is one process with a plain registry and no
Dramatiq metrics files.

Access: open by default, like `/health` (scrapers rarely log in); with
`FLOWLEDGER_METRICS_TOKEN` set it wants `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import falcon
import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from api.errors import ApiError

if TYPE_CHECKING:
    from api.app import Deps

log = structlog.get_logger()

ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def use_multiprocess(root: Path, kind: str = "web") -> Path:
    """Make this process write its metrics under `root/<kind>-<parent pid>/` (a gunicorn
    worker: its master's pid), and forget directories of servers that are gone.

    prometheus-client picks its value class when it is imported, before this runs; it is
    picked again here, so the order of imports does not matter.
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        if stale.is_dir() and not _alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    path = root / f"{kind}-{os.getppid()}"
    path.mkdir(exist_ok=True)
    os.environ[ENV] = str(path)
    values.ValueClass = values.get_value_class()
    return path


def _alive(directory: Path) -> bool:
    """Whether the server a `<kind>-<pid>` directory belongs to still runs."""
    _, _, pid = directory.name.rpartition("-")
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Files(Collector):
    """The merged multiprocess files of every live server under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterator[Metric]:
        if not self.root.is_dir():
            return iter(())
        files = [
            str(f) for d in sorted(self.root.iterdir()) if d.is_dir() and _alive(d)
            for f in sorted(d.glob("*.db"))
        ]  # fmt: skip
        return iter(MultiProcessCollector.merge(files, accumulate=True))


class Live(Collector):
    """Numbers read at scrape time; a source that fails is reported, never a 500."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def collect(self) -> Iterator[Metric]:
        from api.monitoring import lags, queue_depths

        errors = GaugeMetricFamily(
            "flowledger_metrics_source_errors",
            "1 when a source of the scrape-time metrics failed during this scrape",
            labels=["source"],
        )
        try:
            head, projections, dispatcher_lag = lags(self.deps)
            yield GaugeMetricFamily(
                "flowledger_log_position", "Head of the notification log", value=head
            )
            lag = GaugeMetricFamily(
                "flowledger_projection_lag",
                "Positions of the log a read model has not processed yet",
                labels=["projection"],
            )
            for name, value in projections.items():
                lag.add_metric([name], value)
            yield lag
            yield GaugeMetricFamily(
                "flowledger_dispatcher_lag",
                "Positions of the log the dispatcher has not sent yet",
                value=dispatcher_lag,
            )
            yield self._deliveries()
            yield self._alerts()
        except Exception as e:
            log.warning("metrics.source_failed", source="database", error=type(e).__name__)
            errors.add_metric(["database"], 1)
        try:
            queues = GaugeMetricFamily(
                "flowledger_queue_messages",
                "Messages in the broker's queues (ready, delayed, in_progress)",
                labels=["queue", "state"],
            )
            for queue, states in queue_depths().items():
                for state, value in states.items():
                    queues.add_metric([queue, state], value)
            yield queues
        except Exception as e:
            log.warning("metrics.source_failed", source="broker", error=type(e).__name__)
            errors.add_metric(["broker"], 1)
        yield errors

    def _deliveries(self) -> Metric:
        family = GaugeMetricFamily(
            "flowledger_webhook_deliveries",
            "Outgoing webhook deliveries by current outcome (pending, succeeded, failed)",
            labels=["status"],
        )
        rows = self.deps.db.query(
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries GROUP BY status"
        )
        found = {row["status"]: int(row["n"]) for row in rows}
        for status in sorted({"pending", "succeeded", "failed", *found}):
            family.add_metric([status], found.get(status, 0))
        return family

    def _alerts(self) -> Metric:
        row = self.deps.db.one("SELECT COUNT(*) AS n FROM alerts WHERE resolved_at IS NULL")
        return GaugeMetricFamily(
            "flowledger_alerts_active",
            "Unresolved alerts (workflow_failure) of every organization",
            value=int(row["n"]) if row else 0,
        )


class HttpMetrics:
    """Middleware counting every answer by route template and status, with its latency.

    First in the chain, so it times everything, errors included (falcon has mapped an
    exception to its answer before `process_response` runs).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "flowledger_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "flowledger_http_request_duration_seconds",
            "Time to answer an HTTP request (until the body starts, for streams)",
            ["method", "route"],
            buckets=BUCKETS,
            registry=registry,
        )

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        started = getattr(req.context, "metrics_started", None)
        route = req.uri_template or "unmatched"
        self.requests.labels(req.method, route, str(resp.status_code)).inc()
        if started is not None:
            self.latency.labels(req.method, route).observe(time.perf_counter() - started)


class Metrics:
    auth: dict[str, str] = {}  # no role; an optional token (not rate limited: scrapers poll)

    def __init__(self, deps: Deps, registry: CollectorRegistry) -> None:
        self.deps, self.registry = deps, registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        token = self.deps.settings.metrics_token
        if token:
            given = (req.get_header("Authorization") or "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise ApiError(401, "UNAUTHORIZED", "/metrics needs Authorization: Bearer <token>")
        multiprocess_dir = os.environ.get(ENV)
        registry = CollectorRegistry(auto_describe=False)
        if multiprocess_dir:  # every process's files, this one's included
            registry.register(Files(Path(multiprocess_dir).parent))
        else:
            registry.register(_Registry(self.registry))
        registry.register(Live(self.deps))
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(registry)


class _Registry(Collector):
    """This process's own registry, as one collector of the scrape's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return iter(self.registry.collect())


def install(deps: Deps) -> tuple[HttpMetrics, Metrics]:
    """The middleware and the `/metrics` resource of one app (each app its own registry)."""
    registry = CollectorRegistry(auto_describe=True)
    return HttpMetrics(registry), Metrics(deps, registry)


def add_routes(app: falcon.App, resource: Metrics) -> None:
    app.add_route("/metrics", resource)
