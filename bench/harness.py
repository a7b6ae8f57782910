"""What every figure needs: a fresh database, the production processes, the fake n8n,
an organization with credits and a workflow, and a few measuring helpers (/proc, Redis).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx

from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: An existing database on the server under test, used to create and drop the run's own.
ADMIN_URL = os.environ.get(
    "FLOWLEDGER_BENCH_POSTGRES_URL",
    os.environ.get("FLOWLEDGER_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
)
REDIS_URL = os.environ.get("FLOWLEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
OPERATOR = "ops@example.com"  # an operator in the Stack's env: it may grant credits
PASSWORD = "bench-password-123"


# -- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


# -- databases -------------------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """A new PostgreSQL database for this run (URL yielded), dropped afterwards."""
    import psycopg

    name = f"flbench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- processes -------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    return [pid, *(p for child in children(pid) for p in tree(child))]


def rss_mib(pid: int) -> float:
    """VmRSS of one process, from /proc (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy(seconds: float = 1.0) -> float:
    """Percent of all CPUs busy over `seconds` (/proc/stat): other work skews every figure."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(100 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


class CpuMeter:
    """CPU seconds used by each part of the machine between two snapshots.

    Parts: each stack process (with its children), the fake n8n, PostgreSQL (its shared
    processes and the backends serving the run's database), Redis, this benchmark process
    (with its waited-for children: wrk), and everything else (``other``: other databases'
    backends included, so work of other users of the machine shows there).
    """

    def __init__(self, roots: dict[str, int], database: str) -> None:
        self.roots = roots
        self.database = database
        self.start = self.snapshot()
        self.t0 = time.monotonic()

    def snapshot(self) -> dict[str, float]:
        owner = {pid: name for name, root in self.roots.items() for pid in tree(root)}
        me = os.getpid()
        tick = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                head, _, rest = (entry / "stat").read_text().rpartition(")")
            except OSError:
                continue
            fields = rest.split()
            comm = head.split("(", 1)[1]
            pid = int(entry.name)
            if pid in owner:
                part = owner[pid]
            elif comm == "postgres":
                part = "postgres" if self._ours(entry) else "other"
            elif comm.startswith("redis-server"):
                part = "redis"
            else:
                part = "other"
            used[part] = used.get(part, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        times = os.times()
        used["bench+wrk"] = times.user + times.system + times.children_user + times.children_system
        return used

    def _ours(self, entry: Path) -> bool:
        """A shared PostgreSQL process, or a backend of the run's database."""
        try:
            words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().split()
        except OSError:
            return True
        # "postgres: 15/main: <user> <database> <host>(<port>) <state>" for backends
        is_backend = len(words) >= 5 and "(" in words[4]
        return not is_backend or words[3] == self.database

    def stop(self) -> dict[str, float]:
        """Percent of one core used by each part since the start (and "total")."""
        end, elapsed = self.snapshot(), time.monotonic() - self.t0
        percent = {
            part: round(100 * (end.get(part, 0.0) - self.start.get(part, 0.0)) / elapsed, 1)
            for part in sorted(set(end) | set(self.start))
        }
        percent = {part: value for part, value in percent.items() if value > 0}
        percent["total"] = round(sum(percent.values()), 1)
        return percent


class FakeN8nProcess:
    """``python -m tests.support.fake_n8n --port 0`` as a separate process."""

    def __init__(self, workdir: Path, max_recorded: int = 50_000) -> None:
        self.log = workdir / "fake_n8n.log"
        cmd = [sys.executable, "-m", "tests.support.fake_n8n", "--port", "0",
               "--max-recorded", str(max_recorded)]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(self.log, "ab"),  # noqa: SIM115
            start_new_session=True, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"fake n8n did not start: {line!r} {self.log.read_text()[-2000:]}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def reset(self) -> None:
        self.http.post("/_fake/reset").raise_for_status()

    def requests(self, path: str = "/webhook/") -> list[dict[str, Any]]:
        answer = self.http.get("/_fake/requests", params={"path": path})
        answer.raise_for_status()
        return list(answer.json()["requests"])

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(Exception):
            self.http.close()


@dataclass
class BenchStack(Stack):
    """The Stack of the e2e tests, with the process counts of the run's options."""

    web_threads: int | None = None
    worker_processes: int | None = None
    worker_threads: int | None = None

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()

        def set_option(name: str, option: str, value: int | None) -> None:
            if value is not None:
                args = commands[name]
                args[args.index(option) + 1] = str(value)

        set_option("web", "--threads", self.web_threads)
        set_option("worker", "--processes", self.worker_processes)
        set_option("worker", "--threads", self.worker_threads)
        return commands

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def web_workers(self) -> list[int]:
        """The gunicorn worker processes (children of the master)."""
        return children(self.pid("web"))

    def describe(self) -> dict[str, str]:
        return {name: " ".join(Path(a).name if i == 0 else a for i, a in enumerate(cmd))
                for name, cmd in self.commands().items()}  # fmt: skip


# -- the tenant the benchmarks act as ------------------------------------------------------


@dataclass
class Tenant:
    org_id: uuid.UUID
    tenant_id: str
    api_key: str
    workflow_id: uuid.UUID
    token: str


@dataclass
class Context:
    """Everything a figure needs once the stack is up."""

    stack: BenchStack
    fake: FakeN8nProcess
    tenant: Tenant
    database_url: str
    smoke: bool
    load_tool: str
    #: Requests the benchmark sent to gunicorn so far (for the memory figure).
    web_requests: int = 0
    notes: list[str] = field(default_factory=list)
    _app: Any = None

    @property
    def api(self) -> str:
        return f"{self.stack.url}/api/v1"

    def cpu(self) -> CpuMeter:
        """Start measuring where the CPU goes (``.stop()`` gives percent of one core)."""
        roots = {name: proc.pid for name, proc in self.stack.procs.items()}
        roots["fake_n8n"] = self.fake.pid
        return CpuMeter(roots, urlparse(self.database_url).path.lstrip("/"))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers={"X-API-Key": self.tenant.api_key},
                            timeout=60)  # fmt: skip

    def app(self) -> Any:
        """A Flowledger application of this process on the stack's database."""
        if self._app is None:
            self._app = prepare_schema(stack_settings(self.stack))
        return self._app

    def close(self) -> None:
        if self._app is not None:
            with contextlib.suppress(Exception):
                self._app.close()
            with contextlib.suppress(Exception):
                self._app.db.close()


def stack_settings(stack: Stack) -> Any:
    """The settings the stack's processes read from their environment."""
    from flowledger.settings import load_settings

    env = stack.env
    return load_settings(
        database_url=stack.database_url,
        redis_url=env["FLOWLEDGER_REDIS_URL"],
        jwt_secret=env["FLOWLEDGER_JWT_SECRET"],
        public_url=env["FLOWLEDGER_PUBLIC_URL"],
        broker_namespace=env["FLOWLEDGER_BROKER_NAMESPACE"],
    )


def prepare_schema(settings: Any) -> Any:
    """Create every table once, from this process, and return a Flowledger application.

    The processes create their tables at start with ``CREATE TABLE IF NOT EXISTS``, which
    races on a fresh database when they start together (PostgreSQL: duplicate key in
    ``pg_type_typname_nsp_index``), so the benchmark creates them first.
    """
    from api.idempotency import IdempotencyStore
    from events.application import Flowledger
    from projections import all_projections
    from projections.runner import TRACKING

    app = Flowledger(settings)
    IdempotencyStore(app.db, settings.master_key_bytes)
    app.db.script(TRACKING)
    for projection in all_projections():
        app.db.script(projection.tables)
    return app


def expect(answer: httpx.Response, *codes: int) -> dict[str, Any]:
    if answer.status_code not in codes:
        raise RuntimeError(
            f"{answer.request.method} {answer.request.url} → {answer.status_code}: "
            f"{answer.text[:1000]}"
        )
    return dict(answer.json()) if answer.content else {}


def make_tenant(stack: Stack, fake_url: str, *, timeout_seconds: int = 600) -> Tenant:
    """register → login → organization (API key) → credits (operator) → workflow."""
    with httpx.Client(base_url=f"{stack.url}/api/v1", timeout=30) as http:
        expect(
            http.post(
                "/auth/register",
                json={"email": OPERATOR, "password": PASSWORD, "full_name": "Bench Operator"},
            ),
            201,
        )
        token = expect(http.post("/auth/login", json={"email": OPERATOR, "password": PASSWORD}),
                       200)["access_token"]  # fmt: skip
        http.headers["Authorization"] = f"Bearer {token}"
        tenant_id = f"bench-{uuid.uuid4().hex[:8]}"
        org = expect(
            http.post(
                "/organizations",
                json={"name": "Bench", "tenant_id": tenant_id, "plan_type": "enterprise"},
            ),
            201,
        )
        expect(http.post(f"/organizations/{org['id']}/credits",
                         json={"amount": 10**9, "description": "benchmark"}), 200)  # fmt: skip
        workflow = expect(http.post("/workflows", json={
            "name": "Bench echo",
            "webhook_url": f"{fake_url}/webhook/sync-bench",
            "response_mode": "sync",
            "credits_per_execution": 1,
            "timeout_seconds": timeout_seconds,
        }), 201)  # fmt: skip
    return Tenant(
        org_id=uuid.UUID(org["id"]),
        tenant_id=tenant_id,
        api_key=org["api_key"],
        workflow_id=uuid.UUID(workflow["id"]),
        token=token,
    )


# -- Redis -------------------------------------------------------------------------------


def redis_commands(client: Any) -> tuple[float, int]:
    return time.monotonic(), int(client.info("stats")["total_commands_processed"])


def redis_rate(client: Any, seconds: float) -> float:
    """Redis commands/s over `seconds` (the two INFO calls of this function included)."""
    t0, c0 = redis_commands(client)
    time.sleep(seconds)
    t1, c1 = redis_commands(client)
    return (c1 - c0) / (t1 - t0)


def wait_until(predicate: Any, timeout: float, pause: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(pause)


# -- the event log, read directly -----------------------------------------------------------

QUEUED = "events.execution:Execution.Queued"
STARTED = "events.execution:Execution.Started"
TERMINAL = {
    f"events.execution:Execution.{name}": name.lower()
    for name in ("Completed", "Failed", "TimedOut", "Cancelled", "Rejected")
}


class EventLog:
    """Counts of event topics after a position of the events table (incremental, cheap)."""

    def __init__(self, ctx: Context) -> None:
        import psycopg
        from psycopg import sql

        self.conn = psycopg.connect(ctx.database_url, autocommit=True)
        self.table = sql.Identifier(ctx.app().recorder.events_table_name)
        self.start = self.position()
        self.last = self.start
        self.counts: dict[str, int] = {}

    def position(self) -> int:
        row = self.conn.execute(self._sql("SELECT COALESCE(MAX(notification_id), 0) FROM {}"))
        return int(row.fetchone()[0])  # type: ignore[index]

    def refresh(self) -> dict[str, int]:
        """Count the events committed since the last call. Safe: the recorder's table lock
        makes notification ids commit in order, so no smaller id can appear later."""
        rows = self.conn.execute(
            self._sql(
                "SELECT topic, COUNT(*), MAX(notification_id) FROM {}"
                " WHERE notification_id > %s GROUP BY topic"
            ),
            (self.last,),
        ).fetchall()
        for topic, n, top in rows:
            self.counts[topic] = self.counts.get(topic, 0) + int(n)
            self.last = max(self.last, int(top))
        return self.counts

    def count(self, *topics: str) -> int:
        return sum(self.counts.get(t, 0) for t in topics)

    def queued(self) -> int:
        return self.count(QUEUED)

    def terminal(self) -> int:
        return self.count(*TERMINAL)

    def saves(self) -> dict[str, int]:
        """Events and transactions (distinct ``xmin``: one per ``save``) since the start."""
        events, saves = self.conn.execute(
            self._sql(
                "SELECT COUNT(*), COUNT(DISTINCT xmin::text) FROM {} WHERE notification_id > %s"
            ),
            (self.start,),
        ).fetchone()  # type: ignore[misc]
        return {"events": int(events), "saves": int(saves)}

    def transactions(self) -> dict[str, int]:
        """Committed and rolled back transactions of the whole database so far."""
        commits, rollbacks = self.conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        return {"commits": int(commits), "rollbacks": int(rollbacks)}

    def _sql(self, statement: str) -> Any:
        from psycopg import sql

        return sql.SQL(statement).format(self.table)

    def close(self) -> None:
        self.conn.close()
