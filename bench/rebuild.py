"""Replay speed of a full projection rebuild against the raw read speed of the log (issue 4).

    python -m bench.rebuild                    # 1,000,000 events on a fresh PostgreSQL database
    python -m bench.rebuild --smoke            # 20,000 events
    python -m bench.rebuild --events 200000 --json out.json --strict

A fresh database gets about `--events` events from `bench/big_log.py` (the real handlers and
aggregates). Then, in the same run: the raw read speed of the notification log (the
recorder's `select_notifications` in batches of 5,000, no decoding, as a follower reads it),
and `projections.rebuild.rebuild` of the executions projection, then of every projection, as
`flowledger projections rebuild` runs them. No projector runs, so each rebuild holds the
projection's lock, replays the whole log and switches (its "offline" mode); the switch of
the "online" mode differs only by its catch-up under the lock. Speed is positions of the log
replayed per second (the head / the rebuild's wall time, decoding, folding and writing
included); target >= 0.3 x raw.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import fresh_database, machine_busy
from events.application import Flowledger
from flowledger.settings import Settings

TARGET_RATIO = 0.3
FULL_EVENTS = 1_000_000
SMOKE_EVENTS = 20_000
READ_BATCH = 5000


@contextmanager
def database() -> Iterator[Settings]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database("rebuild") as url:
        yield Settings(database_url=url, jwt_secret="bench-" + "x" * 32, var_dir=Path(tmp))


def generate(app: Flowledger, events: int) -> dict[str, Any]:
    from bench.big_log import fill

    started = time.monotonic()
    head = fill(app, events)
    return {"events": head, "seconds": round(time.monotonic() - started, 1)}


def raw_read(app: Flowledger, batch: int = READ_BATCH) -> dict[str, Any]:
    """Every notification of the log read in batches, not decoded: the ceiling of a replay."""
    started = time.monotonic()
    count, at = 0, 0
    while True:
        got = app.recorder.select_notifications(start=at, limit=batch, inclusive_of_start=False)
        if not got:
            break
        count += len(got)
        at = got[-1].id
    seconds = time.monotonic() - started
    return {"events": count, "seconds": round(seconds, 3), "events_per_s": count / seconds}


def rebuild_speed(app: Flowledger, names: list[str]) -> dict[str, Any]:
    """Rebuild `names` one after the other; positions of the log replayed per second."""
    from projections import all_projections
    from projections.rebuild import rebuild

    head = int(app.recorder.max_notification_id() or 0)
    per: dict[str, Any] = {}
    started = time.monotonic()
    for projection in all_projections():
        if projection.name in names:
            result = rebuild(app, projection)
            per[projection.name] = {
                "seconds": round(result.seconds, 3),
                "events_applied": result.events,
                "positions_per_s": result.position / result.seconds if result.seconds else 0.0,
                "mode": result.mode,
            }
    seconds = time.monotonic() - started
    return {"head": head, "seconds": round(seconds, 3), "events_per_s": head / seconds,
            "projections": per}  # fmt: skip


def measure(app: Flowledger) -> dict[str, Any]:
    from projections import all_projections

    raw = raw_read(app)
    executions = rebuild_speed(app, ["executions"])
    everything = rebuild_speed(app, [p.name for p in all_projections()])
    raw_again = raw_read(app)  # the machine may have changed meanwhile: the better of two
    raw_rate = max(raw["events_per_s"], raw_again["events_per_s"])
    per_model = everything["projections"]
    return {
        "raw_read": raw,
        "raw_read_again": raw_again,
        "raw_events_per_s": raw_rate,
        "executions": executions,
        "all": everything,
        "executions_ratio": executions["events_per_s"] / raw_rate,
        # each read model's rebuild in `all`
        "ratios": {n: one["positions_per_s"] / raw_rate for n, one in per_model.items()},
        "all_ratio": everything["events_per_s"] / raw_rate,
        "target_ratio": TARGET_RATIO,
    }


def run(events: int) -> dict[str, Any]:
    """A fresh database, the log, the figures; the database is dropped afterwards."""
    with database() as settings:
        app = Flowledger(settings)
        try:
            made = generate(app, events)
            print(f"rebuild: {made['events']:,} events written in {made['seconds']} s", flush=True)
            return {"log": made, **measure(app)}
        finally:
            app.close()
            app.db.close()


def on_log(settings: Settings, events: int, fill_seconds: float) -> dict[str, Any]:
    """The figures on a log another benchmark made (`bench.audit.run(then=on_log)`), so one
    `bench.run` writes its million events once."""
    app = Flowledger(settings)
    try:
        return {"log": {"events": events, "seconds": round(fill_seconds, 1)}, **measure(app)}
    finally:
        app.close()
        app.db.close()


def describe(r: dict[str, Any]) -> list[str]:
    raw = r["raw_events_per_s"]
    lines = [f"raw read of the log: {raw:,.0f} events/s ({r['raw_read']['events']:,} events)"]
    ratio = r["executions_ratio"]
    verdict = "ok" if ratio >= TARGET_RATIO else "MISS"
    lines.append(
        f"rebuild of executions alone: {r['executions']['events_per_s']:,.0f} events/s in"
        f" {r['executions']['seconds']} s = {ratio:.2f} x raw (target >= {TARGET_RATIO}) {verdict}"
    )
    for name, one in r["all"]["projections"].items():
        ratio = r["ratios"][name]
        verdict = "ok" if ratio >= TARGET_RATIO else "MISS"
        lines.append(f"  {name}: {one['seconds']} s = {ratio:.2f} x raw {verdict}")
    lines.append(
        f"every projection one after the other: {r['all']['events_per_s']:,.0f} events/s in"
        f" {r['all']['seconds']} s = {r['all_ratio']:.2f} x raw (info: the sum of the rebuilds)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    parser.add_argument("--events", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_EVENTS:,} events")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    from flowledger import logs

    logs.configure("console", "warning")
    events = args.events or (SMOKE_EVENTS if args.smoke else FULL_EVENTS)
    busy = machine_busy(1.0)
    results = {"machine_busy_percent_before": busy, **run(events)}
    for line in describe(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    missed = min(results["executions_ratio"], *results["ratios"].values()) < TARGET_RATIO
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
