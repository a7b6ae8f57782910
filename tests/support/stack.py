"""The production processes of the Procfile, started for real by end-to-end tests.

Each process runs from this checkout's virtual environment against real PostgreSQL and
Redis, logs to a file under the test's temporary directory, and can be killed with
SIGKILL and started again, which is how the crash-safety tests prove nothing is lost.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """web (gunicorn, 2 workers), worker (dramatiq), dispatcher, projector and scheduler."""

    workdir: Path
    database_url: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.namespace = f"fl-e2e-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
        env.update(
            {
                "FLOWLEDGER_DATABASE_URL": self.database_url,
                "FLOWLEDGER_REDIS_URL": self.redis_url,
                "FLOWLEDGER_BROKER_NAMESPACE": self.namespace,
                "FLOWLEDGER_PUBLIC_URL": self.url,
                "FLOWLEDGER_JWT_SECRET": "e2e-secret-" + "x" * 32,
                "FLOWLEDGER_INTERNAL_SECRET": "e2e-internal",
                "FLOWLEDGER_OPERATOR_EMAILS": "ops@example.com",
                "FLOWLEDGER_HEARTBEAT_TIMEOUT_MS": "3000",
                "FLOWLEDGER_LOG_FORMAT": "json",
                "FLOWLEDGER_RATE_LIMIT_SCALE": "1000",
                "PORT": str(self.port),
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def commands(self) -> dict[str, list[str]]:
        return {
            "web": [
                str(BIN / "gunicorn"),
                "api.app:get_app()",
                "--workers",
                "2",
                "--threads",
                "8",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--graceful-timeout",
                "2",
            ],
            "worker": [
                str(BIN / "dramatiq"),
                "workers.broker:setup",
                "workers.actors",
                "--processes",
                "1",
                "--threads",
                "8",
            ],
            "dispatcher": [str(BIN / "flowledger"), "dispatcher"],
            "projector": [str(BIN / "flowledger"), "projector"],
            "scheduler": [str(BIN / "flowledger"), "scheduler"],
        }

    def start(self, *names: str, env: dict[str, str] | None = None) -> Stack:
        """Start processes by name (default: all); `env` adds variables to these only."""
        for name in names or tuple(self.commands()):
            log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (kept by Popen)
            self.procs[name] = subprocess.Popen(
                self.commands()[name],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if "web" in (names or ("web",)):
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code < 600:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"web did not start:\n{self.log('web')[-3000:]}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """SIGKILL the process group: gunicorn and dramatiq children die with it."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
            self.procs.pop(name)

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)
