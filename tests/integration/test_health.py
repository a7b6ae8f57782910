"""`/health` against real dependencies: Redis, a fake n8n over HTTP, PostgreSQL going away."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import PG_ADMIN_URL, fresh_database
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import free_port
from tests.unit.test_api_harness import Harness


@pytest.fixture(scope="module")
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture
def silent() -> Iterator[str]:
    """An address that accepts connections and never answers (a hung n8n)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()


def health(tmp_path: Path, **settings: Any) -> tuple[int, dict[str, Any]]:
    redis_url = settings.pop("redis_url", "redis://127.0.0.1:6379/0")
    with Harness.start(tmp_path, **settings) as api:
        api.deps.redis = redis.Redis.from_url(redis_url, socket_timeout=1)
        result = api.call("GET", "/health")
        return result.status_code, dict(result.json)


def test_healthy_when_every_dependency_answers(tmp_path: Path, n8n: FakeN8n) -> None:
    status, body = health(tmp_path, n8n_url=n8n.url)
    assert status == 200 and body["status"] == "healthy"
    assert body["checks"] == {"database": "ok", "redis": "ok", "n8n": "ok"}
    assert body["version"] and body["timestamp"].endswith("Z")


def test_n8n_is_not_configured_without_its_url(tmp_path: Path) -> None:
    status, body = health(tmp_path)
    assert status == 200 and body["status"] == "healthy"
    assert body["checks"]["n8n"] == "not_configured"


@pytest.mark.parametrize("where", ["closed port", "wrong path", "silent"])
def test_degraded_but_200_when_n8n_is_down(
    tmp_path: Path, n8n: FakeN8n, silent: str, where: str
) -> None:
    url = {
        "closed port": f"http://127.0.0.1:{free_port()}",
        "wrong path": f"{n8n.url}/not-n8n",  # answers, but not n8n's /healthz: 404
        "silent": silent,  # accepts and never answers: the check gives up
    }[where]
    status, body = health(tmp_path, n8n_url=url)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"] == {"database": "ok", "redis": "ok", "n8n": "error"}


def test_unhealthy_and_503_when_redis_is_down(tmp_path: Path, n8n: FakeN8n) -> None:
    status, body = health(tmp_path, n8n_url=n8n.url, redis_url=f"redis://127.0.0.1:{free_port()}")
    assert status == 503 and body["status"] == "unhealthy"
    assert body["checks"] == {"database": "ok", "redis": "error", "n8n": "ok"}


def test_unhealthy_and_503_when_postgresql_goes_away(tmp_path: Path) -> None:
    with fresh_database("flowledger_health") as url:
        name = url.rsplit("/", 1)[1]
        with Harness.start(tmp_path, database_url=url, db_pool_max=2) as api:
            assert api.call("GET", "/health").json["checks"]["database"] == "ok"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            result = api.call("GET", "/api/v1/health")
            assert result.status_code == 503, result.text
            assert result.json["status"] == "unhealthy"
            assert result.json["checks"]["database"] == "error"
        api.app.close()
        api.app.db.close()
