"""Outgoing webhooks: deliveries per second to a local receiver, and fan-out to 50 endpoints.

A fresh PostgreSQL database and a Redis namespace of its own; the dispatcher follows the log
in this process, `dramatiq workers.broker:setup workers.actors --processes 2 --threads 8`
runs the actors, and a threaded HTTP receiver in this process answers 204 to everything.

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
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

if __package__ in (None, ""):  # `python bench/webhook_deliveries.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database
from flowledger.settings import Settings
from tests.support.webhook_receiver import Receiver, serve

ROOT = Path(__file__).resolve().parents[1]
TARGET_PER_SECOND = 300
TARGET_FAN_OUT_S = 2.0


def _workers(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
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
    command = [str(Path(sys.executable).parent / "dramatiq"), "workers.broker:setup"]
    command += ["workers.actors", "--processes", "2", "--threads", "8"]
    out = log.open("wb")
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
    )


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
    while len(got.ok) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(got.ok)} of {count} deliveries arrived")
        time.sleep(0.005)
    return got.ok[count - 1].at


def _forget_queues(settings: Settings) -> None:
    """Delete the run's Redis keys (its broker namespace is its own)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url or "")
    keys = list(client.scan_iter(f"{settings.broker_namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


def run(endpoints: int, events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database("webhooks") as url:
        settings = Settings(
            database_url=url,
            redis_url=os.environ.get("FLOWLEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            broker_namespace=f"flbench-{uuid4().hex[:8]}",
            jwt_secret="bench-" + "x" * 32,
            var_dir=Path(tmp),
        )
        from workers import broker

        broker.setup(settings)
        import workers.actors
        from events.application import Flowledger
        from flowledger.processes import run_followers
        from workers.dispatcher import dispatcher

        app = Flowledger(settings)  # creates the tables before the workers start
        follower = dispatcher(app)
        run_followers([follower])
        workers = _workers(settings, Path(tmp) / "workers.log")
        got = Receiver()
        server = serve(got)
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            org = _organization(app)
            _endpoints(app, org, f"{base}/t", endpoints)
            time.sleep(2.0)  # the workers are up and idle
            started = time.monotonic()
            for _ in range(events):
                _grant(app, org)
            last = _wait(got, endpoints * events, timeout=300)
            per_second = endpoints * events / (last - started)

            fan_org = _organization(app)
            _endpoints(app, fan_org, f"{base}/f", 50)
            time.sleep(0.5)
            got.ok.clear()
            started = time.monotonic()
            _grant(app, fan_org)
            fan_out = _wait(got, 50, timeout=60) - started
        finally:
            follower.stop()
            os.killpg(workers.pid, signal.SIGTERM)
            workers.wait(timeout=30)
            server.shutdown()
            app.close()
            _forget_queues(settings)
        return {
            "deliveries": endpoints * events,
            "deliveries_per_second": round(per_second, 1),
            "target_per_second": TARGET_PER_SECOND,
            "fan_out_50_s": round(fan_out, 3),
            "target_fan_out_s": TARGET_FAN_OUT_S,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.smoke:
        args.endpoints, args.events = 3, 3
    figures = run(args.endpoints, args.events)
    print(json.dumps(figures, indent=2))
    met = (
        figures["deliveries_per_second"] >= TARGET_PER_SECOND
        and figures["fan_out_50_s"] <= TARGET_FAN_OUT_S
    )
    return 1 if args.strict and not met and not args.smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
