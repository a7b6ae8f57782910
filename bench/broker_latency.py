"""Send -> actor-start latency of Dramatiq on Redis, per consumer poll setting, and its idle cost.

For each setting a real ``dramatiq`` worker process is started against Redis; then

* low load: single messages every 50-200 ms (randomised); the actor RPUSHes
  ``time.time()`` at its start and we compare with the send time;
* lone: single messages 1.5-3 s apart, so the consumer's backoff has reached its cap
  (with 50-200 ms gaps it is still short, which flatters long timeouts);
* idle: Redis commands/s (``INFO stats`` total_commands_processed, which counts the commands
  run inside the Lua scripts too, less the baseline measured with no worker) and EVALSHA/s
  (round trips), plus the worker processes' CPU, over a window with nothing to do;
* load: ``--load`` messages sent as fast as possible.

Settings: stock ``RedisBroker`` with ``dramatiq_worker_timeout`` = each of ``--timeouts``
(dramatiq 2.2.1 has no ``--worker-timeout`` flag); ``flowledger``: ``workers.broker.make_broker``
on both sides (its consumers block until an enqueue wakes them; 1 process, and the
Procfile's 2 processes x 8 threads); ``stub``: embedded StubBroker worker.

    python bench/broker_latency.py              # full run, ~10 min
    python bench/broker_latency.py --smoke      # a few seconds, asserts nothing about speed
    python bench/broker_latency.py --redelivery 3   # kill -9 a busy worker, time redelivery
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bench.harness import cpu_seconds, tree

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
QUEUE = "bench"


# --- worker side: ``dramatiq broker_latency:worker_broker`` calls this -----------------------


def _make_redis_broker(
    url: str, ns: str, mode: str, heartbeat_ms: int, maintenance: int
) -> RedisBroker:
    if mode == "flowledger":  # note: make_broker also sets the global broker
        from workers.broker import make_broker

        made = make_broker(url, namespace=ns, heartbeat_timeout_ms=heartbeat_ms)
        assert isinstance(made, RedisBroker)
        made.maintenance_chance = maintenance or made.maintenance_chance
        return made
    broker = RedisBroker(
        url=url,
        namespace=ns,
        heartbeat_timeout=heartbeat_ms,
        maintenance_chance=maintenance or 1000,
    )
    return broker


def _declare_actors(broker: dramatiq.Broker, client: redis.Redis, ns: str) -> dict[str, Any]:
    starts = f"{ns}:bench:starts"

    def stamp(seq: int) -> None:
        client.rpush(starts, f"{seq} {time.time()!r}")

    def hang(seq: int) -> None:
        client.rpush(starts, f"{seq} {time.time()!r}")
        if client.incr(f"{ns}:bench:hang:{seq}") == 1:
            time.sleep(600)  # the first delivery hangs until kill -9

    def declare(fn: Callable[[int], None]) -> Any:  # a decorator is single-use
        return dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)(fn)

    return {"stamp": declare(stamp), "hang": declare(hang)}


def _sender(a: argparse.Namespace, ns: str, mode: str) -> RedisBroker:
    """The benchmark's sending broker. Flowledger's consumers are woken by Flowledger's
    enqueues (every producer of the system sends through `make_broker`), so its setting
    sends with its own broker (made directly: `make_broker` would set the global one)."""
    if mode == "flowledger":
        from workers.broker import FlowledgerRedisBroker

        return FlowledgerRedisBroker(url=a.redis_url, namespace=ns,
                                     heartbeat_timeout=a.heartbeat_ms)  # fmt: skip
    return _make_redis_broker(a.redis_url, ns, "plain", a.heartbeat_ms, 0)


def worker_broker() -> None:
    """Broker callable for the dramatiq CLI: builds the broker from FLBENCH_* env vars."""
    env = os.environ
    url, ns = env["FLBENCH_URL"], env["FLBENCH_NS"]
    broker = _make_redis_broker(
        url, ns, env["FLBENCH_MODE"], int(env["FLBENCH_HB"]), int(env["FLBENCH_MAINT"])
    )
    dramatiq.set_broker(broker)
    _declare_actors(broker, redis.Redis.from_url(url), ns)


# --- sender side ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    low: list[float] = field(default_factory=list)
    lone: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    load_rate: float = 0.0
    idle_cmds: float = float("nan")
    idle_evalsha: float = float("nan")
    idle_cpu: float = float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _counters(r: redis.Redis) -> tuple[float, int, int]:
    stats = r.info("stats")
    evalsha = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    return time.monotonic(), int(stats["total_commands_processed"]), int(evalsha)


def measure_idle(
    r: redis.Redis, seconds: float, pids: list[int], baseline: float = 0.0
) -> tuple[float, float, float]:
    """(commands/s less baseline, EVALSHA/s, CPU % of one core) over ``seconds``."""
    cpu0, (t0, c0, e0) = cpu_seconds(pids), _counters(r)
    time.sleep(seconds)
    cpu1, (t1, c1, e1) = cpu_seconds(pids), _counters(r)
    dt = t1 - t0
    return (c1 - c0) / dt - baseline, (e1 - e0) / dt, 100 * (cpu1 - cpu0) / dt


class Results:
    """Start times RPUSHed by the actors, keyed by message seq."""

    def __init__(self, r: redis.Redis, ns: str) -> None:
        self.r, self.key = r, f"{ns}:bench:starts"
        self.seen: dict[int, float] = {}

    def wait(self, seqs: list[int], timeout: float) -> dict[int, float]:
        deadline = time.monotonic() + timeout
        while not all(s in self.seen for s in seqs):
            if time.monotonic() > deadline:
                missing = [s for s in seqs if s not in self.seen]
                raise TimeoutError(f"{len(missing)} messages never started, e.g. {missing[:5]}")
            item = self.r.blpop([self.key], timeout=0.2)
            if item:
                seq, t = item[1].split()
                self.seen.setdefault(int(seq), float(t))
        return {s: self.seen[s] for s in seqs}


Send = Callable[[int], Any]


def send_paced(send: Send, n: int, gap: tuple[float, float], first_seq: int) -> dict[int, float]:
    sent = {}
    for seq in range(first_seq, first_seq + n):
        time.sleep(random.uniform(*gap))
        sent[seq] = time.time()
        send(seq)
    return sent


def send_burst(send: Send, n: int, first_seq: int) -> dict[int, float]:
    sent = {}
    for seq in range(first_seq, first_seq + n):
        sent[seq] = time.time()
        send(seq)
    return sent


class WorkerProc:
    """One ``dramatiq`` CLI (master + worker processes) for one setting."""

    def __init__(
        self,
        a: argparse.Namespace,
        ns: str,
        mode: str,
        timeout_ms: int | None,
        processes: int,
        threads: int,
    ) -> None:
        env = dict(os.environ)
        env.pop("dramatiq_worker_timeout", None)
        if timeout_ms is not None:
            env["dramatiq_worker_timeout"] = str(timeout_ms)
        env.update(
            FLBENCH_URL=a.redis_url,
            FLBENCH_NS=ns,
            FLBENCH_MODE=mode,
            FLBENCH_HB=str(a.heartbeat_ms),
            FLBENCH_MAINT=str(a.maintenance_chance),
            PYTHONPATH=os.pathsep.join([str(BENCH_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        )
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the worker
        cmd = [
            sys.executable,
            "-m",
            "dramatiq",
            "broker_latency:worker_broker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def kill9(self) -> None:
        for pid in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self) -> str:
        self.log.seek(0)
        return "".join(self.log.readlines()[-30:])


def _cleanup(r: redis.Redis, ns: str) -> None:
    keys = list(r.scan_iter(f"{ns}:*", count=1000))
    if keys:
        r.delete(*keys)


def run_redis_setting(
    a: argparse.Namespace,
    r: redis.Redis,
    name: str,
    mode: str,
    timeout_ms: int | None,
    processes: int,
    threads: int,
    baseline: float,
) -> Row:
    ns = f"flbench-{uuid.uuid4().hex[:8]}"
    sender = _sender(a, ns, mode)
    send = _declare_actors(sender, r, ns)["stamp"].send
    results, row = Results(r, ns), Row(name)
    worker = WorkerProc(a, ns, mode, timeout_ms, processes, threads)
    try:
        send(-1)  # warm-up: the worker is up once this one ran
        results.wait([-1], timeout=60)
        sent = send_paced(send, a.messages, a.gap, 0)
        got = results.wait(list(sent), timeout=60)
        row.low = [got[s] - sent[s] for s in sent]
        sent = send_paced(send, a.lone, a.lone_gap, 50_000)
        got = results.wait(list(sent), timeout=60)
        row.lone = [got[s] - sent[s] for s in sent]
        time.sleep(a.settle)  # let the consumers' backoff reach its cap
        row.idle_cmds, row.idle_evalsha, row.idle_cpu = measure_idle(
            r, a.idle_seconds, worker.pids(), baseline
        )
        sent = send_burst(send, a.load, 100_000)
        got = results.wait(list(sent), timeout=120)
        row.load = [got[s] - sent[s] for s in sent]
        row.load_rate = len(sent) / (max(got.values()) - min(sent.values()))
    except Exception:
        print(worker.tail(), file=sys.stderr)
        raise
    finally:
        worker.stop()
        _cleanup(r, ns)
    return row


def run_stub(a: argparse.Namespace, threads: int) -> Row:
    from workers.broker import make_broker, start_embedded_worker

    broker = make_broker(None)
    starts: dict[int, float] = {}
    done = threading.Condition()

    def stamp(seq: int) -> None:
        with done:
            starts[seq] = time.time()
            done.notify_all()

    actor = dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)(stamp)
    worker = start_embedded_worker(broker, threads=threads)

    def wait(seqs: list[int]) -> dict[int, float]:
        with done:
            if not done.wait_for(lambda: all(s in starts for s in seqs), timeout=60):
                raise TimeoutError("embedded worker did not run every message")
        return {s: starts[s] for s in seqs}

    row = Row(f"stub embedded, {threads} thr")
    try:
        sent = send_paced(actor.send, a.messages, a.gap, 0)
        got = wait(list(sent))
        row.low = [got[s] - sent[s] for s in sent]
        sent = send_paced(actor.send, a.lone, a.lone_gap, 50_000)
        got = wait(list(sent))
        row.lone = [got[s] - sent[s] for s in sent]
        time.sleep(a.settle)
        cpu0, t0 = cpu_seconds([os.getpid()]), time.monotonic()
        time.sleep(a.idle_seconds)
        row.idle_cpu = 100 * (cpu_seconds([os.getpid()]) - cpu0) / (time.monotonic() - t0)
        row.idle_cmds = row.idle_evalsha = 0.0
        sent = send_burst(actor.send, a.load, 100_000)
        got = wait(list(sent))
        row.load = [got[s] - sent[s] for s in sent]
        row.load_rate = len(sent) / (max(got.values()) - min(sent.values()))
    finally:
        worker.stop(timeout=5000)
    return row


def run_redelivery(a: argparse.Namespace, r: redis.Redis, mode: str, maintenance: int) -> float:
    """kill -9 a worker while its actor runs; seconds until a fresh worker starts it again."""
    ns = f"flbench-{uuid.uuid4().hex[:8]}"
    sender = _sender(a, ns, mode)
    hang = _declare_actors(sender, r, ns)["hang"]
    results = Results(r, ns)
    a2 = argparse.Namespace(**{**vars(a), "maintenance_chance": maintenance})
    first = WorkerProc(a2, ns, mode, None, 1, 2)
    second = None
    try:
        hang.send(1)
        results.wait([1], timeout=60)
        first.kill9()
        killed = time.time()
        results.seen.clear()
        second = WorkerProc(a2, ns, mode, None, 1, 2)
        got = results.wait([1], timeout=a.heartbeat_ms / 1000 + 120)
        return got[1] - killed
    finally:
        for w in (first, second):
            if w:
                w.stop()
        _cleanup(r, ns)


def ms(x: float) -> str:
    return f"{1000 * x:8.1f}"


def print_table(rows: list[Row], baseline: float) -> None:
    print(f"\nidle baseline (no worker, our INFO calls included): {baseline:.1f} Redis cmds/s")
    head = (
        f"{'setting':34} {'low p50':>8} {'low p99':>8} {'lone p50':>8} {'lone max':>8} | "
        f"{'idle cmd/s':>10} {'evalsha/s':>9} {'cpu %':>6} | "
        f"{'load p50':>8} {'load p99':>8} {'msg/s':>7}"
    )
    print(head)
    print("-" * len(head))
    for w in rows:
        print(
            f"{w.name:34} {ms(pct(w.low, 0.5))} {ms(pct(w.low, 0.99))} "
            f"{ms(pct(w.lone, 0.5))} {ms(pct(w.lone, 1))} | "
            f"{w.idle_cmds:10.0f} {w.idle_evalsha:9.0f} {w.idle_cpu:6.1f} | "
            f"{ms(pct(w.load, 0.5))} {ms(pct(w.load, 0.99))} {w.load_rate:7.0f}"
        )
    print("(latencies in ms, send -> actor start; cpu % = worker processes, of one core)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny run, a few seconds")
    p.add_argument(
        "--redis-url", default=os.environ.get("FLOWLEDGER_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument(
        "--timeouts",
        default="1000,100,20,10,5",
        help="dramatiq_worker_timeout values (ms) for the stock RedisBroker",
    )
    p.add_argument("--messages", type=int, default=200, help="low-load messages, 50-200 ms apart")
    p.add_argument("--lone", type=int, default=20, help="lone messages, 1.5-3 s apart")
    p.add_argument("--load", type=int, default=2000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--heartbeat-ms", type=int, default=15000)
    p.add_argument("--maintenance-chance", type=int, default=0, help="0: the mode's own")
    p.add_argument(
        "--private-redis",
        action="store_true",
        help="start our own redis-server on a free port: idle counts unaffected by others",
    )
    p.add_argument(
        "--redelivery",
        type=int,
        default=0,
        metavar="N",
        help="also time kill -9 redelivery N times per maintenance chance",
    )
    a = p.parse_args(argv)
    a.gap, a.lone_gap, a.settle = (0.05, 0.2), (1.5, 3.0), 3.0
    timeouts = [int(t) for t in a.timeouts.split(",") if t]
    if a.smoke:
        a.messages, a.load, a.idle_seconds, a.gap, a.settle = 5, 30, 0.5, (0.01, 0.03), 0.2
        a.lone, a.lone_gap = 1, (0.2, 0.2)
        timeouts = [10]

    sys.path[:0] = [str(REPO_ROOT), str(BENCH_DIR)]
    with contextlib.ExitStack() as stack:
        if a.private_redis:
            a.redis_url = stack.enter_context(private_redis())
        return run_all(a, timeouts)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen([*cmd, "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                redis.Redis.from_url(url).ping()
                break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def run_all(a: argparse.Namespace, timeouts: list[int]) -> int:
    r = redis.Redis.from_url(a.redis_url, decode_responses=True)
    r.ping()
    baseline, _, _ = measure_idle(r, a.idle_seconds, [])
    rows = []
    for t in timeouts:
        rows.append(
            run_redis_setting(
                a, r, f"stock RedisBroker, timeout {t} ms", "plain", t, 1, a.threads, baseline
            )
        )
        if not a.smoke:
            print_table(rows[-1:], baseline)
    rows.append(
        run_redis_setting(
            a,
            r,
            f"flowledger make_broker, 1p x {a.threads}t",
            "flowledger",
            None,
            1,
            a.threads,
            baseline,
        )
    )
    if not a.smoke:
        rows.append(
            run_redis_setting(
                a, r, "flowledger make_broker, 2p x 8t", "flowledger", None, 2, 8, baseline
            )
        )
    rows.append(run_stub(a, 8))
    print_table(rows, baseline)
    assert all(len(w.low) == a.messages and len(w.lone) == a.lone for w in rows)
    assert all(len(w.load) == a.load for w in rows)

    if a.redelivery:
        print(
            f"\nkill -9 redelivery, heartbeat_timeout {a.heartbeat_ms} ms "
            "(seconds from kill to the second start):"
        )
        for label, chance in (
            ("dramatiq default chance 1000", 1000),
            ("flowledger chance 10000", 10_000),
        ):
            times = [run_redelivery(a, r, "flowledger", chance) for _ in range(a.redelivery)]
            print(f"  {label:30} " + "  ".join(f"{t:5.1f}" for t in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
