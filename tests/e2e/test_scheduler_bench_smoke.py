"""`bench/scheduler_delay.py` runs in its smoke mode (nothing asserted about speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scheduler_delay_smoke_fires_every_slot() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.scheduler_delay", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    header, row = done.stdout.strip().splitlines()[-2:]
    assert "p99 ms" in header
    workflows, seconds, fired, missed, *_ = row.split()
    assert (workflows, seconds, fired, missed) == ("3", "4", "12", "0")
