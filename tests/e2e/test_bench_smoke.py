"""The benchmark runs end to end in its smoke mode (tiny counts, nothing asserted about speed).

It starts its own PostgreSQL databases, the production processes and a fake n8n, so this is
an end-to-end test; the real figures come from ``python -m bench.run`` (see bench/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = (
    "(1) eventsourcing saves/s",
    "(2) accepted async executions/s",
    "same, whole pipeline running",
    "(3) completed executions/s end to end",
    "saves per execution",
    "(4) /execute latency",
    "(5) commit -> actor start",
    "commit -> n8n called",
    "commit -> executions read model",
    "idle Redis commands/s",
    "(6) gunicorn worker RSS",
    "(12) projection rebuild, executions alone",
    "audit_chain, in the rebuild of all",
    "audit, in the rebuild of all",
    "every projection one after the other",
    "(11a) raw read of the events table",
    "(11b) audit verify",
    "(11c) /audit/log pages of 1000",
)


def test_bench_smoke_prints_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    for name in ("FLOWLEDGER_TEST_POSTGRES_URL", "FLOWLEDGER_BENCH_POSTGRES_URL",
                 "FLOWLEDGER_BENCH_REDIS_URL"):  # fmt: skip
        if name in os.environ:
            env[name] = os.environ[name]
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    missing = [row for row in ROWS if row not in done.stdout]
    assert not missing, f"rows missing from the table: {missing}\n{output[-5000:]}"
