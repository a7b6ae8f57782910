"""Outgoing webhooks: deliveries per second to a local receiver, and fan-out to 50 endpoints.

A fresh PostgreSQL database and a Redis namespace of its own, and the production processes
that deliveries go through, each a process of its own as in the `Procfile`: `dramatiq
workers.broker:setup workers.actors --processes 2 --threads 8` (the actors), `flowledger
dispatcher` and `flowledger projector` (the deliveries log); a threaded HTTP/1.1 receiver in
this process answers 204 to everything (keep-alive, as a real subscriber's server would).
Over the throughput phase the CPU of each process group is read from /proc (`CpuMeter`) and
given as milliseconds per delivery, with the events and saves per delivery.

1. Throughput: `--endpoints` endpoints subscribed to `credits.granted`, then `--events`
   grants as fast as they can be saved; deliveries per second from the first grant to the
   last 2xx received. Target: >= 300/s with 2 worker processes.
2. Fan-out: 50 endpoints, one grant; time until all 50 POSTs arrived. Target: <= 2 s.

    python -m bench.webhook_deliveries            # 20 endpoints x 100 events, then fan-out
    python -m bench.webhook_deliveries --smoke    # tiny counts; asserts nothing about speed
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

if __package__ in (None, ""):  # `python bench/webhook_deliveries.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CpuMeter, fresh_database, prepare_schema
from flowledger.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TARGET_PER_SECOND = 300
TARGET_FAN_OUT_S = 2.0


class Receiver:
    """Counts 2xx answers and when each arrived; nothing else, so it costs little CPU."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.lock = threading.Lock()

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.at.append(time.monotonic())
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _start(
    name: str, command: list[str], settings: Settings, logs: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env.update(
        {
            "FLOWLEDGER_DATABASE_URL": settings.database_url,
            "FLOWLEDGER_REDIS_URL": settings.redis_url or "",
            "FLOWLEDGER_BROKER_NAMESPACE": settings.broker_namespace,
            "FLOWLEDGER_JWT_SECRET": settings.jwt_secret or "",
            "FLOWLEDGER_LOG_LEVEL": "warning",
            "FLOWLEDGER_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
    )
    out = (logs / f"{name}.log").open("wb")
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
    )


def _processes(settings: Settings, logs: Path) -> dict[str, subprocess.Popen[bytes]]:
    """The Procfile's worker (2 processes x 8 threads), dispatcher and projector."""
    bin_dir = Path(sys.executable).parent
    commands = {
        "worker": [str(bin_dir / "dramatiq"), "workers.broker:setup", "workers.actors",
                   "--processes", "2", "--threads", "8"],
        "dispatcher": [str(bin_dir / "flowledger"), "dispatcher"],
        "projector": [str(bin_dir / "flowledger"), "projector"],
    }  # fmt: skip
    return {name: _start(name, cmd, settings, logs) for name, cmd in commands.items()}


def _organization(app: Any) -> UUID:
    from commands.organization import CreateOrganization, create_organization
    from commands.user import RegisterUser, register_user

    tenant = f"b-{uuid4().hex[:10]}"
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="B")
    )
    cmd = CreateOrganization(name="B", tenant_id=tenant, plan_type="enterprise")
    org_id: UUID = create_organization(app, user.id, cmd).organization.id
    return org_id


def _endpoints(app: Any, org_id: UUID, url: str, count: int) -> None:
    from commands.webhook import CreateEndpoint, create_endpoint

    for n in range(count):
        create_endpoint(app, org_id, CreateEndpoint(url=f"{url}/{n}", event_types=["*"]))


def _grant(app: Any, org_id: UUID) -> None:
    from commands.credits import GrantCredits, grant_credits

    grant_credits(app, org_id, GrantCredits(amount=1))


def _wait(got: Receiver, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while len(got.at) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(got.at)} of {count} deliveries arrived")
        time.sleep(0.005)
    return got.at[count - 1]


def _position(app: Any) -> int:
    return int(app.recorder.max_notification_id() or 0)


def _caught_up(app: Any, timeout: float = 60) -> None:
    """Wait until the projector's deliveries log has every event (its position is the head)."""
    head = _position(app)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = app.db.one(
            "SELECT MIN(position) AS p FROM tracking WHERE name = 'webhook_deliveries'"
        )
        if row is not None and row["p"] is not None and int(row["p"]) >= head:
            return
        time.sleep(0.01)


def _saves(app: Any, after: int) -> dict[str, Any]:
    """Events by topic and saves (distinct `xmin`: one per `Application.save`) after a position."""
    table = app.recorder.events_table_name
    rows = app.db.query(
        f"SELECT topic, COUNT(*) AS n, COUNT(DISTINCT xmin::text) AS saves FROM {table}"
        " WHERE notification_id > %s GROUP BY topic",
        (after,),
    )
    total = app.db.one(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT xmin::text) AS saves FROM {table}"
        " WHERE notification_id > %s",
        (after,),
    )
    return {
        "events": int(total["n"]),
        "saves": int(total["saves"]),
        "by_topic": {r["topic"].rsplit(":", 1)[-1]: int(r["n"]) for r in rows},
    }


def _forget_queues(settings: Settings) -> None:
    """Delete the run's Redis keys (its broker namespace is its own)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url or "")
    keys = list(client.scan_iter(f"{settings.broker_namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


def _spies(procs: dict[str, subprocess.Popen[bytes]], outdir: Path) -> dict[str, Any]:
    """`py-spy record --gil` of each process group (where Python burns CPU)."""
    spies = {}
    for name, proc in procs.items():
        out = outdir / f"profile-webhooks-{name}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        cmd = [str(spy) if spy.exists() else "py-spy", "record", "--pid", str(proc.pid),
               "--subprocesses", "--format", "raw", "--rate", "200", "--nonblocking", "--gil",
               "-o", str(out)]  # fmt: skip
        quiet = subprocess.DEVNULL
        spies[name] = (subprocess.Popen(cmd, stdout=quiet, stderr=quiet), out)
    time.sleep(1.0)  # py-spy attaches
    return spies


def _summaries(spies: dict[str, Any]) -> dict[str, Any]:
    from bench.profiling import summarize

    found = {}
    for name, (spy, out) in spies.items():
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
        if out.exists():
            found[name] = summarize(out, top=25)
    return found


def run(endpoints: int, events: int, profile: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database("webhooks") as url:
        settings = Settings(
            database_url=url,
            redis_url=os.environ.get("FLOWLEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            broker_namespace=f"flbench-{uuid4().hex[:8]}",
            jwt_secret="bench-" + "x" * 32,
            var_dir=Path(tmp),
        )
        app = prepare_schema(settings)  # every table, before the processes race to make them
        procs = _processes(settings, Path(tmp))
        got = Receiver()
        server = got.serve()
        base = f"http://127.0.0.1:{server.server_port}"
        deliveries = endpoints * events
        try:
            org = _organization(app)
            _endpoints(app, org, f"{base}/t", endpoints)
            # Warm-up: one grant, delivered, so every process has started, imported and
            # connected (under load the workers take seconds to start) before measuring.
            _grant(app, org)
            _wait(got, endpoints, timeout=120)
            time.sleep(0.5)
            got.at.clear()
            _caught_up(app)
            position = _position(app)
            roots = {name: proc.pid for name, proc in procs.items()}
            spies = _spies(procs, profile) if profile else {}
            cpu = CpuMeter(roots, url.rsplit("/", 1)[-1])
            started = time.monotonic()
            for _ in range(events):
                _grant(app, org)
            last = _wait(got, deliveries, timeout=300)
            per_second = deliveries / (last - started)
            _caught_up(app)  # the deliveries log has every attempt: its cost is counted
            used = cpu.stop()
            elapsed = time.monotonic() - started
            profiles = _summaries(spies)
            saves = _saves(app, position)

            fan_org = _organization(app)
            _endpoints(app, fan_org, f"{base}/f", 50)
            time.sleep(0.5)
            got.at.clear()
            started = time.monotonic()
            _grant(app, fan_org)
            fan_out = _wait(got, 50, timeout=60) - started
        finally:
            for proc in procs.values():
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs.values():
                proc.wait(timeout=30)
            server.shutdown()
            app.close()
            app.db.close()
            _forget_queues(settings)
        # percent of a core over `elapsed` -> ms per delivery
        cpu_ms = {part: round(10 * v * elapsed / deliveries, 3) for part, v in used.items()}
        return {
            "deliveries": deliveries,
            "deliveries_per_second": round(per_second, 1),
            "target_per_second": TARGET_PER_SECOND,
            "cpu_ms_per_delivery": cpu_ms,
            "events_per_delivery": round(saves["events"] / deliveries, 2),
            "saves_per_delivery": round(saves["saves"] / deliveries, 2),
            "events_by_topic": saves["by_topic"],
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "fan_out_50_s": round(fan_out, 3),
            "target_fan_out_s": TARGET_FAN_OUT_S,
            **({"profiles": profiles} if profiles else {}),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy --gil profiles of each process group here")  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.smoke:
        args.endpoints, args.events = 3, 3
    print(f"load average before: {os.getloadavg()}", flush=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    figures = run(args.endpoints, args.events, args.profile)
    profiles = figures.pop("profiles", {})
    print(json.dumps(figures, indent=2))
    for name, summary in profiles.items():
        print(f"== {name}: {summary['samples']} samples")
        for title in ("own_percent", "inclusive_percent"):
            print(f"  {title}:")
            for frame, share in summary[title]:
                print(f"    {share:5.1f}  {frame}")
    met = (
        figures["deliveries_per_second"] >= TARGET_PER_SECOND
        and figures["fan_out_50_s"] <= TARGET_FAN_OUT_S
    )
    return 1 if args.strict and not met and not args.smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
