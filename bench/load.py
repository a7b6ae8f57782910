"""The load generator: ``wrk`` when installed (one C thread, leaves the cores to the server),
else a pool of Python threads with httpx (it competes with the server for the CPU, so its
numbers are a lower bound).

``hammer`` sends the same request over ``connections`` keep-alive connections for
``seconds``, or until ``until()`` is true (checked every 20 ms), and returns what came back.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import percentile


@dataclass
class Load:
    tool: str
    requests: int
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def count(self, *codes: int) -> int:
        return sum(n for code, n in self.statuses.items() if code in codes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


#: "auto" (wrk when installed), "wrk" or "python" (``--load-generator``).
PREFERRED = "auto"


def tool() -> str:
    if PREFERRED == "python" or (PREFERRED == "auto" and not shutil.which("wrk")):
        return "python-threads"
    return "wrk"


_LUA = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
%(headers)s
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  answered = 0
  statuses = {}
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("FLBENCH summary %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("FLBENCH latency %%d %%d\\n", latency:percentile(50),
    latency:percentile(99)))
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do
      io.write(string.format("FLBENCH status %%d %%d\\n", code, n))
    end
  end
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def hammer(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
    until: Callable[[], bool] | None = None,
) -> Load:
    """POST ``body`` to ``url`` over ``connections`` connections for ``seconds``, or less if
    ``until()`` becomes true first."""
    if tool() == "wrk":
        return _wrk(url, body, headers, connections, seconds, until)
    return _threads(url, body, headers, connections, seconds, until)


def _watch(until: Callable[[], bool] | None, seconds: float, stop: Callable[[], None]) -> None:
    """Call ``stop()`` once ``until()`` is true (a thread; gives up after ``seconds``)."""
    if until is None:
        return
    deadline = time.monotonic() + seconds

    def watch() -> None:
        while time.monotonic() < deadline:
            if until():
                stop()
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def _wrk(
    url: str, body: dict[str, Any], headers: dict[str, str], connections: int, seconds: float,
    until: Callable[[], bool] | None,
) -> Load:  # fmt: skip
    script = _LUA % {
        "body": _lua_string(json.dumps(body)),
        "headers": "\n".join(
            f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
        ),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    duration = max(1, round(seconds))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "-s", f.name,
           url]  # fmt: skip
    try:
        # SIGINT makes wrk stop early and still print its summary.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _watch(until, seconds + 60, lambda: proc.send_signal(signal.SIGINT))
        stdout, stderr = proc.communicate(timeout=duration + 120)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr}\n{stdout}")
    load = Load("wrk", 0, 0.0)
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["FLBENCH", "summary"]:
            _, duration_us, *errors = map(int, parts[2:])
            load.seconds = duration_us / 1e6
            load.errors = sum(errors[:4])  # connect, read, write, timeout (status: non-2xx)
        elif parts[:2] == ["FLBENCH", "latency"]:
            load.p50_ms, load.p99_ms = int(parts[2]) / 1000, int(parts[3]) / 1000
        elif parts[:2] == ["FLBENCH", "status"]:
            load.statuses[int(parts[2])] = load.statuses.get(int(parts[2]), 0) + int(parts[3])
    if not load.seconds:
        raise RuntimeError(f"could not read wrk's output:\n{stdout}\n{stderr}")
    load.requests = sum(load.statuses.values())
    if re.search(r"Socket errors", stdout) and not load.errors:
        load.errors = 1
    return load


def _threads(
    url: str, body: dict[str, Any], headers: dict[str, str], connections: int, seconds: float,
    until: Callable[[], bool] | None,
) -> Load:  # fmt: skip
    content = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    stopped = threading.Event()
    _watch(until, seconds, stopped.set)

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=30) as client:
            # At least one request each: on a busy machine making 16 clients can take longer
            # than a smoke run's 0.5 s, and no request at all left (3) waiting for none.
            first = True
            while first or (time.monotonic() < stop_at and not stopped.is_set()):
                first = False
                started = time.perf_counter()
                try:
                    status = client.post(url, content=content, headers=headers).status_code
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    statuses[status] += 1
                    latencies.append(elapsed)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    load = Load("python-threads", sum(statuses.values()), time.monotonic() - started,
                dict(statuses), errors)  # fmt: skip
    load.p50_ms = 1000 * percentile(latencies, 50)
    load.p99_ms = 1000 * percentile(latencies, 99)
    return load
