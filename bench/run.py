"""Every figure of issues 2 and 3's ``bench/`` lists in one run, beside its ceiling or target.

    python -m bench.run                 # full run, a few minutes
    python -m bench.run --smoke         # tiny counts, ~35 s, asserts nothing about speed
    python -m bench.run --only ceiling,latency
    python -m bench.run --only ceiling,webhooks,scheduler,trigger   # issue 3's figures
    python -m bench.run --only rebuild  # issue 4's projection rebuild (1,000,000 events)
    python -m bench.run --profile       # also py-spy profiles of the (3) and (2) phases

Needs PostgreSQL (``FLOWLEDGER_BENCH_POSTGRES_URL``, else ``FLOWLEDGER_TEST_POSTGRES_URL``,
else ``postgresql://root@127.0.0.1:5432/test``: an existing database used to create and drop
the run's own) and Redis (``FLOWLEDGER_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/0``).
Prints a table and writes ``bench/results/<run>/results.json`` (and ``bench/results/latest.json``);
the processes' logs are kept beside it. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench import (
    accepted_executions,
    commit_to_actor,
    completed_executions,
    event_trigger,
    execute_latency,
    load,
    profiling,
    scheduler_delay,
    store_ceiling,
    webhook_deliveries,
    worker_memory,
)
from bench import audit as bench_audit  # (11a-c)
from bench import rebuild as rebuild_bench  # (12)
from bench.harness import (
    REDIS_URL,
    RESULTS,
    BenchStack,
    Context,
    FakeN8nProcess,
    fresh_database,
    machine_busy,
    make_tenant,
    prepare_schema,
    stack_settings,
    wait_until,
)

# In the order they run.
FIGURES = ("ceiling", "actor", "trigger", "latency", "completed", "accepted", "memory",
           "webhooks", "scheduler", "audit", "rebuild")  # fmt: skip
#: Measured by their standalone modules, each on a database (and processes) of its own.
STANDALONE_FIGURES = frozenset({"webhooks", "scheduler", "audit", "rebuild"})
STACK_FIGURES = frozenset(FIGURES) - {"ceiling"} - STANDALONE_FIGURES

# Targets of issue 2.
ACCEPTED_RATIO = 0.6
COMPLETED_PER_S = 150
LATENCY_P50_MS, LATENCY_P99_MS = 15, 60
ACTOR_P50_MS, ACTOR_P99_MS = 10, 50
RSS_MIB = 150
# Targets of issue 3.
WEBHOOKS_PER_S = webhook_deliveries.TARGET_PER_SECOND
FAN_OUT_S = webhook_deliveries.TARGET_FAN_OUT_S
SCHEDULER_P99_MS = 1000 * scheduler_delay.TARGET_P99_S
TRIGGER_P50_MS = 50
# Targets of issue 4.
REBUILD_RATIO = rebuild_bench.TARGET_RATIO


@dataclass(frozen=True)
class Sizes:
    ceiling_seconds: float
    ceiling_repeats: int
    idle_seconds: float
    actor_count: int
    latency_count: int
    completed_seconds: float
    accepted_seconds: float
    memory_per_worker: int
    settle_seconds: float
    trigger_count: int
    webhook_endpoints: int
    webhook_events: int
    scheduler_phases: tuple[tuple[int, float], ...]  # (workflows, seconds)
    rebuild_events: int = rebuild_bench.FULL_EVENTS  # issue 4's log for (11)


FULL = Sizes(4, 3, 5, 200, 500, 10, 10, 10_000, 2, 100, 20, 100, ((5, 60), (50, 20)))
SMOKE = Sizes(0.5, 1, 0.5, 5, 5, 1, 1, 50, 0.2, 5, 3, 3, ((3, 2),),
              rebuild_events=rebuild_bench.SMOKE_EVENTS)  # fmt: skip


def _settle(ctx: Context, names: tuple[str, ...], timeout: float = 120) -> None:
    """Wait until the followers `names` have processed the whole log."""
    app = ctx.app()
    top = int(app.recorder.max_notification_id() or 0)

    def caught_up() -> bool:
        rows = app.db.query("SELECT name, position FROM tracking")
        positions = {r["name"]: int(r["position"]) for r in rows}
        return all(positions.get(n, 0) >= top for n in names)

    wait_until(caught_up, timeout, 0.1, f"{', '.join(names)} to catch up")


def run_stack(args: argparse.Namespace, sizes: Sizes, only: set[str], outdir: Path,
              results: dict[str, Any]) -> None:  # fmt: skip
    logs = outdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if "actor" in only:
        results["redis_baseline_per_s"] = commit_to_actor.baseline_redis(sizes.idle_seconds)
    with fresh_database("stack") as url:
        fake = FakeN8nProcess(logs)
        stack = BenchStack(
            workdir=logs, database_url=url, redis_url=REDIS_URL,
            extra_env={"FLOWLEDGER_RATE_LIMIT_SCALE": "1000000",
                       "FLOWLEDGER_LOG_LEVEL": args.log_level},
            web_threads=args.web_threads, worker_processes=args.worker_processes,
            worker_threads=args.worker_threads,
        )  # fmt: skip
        ctx: Context | None = None
        try:
            app = prepare_schema(stack_settings(stack))
            stack.start()
            tenant = make_tenant(stack, fake.url)
            ctx = Context(stack, fake, tenant, url, args.smoke, load.tool(), _app=app)
            results["stack"] = {**stack.describe(), "redis_namespace": stack.namespace}
            results["rss_at_start_mib"] = worker_memory.snapshot(ctx)
            time.sleep(sizes.settle_seconds)
            _settle(ctx, ("dispatcher", "executions", "credit_transactions", "workflows"))
            stack_phases(ctx, args, sizes, only, outdir, results)
        finally:
            if ctx is not None:
                ctx.close()
            stack.stop()
            fake.stop()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{stack.namespace}:*", count=1000))
            if keys:
                client.delete(*keys)


def stack_phases(ctx: Context, args: argparse.Namespace, sizes: Sizes, only: set[str],
                 outdir: Path, results: dict[str, Any]) -> None:  # fmt: skip
    everything = ("dispatcher", "executions", "credit_transactions", "workflows")
    if "actor" in only:
        baseline = results["redis_baseline_per_s"]
        results["idle"] = commit_to_actor.idle_cost(ctx, sizes.idle_seconds, baseline)
        results["actor"] = commit_to_actor.measure(ctx, sizes.actor_count)
        _settle(ctx, everything)
    if "trigger" in only:
        results["trigger"] = event_trigger.measure(ctx, sizes.trigger_count)
        _settle(ctx, everything)
    if "latency" in only:
        with profiling.profiled(ctx.stack, "latency", outdir, args.profile) as profile:
            results["latency"] = execute_latency.measure(ctx, sizes.latency_count, clients=1)
        if profile:
            results["profile_latency"] = profile
        results["latency_2_clients"] = execute_latency.measure(
            ctx, max(1, sizes.latency_count // 2), clients=2
        )
        _settle(ctx, everything)
    if "completed" in only:
        with profiling.profiled(ctx.stack, "completed", outdir, args.profile) as profile:
            results["completed"] = completed_executions.measure(
                ctx, sizes.completed_seconds, args.connections
            )
        if profile:
            results["profile_completed"] = profile
        _settle(ctx, everything)
    if "accepted" in only:
        results["accepted_with_pipeline"] = accepted_executions.measure(
            ctx, sizes.accepted_seconds, args.connections
        )
    if only & {"accepted", "memory"}:
        for name in ("worker", "dispatcher", "scheduler"):  # the API alone from here on
            if name in ctx.stack.procs:
                ctx.stack.kill(name, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            _settle(ctx, ("executions", "credit_transactions", "workflows"))
    if "accepted" in only:
        results["accepted_with_projector"] = accepted_executions.measure(
            ctx, sizes.accepted_seconds, args.connections
        )
        ctx.stack.kill("projector", signal.SIGTERM)  # gunicorn, PostgreSQL and Redis alone
        with profiling.profiled(ctx.stack, "accepted", outdir, args.profile) as profile:
            results["accepted"] = accepted_executions.measure(
                ctx, sizes.accepted_seconds, args.connections
            )
        if profile:
            results["profile_accepted"] = profile
    if "memory" in only:
        results["memory"] = worker_memory.measure(ctx, sizes.memory_per_worker, args.connections)


def run_standalone(sizes: Sizes, only: set[str], results: dict[str, Any]) -> None:
    """Issue 3's webhook and scheduler figures, by their standalone modules' own functions,
    after the stack is gone (each makes a database of its own and drops it)."""
    if "webhooks" in only:
        print("webhooks: deliveries/s with 2 worker processes, then fan-out to 50", flush=True)
        results["webhooks"] = webhook_deliveries.run(sizes.webhook_endpoints, sizes.webhook_events)
    if "scheduler" in only:
        phases = ", ".join(f"{w} x {s:g} s" for w, s in sizes.scheduler_phases)
        print(f"scheduler: firing delay, workflows x seconds: {phases}", flush=True)
        with scheduler_delay.database("postgres") as settings:
            from events.application import Flowledger

            app = Flowledger(settings)
            try:
                results["scheduler"] = [
                    scheduler_delay.phase(app, workflows, seconds)
                    for workflows, seconds in sizes.scheduler_phases
                ]
            finally:
                app.close()
                app.db.close()
    audit_events = (bench_audit.SMOKE if sizes is SMOKE else bench_audit.FULL)["events"]
    # (12) replays the audit figures' log when it is the size it wants: written once.
    shared = {"audit", "rebuild"} <= set(only) and sizes.rebuild_events == audit_events
    if "audit" in only:
        print(f"audit: raw read, verify and /audit/log pages over {audit_events:,} events",
              flush=True)  # fmt: skip
        results["audit"] = bench_audit.run(
            smoke=sizes is SMOKE, then=rebuild_bench.on_log if shared else None
        )
        replayed = results["audit"].pop("then")
        if shared:
            results["rebuild"] = replayed
    if "rebuild" in only and not shared:  # (12), on a database of its own
        print(f"rebuild: a log of {sizes.rebuild_events:,} events, raw read, rebuilds", flush=True)
        results["rebuild"] = rebuild_bench.run(sizes.rebuild_events)


# -- the table ---------------------------------------------------------------------------------


def _verdict(ok: bool | None, smoke: bool) -> str:
    if smoke:
        return "smoke"
    if ok is None:
        return ""
    return "ok" if ok else "MISS"


def _n(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def rows(results: dict[str, Any], smoke: bool) -> list[tuple[str, str, str, str, str]]:
    """(figure, measured, target, ceiling / reference, verdict) per row."""
    out: list[tuple[str, str, str, str, str]] = []
    ceiling = results.get("ceiling")
    ceiling_rate = ceiling["eventsourcing_saves_per_s_2_processes"] if ceiling else None
    if ceiling:
        out.append((
            "(1) eventsourcing saves/s, 2 processes",
            f"{_n(ceiling_rate)}/s",
            "(the ceiling)",
            f"best of {len(ceiling['runs']['es2'])}, median "
            f"{_n(ceiling['median_saves_per_s_2_processes'])}; 1 process "
            f"{_n(ceiling['eventsourcing_saves_per_s_1_process'])}/s; raw INSERT "
            f"{_n(ceiling['raw_insert_rows_per_s_2_processes'])} rows/s; Flowledger's recorder "
            f"{_n(ceiling.get('flowledger_recorder_saves_per_s_2_processes'))}/s",
            "",
        ))  # fmt: skip

    def noise(phase: dict[str, Any]) -> str:
        other = phase.get("cpu_percent_of_one_core", {}).get("other", 0.0)
        return f"; other load {other:.0f}% of a core" if other >= 5 else ""

    if "accepted" in results:
        rate = results["accepted"]["accepted_per_s"]
        ratio = rate / ceiling_rate if ceiling_rate else None
        target = f">= {_n(ACCEPTED_RATIO * ceiling_rate)}/s (0.6 x (1))" if ceiling_rate else ""
        out.append((
            "(2) accepted async executions/s (API alone)",
            f"{_n(rate)}/s" + (f" = {ratio:.2f} x (1)" if ratio else ""),
            target or ">= 0.6 x (1)",
            (f"(1) {_n(ceiling_rate)}/s" if ceiling_rate else "(1) not measured")
            + "; gunicorn, PostgreSQL and Redis only" + noise(results["accepted"]),
            _verdict(ratio >= ACCEPTED_RATIO if ratio else None, smoke),
        ))  # fmt: skip
    for key, label in (("accepted_with_projector", "    same, projector running"),
                       ("accepted_with_pipeline", "    same, whole pipeline running")):  # fmt: skip
        if key in results:
            rate = results[key]["accepted_per_s"]
            ratio = f" = {rate / ceiling_rate:.2f} x (1)" if ceiling_rate else ""
            out.append((label, f"{_n(rate)}/s{ratio}", "(info)", "", ""))
    if "completed" in results:
        c = results["completed"]
        out.append((
            "(3) completed executions/s end to end",
            f"{_n(c['completed_per_s'])}/s",
            f">= {COMPLETED_PER_S}/s",
            f"{c['executions']} runs in {c['seconds']:.1f} s" + noise(c),
            _verdict(c["completed_per_s"] >= COMPLETED_PER_S, smoke),
        ))  # fmt: skip
        saves = c["saves_per_execution"]
        out.append((
            "    saves per execution (async run)",
            f"{_n(saves, 2)} saves, {_n(c['events_per_execution'], 2)} events",
            "small",
            (f"(1)/saves = {_n(ceiling_rate / saves)} runs/s; " if ceiling_rate and saves else "")
            + f"{c['rolled_back_transactions']} rolled back (conflicts)",
            "",
        ))  # fmt: skip
    for key, label in (("latency", "1 client"), ("latency_2_clients", "2 clients")):
        if key in results:
            lat = results[key]
            p50, p99 = lat["p50_minus_fake_ms"], lat["p99_minus_fake_ms"]
            api, fake = lat["api"], lat["fake_n8n"]
            ok = p50 <= LATENCY_P50_MS and p99 <= LATENCY_P99_MS
            out.append((
                f"(4) /execute latency - fake n8n's, {label}",
                f"p50 {_n(p50, 1)} ms, p99 {_n(p99, 1)} ms",
                f"p50 <= {LATENCY_P50_MS}, p99 <= {LATENCY_P99_MS} ms",
                f"API p50 {_n(api['p50_ms'], 1)} / p99 {_n(api['p99_ms'], 1)}; "
                f"fake p50 {_n(fake['p50_ms'], 1)} / p99 {_n(fake['p99_ms'], 1)}" + noise(lat),
                _verdict(ok, smoke) if key == "latency" else "(info)",
            ))  # fmt: skip
    if "actor" in results:
        started = results["actor"]["commit_to_started"]
        called = results["actor"]["commit_to_n8n_called"]
        ok = started["p50_ms"] <= ACTOR_P50_MS and started["p99_ms"] <= ACTOR_P99_MS
        out.append((
            "(5) commit -> actor start (Started), low load",
            f"p50 {_n(started['p50_ms'], 1)} ms, p99 {_n(started['p99_ms'], 1)} ms",
            f"p50 <= {ACTOR_P50_MS}, p99 <= {ACTOR_P99_MS} ms",
            f"{started['n']} runs, one per 50-100 ms",
            _verdict(ok, smoke),
        ))  # fmt: skip
        out.append((
            "    commit -> n8n called (upper bound)",
            f"p50 {_n(called['p50_ms'], 1)} ms, p99 {_n(called['p99_ms'], 1)} ms",
            "(info)",
            "includes the start's save and the request",
            "",
        ))  # fmt: skip
        lag = results["actor"]["commit_to_read_model"]
        out.append((
            "    commit -> executions read model",
            f"p50 {_n(lag['p50_ms'], 1)} ms, p99 {_n(lag['p99_ms'], 1)} ms",
            "(info)",
            "what a read-your-writes wait waits for",
            "",
        ))  # fmt: skip
    if "idle" in results:
        idle = results["idle"]
        cpu = idle["idle_cpu_percent_of_one_core"]
        out.append((
            "    idle Redis commands/s (cost of (5))",
            f"{_n(idle['redis_commands_per_s'])}/s (gross "
            f"{_n(idle['redis_commands_per_s_gross'])})",
            "(cost)",
            "idle CPU % " + ", ".join(f"{k} {v}" for k, v in cpu.items()),
            "",
        ))  # fmt: skip
    if "memory" in results:
        m = results["memory"]
        start = results.get("rss_at_start_mib", {})
        out.append((
            "(6) gunicorn worker RSS after 10,000 requests",
            f"{_n(m['max_rss_mib'], 1)} MiB",
            f"<= {RSS_MIB} MiB",
            f"{m['requests_total']:,} requests over {m['workers']} workers; at start "
            + ", ".join(_n(v, 1) for v in start.values())
            + " MiB",
            _verdict(m["max_rss_mib"] <= RSS_MIB, smoke),
        ))  # fmt: skip
    if "webhooks" in results:
        w = results["webhooks"]
        out.append((
            "(7) webhook deliveries/s, 2 worker processes",
            f"{_n(w['deliveries_per_second'])}/s",
            f">= {WEBHOOKS_PER_S}/s",
            f"{w['deliveries']:,} deliveries (endpoints x credits.granted events) to a local"
            " receiver",
            _verdict(w["deliveries_per_second"] >= WEBHOOKS_PER_S, smoke),
        ))  # fmt: skip
        out.append((
            "(8) fan-out of one event to 50 endpoints",
            f"{_n(w['fan_out_50_s'], 3)} s",
            f"all within {_n(FAN_OUT_S, 0)} s",
            "grant saved -> the 50th POST received",
            _verdict(w["fan_out_50_s"] <= FAN_OUT_S, smoke),
        ))  # fmt: skip
    for phase in results.get("scheduler", []):
        out.append((
            f"(9) scheduler firing delay, {phase['workflows']} workflows",
            f"p50 {_n(phase['p50_ms'], 1)} ms, p99 {_n(phase['p99_ms'], 1)} ms",
            f"p99 <= {_n(SCHEDULER_P99_MS)} ms",
            f"slot -> run saved; {phase['slots_fired']} slots in {phase['seconds']:g} s, "
            f"{phase['slots_missed']} missed, max {_n(phase['max_ms'], 1)} ms",
            _verdict(phase["p99_ms"] <= SCHEDULER_P99_MS and not phase["slots_missed"], smoke),
        ))  # fmt: skip
    if "trigger" in results:
        t = results["trigger"]["event_to_started"]
        post = results["trigger"]["post_round_trip"]
        out.append((
            "(10) event -> triggered execution started",
            f"p50 {_n(t['p50_ms'], 1)} ms, p99 {_n(t['p99_ms'], 1)} ms",
            f"p50 <= {TRIGGER_P50_MS} ms",
            f"{t['n']} POST /events, one per 50-100 ms; POST p50 {_n(post['p50_ms'], 1)}"
            f" / p99 {_n(post['p99_ms'], 1)} ms",
            _verdict(t["p50_ms"] <= TRIGGER_P50_MS, smoke),
        ))  # fmt: skip
    if "audit" in results:
        out += bench_audit.rows(results["audit"], lambda ok: _verdict(ok, smoke))
    if "rebuild" in results:
        r = results["rebuild"]
        raw = r["raw_events_per_s"]
        reference = f"raw read of the log {_n(raw)} events/s; {r['log']['events']:,} events"
        ratio = r["executions_ratio"]
        out.append((
            "(12) projection rebuild, executions alone",
            f"{_n(r['executions']['events_per_s'])} events/s = {ratio:.2f} x raw",
            f">= {REBUILD_RATIO} x raw read", reference, _verdict(ratio >= REBUILD_RATIO, smoke),
        ))  # fmt: skip
        for name, one in r["all"]["projections"].items():  # each read model's own rebuild
            ratio = r["ratios"][name]
            out.append((
                f"     {name}, in the rebuild of all", f"{ratio:.2f} x raw",
                f">= {REBUILD_RATIO} x raw read", f"{one['seconds']} s",
                _verdict(ratio >= REBUILD_RATIO, smoke),
            ))  # fmt: skip
        out.append((
            "     every projection one after the other",
            f"{_n(r['all']['events_per_s'])} events/s = {r['all_ratio']:.2f} x raw",
            "(info)", f"{r['all']['seconds']} s for {len(r['all']['projections'])} rebuilds", "",
        ))  # fmt: skip
    return out


def print_table(results: dict[str, Any], smoke: bool) -> None:
    table = rows(results, smoke)
    headers = ("figure", "measured", "target", "ceiling / reference", "")
    widths = [max(len(r[i]) for r in [headers, *table]) for i in range(5)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*headers).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(line.format(*row).rstrip())
    print()
    for key, label in (("accepted", "(2) API alone"),
                       ("accepted_with_projector", "(2) projector on"),
                       ("accepted_with_pipeline", "(2) pipeline on"),
                       ("completed", "(3) end to end")):  # fmt: skip
        spent = results.get(key, {}).get("cpu_ms_per_execution")
        if spent:
            parts = sorted(((v, k) for k, v in spent.items() if k != "total"), reverse=True)
            listed = ", ".join(f"{k} {v:.2f}" for v, k in parts if v >= 0.05)
            print(f"CPU ms per execution, {label}: {spent['total']:.1f} = {listed}")
    spent = results.get("webhooks", {}).get("cpu_ms_per_delivery")
    if spent:  # (7): the same breakdown, per delivery
        parts = sorted(((v, k) for k, v in spent.items() if k != "total"), reverse=True)
        listed = ", ".join(f"{k} {v:.2f}" for v, k in parts if v >= 0.05)
        print(f"CPU ms per delivery, (7) webhooks: {spent['total']:.1f} = {listed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, asserts nothing")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated subset of {','.join(FIGURES)}")  # fmt: skip
    parser.add_argument("--connections", type=int, default=16,
                        help="load generator connections for (2), (3) and (6)")  # fmt: skip
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else Python threads (httpx)")  # fmt: skip
    parser.add_argument("--web-threads", type=int, default=None, help="gunicorn --threads")
    parser.add_argument("--worker-processes", type=int, default=None, help="dramatiq --processes")
    parser.add_argument("--worker-threads", type=int, default=None, help="dramatiq --threads")
    parser.add_argument("--log-level", default="info", help="FLOWLEDGER_LOG_LEVEL of the stack")
    parser.add_argument("--profile", nargs="?", const="wall", choices=("wall", "gil"),
                        help="py-spy profiles of the stack during (4), (3) and (2): wall (idle"
                             " and waiting threads included) or gil (Python CPU only)")  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}; choose from {', '.join(FIGURES)}")
    sizes = SMOKE if args.smoke else FULL
    from flowledger import logs

    logs.configure("console", "warning")  # this process's own lines (the figures run some here)
    load.PREFERRED = args.load_generator
    if args.profile and not profiling.available():
        print("note: py-spy is not installed; --profile ignored", file=sys.stderr)

    run_id = time.strftime("%Y%m%d-%H%M%S") + ("-smoke" if args.smoke else "")
    outdir = RESULTS / run_id
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "run": {
            "id": run_id,
            "smoke": args.smoke,
            "figures": sorted(only),
            "load_generator": load.tool(),
            "connections": args.connections,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "sizes": asdict(sizes),
        }
    }
    figures = ", ".join(f for f in FIGURES if f in only)
    print(f"bench run {run_id}: {figures}; load generator: {load.tool()} "
          f"({args.connections} connections); {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    busy = machine_busy(0.5 if args.smoke else 2.0)
    results["run"]["machine_busy_percent_before"] = busy
    if busy > 15:
        print(f"warning: the machine is {busy}% busy before the run; figures will be low",
              flush=True)  # fmt: skip
    started = time.monotonic()
    try:
        if "ceiling" in only:
            with fresh_database("ceiling") as url:
                results["ceiling"] = store_ceiling.measure(
                    url, sizes.ceiling_seconds, sizes.ceiling_repeats
                )
        if only & STACK_FIGURES:
            run_stack(args, sizes, only, outdir, results)
        run_standalone(sizes, only, results)
    finally:
        results["run"]["seconds"] = round(time.monotonic() - started, 1)
        text = json.dumps(results, indent=2, default=str)
        (outdir / "results.json").write_text(text)
        (RESULTS / "latest.json").write_text(text)
        if profiling.write_summaries(results, outdir / "profiles.txt"):
            print(f"profiles: {outdir / 'profiles.txt'}")
    print_table(results, args.smoke)
    print(f"load generator: {load.tool()}; results: {outdir / 'results.json'}; "
          f"{results['run']['seconds']} s")  # fmt: skip
    if args.strict and any(r[4] == "MISS" for r in rows(results, args.smoke)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
