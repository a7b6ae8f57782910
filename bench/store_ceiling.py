"""Figure (1): the event store's own ceiling, before any Flowledger code runs.

``eventsourcing`` saves/s of one new aggregate with one event, each process saving in a
loop (one thread each), on the same PostgreSQL as the stack, in a database of its own. The
library's PostgreSQL recorder takes ``LOCK TABLE <events table> IN EXCLUSIVE MODE`` in every
save (that is how its notification ids stay gap-free in commit order), so writers queue on
that lock and one commit's round trips bound the rate. Raw psycopg ``INSERT`` rows/s (one
row per autocommit transaction, same processes) is shown for reference: it is what the
server does without the lock.

The ceiling is the library's own recorder (`eventsourcing.postgres`), not Flowledger's
(`events/recorder.py`, which saves in one statement under the same lock): that one's rate
is measured the same way and shown beside it, for information.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import statistics
import time
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from flowledger.settings import load_settings

WARMUP = 20


class Thing(Aggregate):
    @event("Created")
    def __init__(self, n: int) -> None:
        self.n = n


def _es_saver(env: dict[str, str], start: Any, seconds: float, out: Any) -> None:
    app: Application[Any] = Application(env=env)
    for i in range(WARMUP):
        app.save(Thing(i))
    out.put("ready")
    start.wait()
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.save(Thing(count))
        count += 1
    out.put(count)
    app.close()


def _raw_inserter(url: str, start: Any, seconds: float, out: Any) -> None:
    import uuid

    import psycopg

    payload = b"x" * 200
    with psycopg.connect(url, autocommit=True) as conn:
        sql = "INSERT INTO raw_inserts (originator_id, state) VALUES (%s, %s)"
        for _ in range(WARMUP):
            conn.execute(sql, (uuid.uuid4(), payload))
        out.put("ready")
        start.wait()
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            conn.execute(sql, (uuid.uuid4(), payload))
            count += 1
    out.put(count)


def _get(out: Any, procs: list[Any], timeout: float) -> Any:
    """The next message of a child; fails fast when a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=0.2)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a saver process failed (see its traceback above)") from None
    raise TimeoutError("saver processes did not answer")


def _run(target: Any, arg: Any, processes: int, seconds: float) -> float:
    """Start the processes, let them warm up, then count their saves for ``seconds``."""
    ctx = mp.get_context("spawn")  # no inherited threads, sockets or pools
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(arg, start, seconds, out)) for _ in range(processes)]
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            _get(out, procs, 120)
        start.set()
        counts = [_get(out, procs, seconds + 120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return sum(counts) / seconds


def measure(database_url: str, seconds: float, repeats: int = 1) -> dict[str, Any]:
    """Each rate is the best of `repeats` runs of `seconds` (all runs are listed too): other
    work on the machine can only lower a run, and the writers' queue on the table lock
    makes the rate swing with scheduling, so the best run is the ceiling."""
    import psycopg

    ours = dict(load_settings(database_url=database_url, jwt_secret="x" * 32).postgres_env())
    env = {k: v for k, v in ours.items() if k != "APPLICATION_RECORDER_TOPIC"}  # the library's
    Application(env={**ours, "CREATE_TABLE": "y"}).close()  # the tables, once, before the race
    env["CREATE_TABLE"] = ours["CREATE_TABLE"] = "n"  # concurrent CREATE OR REPLACE FUNCTION fails
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_inserts (id BIGSERIAL PRIMARY KEY, originator_id UUID NOT NULL,"
            " state BYTEA NOT NULL)"
        )
        synchronous_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    runs: dict[str, list[float]] = {"es1": [], "es2": [], "raw2": [], "ours2": []}
    for _ in range(repeats):  # interleaved, so a burst of other work hits them all alike
        runs["es1"].append(round(_run(_es_saver, env, 1, seconds), 1))
        runs["es2"].append(round(_run(_es_saver, env, 2, seconds), 1))
        runs["raw2"].append(round(_run(_raw_inserter, database_url, 2, seconds), 1))
        runs["ours2"].append(round(_run(_es_saver, ours, 2, seconds), 1))
    return {
        "eventsourcing_saves_per_s_1_process": max(runs["es1"]),
        "eventsourcing_saves_per_s_2_processes": max(runs["es2"]),
        "raw_insert_rows_per_s_2_processes": max(runs["raw2"]),
        "flowledger_recorder_saves_per_s_2_processes": max(runs["ours2"]),
        "median_saves_per_s_2_processes": statistics.median(runs["es2"]),
        "runs": runs,
        "seconds_each": seconds,
        "synchronous_commit": synchronous_commit,
    }
