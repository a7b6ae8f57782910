"""The audit figures over a big log: raw read speed, `audit verify`, `/audit/log` pages.

A fresh PostgreSQL database; `bench/big_log.py` fills it with about 1,000,000 events (smoke:
20,000) made by the real handlers and aggregates; the audit read models chain and index them
in this process (one `ProjectionGroup`, batches of 5,000). Then:

(a) raw read: every row of the events table in position order, in batches of 10,000 (the
    same reader `verify` uses, without the hashing): the ceiling of (b);
(b) `flowledger audit verify` (its `verify` function): events/s and the ratio to (a);
    target >= 50,000 events/s;
(c) `GET /api/v1/audit/log?limit=1000` through gunicorn (`tests/support/stack.py`'s web
    process, 2 workers x 8 threads, and `flowledger projector audit_chain audit`), one
    client paging an organization's log by `next_after`: p50 / p99 ms per page; target p99 <= 50 ms.

    python -m bench.audit             # 1,000,000 events
    python -m bench.audit --smoke     # 20,000 events, a few pages; asserts nothing about speed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/audit.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.big_log import fill
from bench.harness import REDIS_URL, expect, fresh_database, percentile, prepare_schema
from bench.harness import stack_settings as settings_of
from flowledger.audit import raw_read, verify
from flowledger.settings import Settings
from projections.audit import AuditChainProjection, AuditProjection
from projections.runner import ProjectionGroup
from tests.support.stack import Stack

TARGET_VERIFY_PER_S = 50_000
TARGET_PAGE_P99_MS = 50
FULL = {"events": 1_000_000, "pages": 300}
SMOKE = {"events": 20_000, "pages": 10}
LABEL = "audit"
PASSWORD = "x" * 12  # big_log's owners


class AuditStack(Stack):
    """gunicorn, and a projector that follows only the audit read model (logins append
    events, and `/audit/log` waits, bounded, for the read model to reach the log's top)."""

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()
        commands["projector"] = [*commands["projector"], "audit_chain", "audit"]
        return commands


def chain(app: Any, batch: int = 5_000) -> tuple[int, float]:
    """Run the audit projection over the whole log, as `flowledger projector` would."""
    group = ProjectionGroup(app, [AuditChainProjection(), AuditProjection()], batch=batch)
    started = time.perf_counter()
    group.catch_up()
    seconds = time.perf_counter() - started
    if app.db.dialect == "postgres":  # what autovacuum does after a bulk load, in its time
        app.db.query("ANALYZE audit_events")
    return int(app.recorder.max_notification_id() or 0), seconds


def pages(url: str, email: str, count: int) -> dict[str, Any]:
    """Page an organization's log by 1000 through the HTTP stack; latency per page."""
    with httpx.Client(base_url=f"{url}/api/v1", timeout=60) as http:
        token = expect(http.post("/auth/login", json={"email": email, "password": PASSWORD}),
                       200)["access_token"]  # fmt: skip
        http.headers["Authorization"] = f"Bearer {token}"
        for _ in range(3):  # warm-up: connections, caches
            expect(http.get("/audit/log", params={"limit": 1000}), 200)
        seconds: list[float] = []
        items, after = 0, 0
        while len(seconds) < count:
            started = time.perf_counter()
            answer = http.get("/audit/log", params={"after": after, "limit": 1000})
            seconds.append(time.perf_counter() - started)
            page = expect(answer, 200)
            items += len(page["items"])
            after = page["next_after"] or 0  # at the end, from the start again
    ms = [s * 1000 for s in seconds]
    return {
        "pages": len(ms),
        "items": items,
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def run(
    smoke: bool = False,
    workdir: Path | None = None,
    then: Callable[[Settings, int, float], Any] | None = None,
) -> dict[str, Any]:
    """The figures; `then(settings, events, fill_seconds)` may measure more on the same log
    before its database is dropped (bench.run replays it for the rebuild figure), under
    the result's key `then`."""
    sizes = SMOKE if smoke else FULL
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    with fresh_database("audit") as url:
        stack = AuditStack(workdir=workdir, database_url=url, redis_url=REDIS_URL,
                      extra_env={"FLOWLEDGER_RATE_LIMIT_SCALE": "1000000",
                                 "FLOWLEDGER_LOG_LEVEL": "warning"})  # fmt: skip
        settings = settings_of(stack)
        app = prepare_schema(settings)
        try:
            started = time.perf_counter()
            events = fill(app, sizes["events"], label=LABEL)
            filled = time.perf_counter() - started
            print(f"audit: {events:,} events written in {filled:.0f} s; chaining", flush=True)
            chained, chain_s = chain(app)
        finally:
            app.close()
            app.db.close()
        rows, raw_s = raw_read(settings)
        found = verify(settings)
        if found.first_bad is not None or found.lag:
            raise RuntimeError(f"verify failed on a clean log: {found}")
        stack.start("projector", "web")
        try:
            served = pages(stack.url, f"owner0@{LABEL}.example.com", sizes["pages"])
        finally:
            stack.stop()
        more = then(settings, events, filled) if then is not None else None
    raw_per_s = rows / raw_s
    return {
        "events": events,
        "fill_seconds": round(filled, 1),
        "chain_per_s": round(chained / chain_s),
        "raw_rows": rows,
        "raw_per_s": round(raw_per_s),
        "verify_events": found.verified,
        "verify_per_s": round(found.per_second),
        "verify_ratio_to_raw": round(found.per_second / raw_per_s, 3),
        "log_pages": served,
        "then": more,
    }


def rows(result: dict[str, Any], verdict: Any) -> list[tuple[str, str, str, str, str]]:
    """The table rows of `bench.run` (verdict(ok) gives its last column)."""
    page = result["log_pages"]
    return [
        ("(11a) raw read of the events table", f"{result['raw_per_s']:,}/s", "(the ceiling)",
         f"{result['raw_rows']:,} rows in batches of 10,000", ""),
        ("(11b) audit verify", f"{result['verify_per_s']:,}/s",
         f">= {TARGET_VERIFY_PER_S:,}/s",
         f"= {result['verify_ratio_to_raw']:.2f} x raw; {result['verify_events']:,} events"
         f" (chain built at {result['chain_per_s']:,}/s)",
         verdict(result["verify_per_s"] >= TARGET_VERIFY_PER_S)),
        ("(11c) /audit/log pages of 1000 via gunicorn",
         f"p50 {page['p50_ms']:.1f} ms, p99 {page['p99_ms']:.1f} ms",
         f"p99 <= {TARGET_PAGE_P99_MS} ms", f"{page['pages']} pages, {page['items']:,} items",
         verdict(page["p99_ms"] <= TARGET_PAGE_P99_MS)),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="20,000 events, a few pages")
    args = parser.parse_args(argv)
    from flowledger import logs

    logs.configure("console", "warning")
    result = run(args.smoke)
    print(json.dumps(result, indent=2))
    for row in rows(result, lambda ok: "smoke" if args.smoke else ("ok" if ok else "MISS")):
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
