"""Optional sampling profiles of the stack's processes during a phase (``--profile``).

``py-spy record --format raw`` (collapsed stacks) is attached to each process (with its
subprocesses: gunicorn and dramatiq workers) for the length of a phase; the summaries list
where the CPU went: the hottest frames by own time and by inclusive time. py-spy is not a
dependency: ``pip install py-spy`` into the venv to use this.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import BenchStack

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


@contextlib.contextmanager
def profiled(
    stack: BenchStack, phase: str, outdir: Path, mode: str | None
) -> Iterator[dict[str, Any]]:
    """Record every stack process during the ``with`` block; the summary lands in the dict.

    ``mode``: None (off), ``wall`` (every sample of every thread, idle ones included: waits on
    PostgreSQL show as ``Connection.wait``, sleeps as ``sleep``) or ``gil`` (only samples
    holding the GIL: where Python burns CPU).
    """
    summary: dict[str, Any] = {}
    if not mode or not available():
        yield summary
        return
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, proc in stack.procs.items():
        out = outdir / f"profile-{mode}-{phase}-{name}.txt"
        cmd = ["py-spy", "record", "--pid", str(proc.pid), "--subprocesses", "--format", "raw",
               "--rate", "200", "--nonblocking", "-o", str(out),
               *(["--gil"] if mode == "gil" else ["--idle"])]  # fmt: skip
        log = open(outdir / f"py-spy-{phase}-{name}.log", "wb")  # noqa: SIM115 (kept by Popen)
        spies[name] = (subprocess.Popen(cmd, stdout=log, stderr=log), out)
    time.sleep(1.0)  # py-spy attaches
    try:
        yield summary
    finally:
        for name, (spy, out) in spies.items():
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
            if out.exists():
                summary[name] = summarize(out)


def write_summaries(results: dict[str, Any], path: Path) -> bool:
    """The ``profile_*`` summaries of a run as text; False when there are none."""
    lines: list[str] = []
    for key, processes in results.items():
        if not key.startswith("profile_"):
            continue
        for name, summary in processes.items():
            phase = key.removeprefix("profile_")
            lines.append(f"== {phase} / {name}: {summary['samples']} samples")
            for title in ("own_percent", "inclusive_percent"):
                lines.append(f"  {title.replace('_', ' ')}:")
                lines += [f"    {share:5.1f}  {frame}" for frame, share in summary[title]]
    if lines:
        path.write_text("\n".join(lines) + "\n")
    return bool(lines)


def _short(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Own-time and inclusive-time shares of the hottest frames of a raw py-spy profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in counter.most_common(top)]

    return {"samples": total, "own_percent": share(own), "inclusive_percent": share(inclusive)}
