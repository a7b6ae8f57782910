"""`/health` and `/api/v1/health`: no authentication, 503 when a dependency is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.unit.test_api_harness import Harness


class FakeRedis:
    def __init__(self, up: bool) -> None:
        self.up = up

    def ping(self) -> bool:
        if not self.up:
            raise redis.exceptions.ConnectionError("connection refused")
        return True


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    with Harness.start(tmp_path) as harness:
        yield harness


@pytest.mark.parametrize("path", ["/health", "/api/v1/health"])
def test_is_healthy_with_redis_not_configured(api: Harness, path: str) -> None:
    result = api.call("GET", path)
    assert result.status_code == 200
    assert result.json["status"] == "healthy" and result.json["version"]
    assert result.json["checks"] == {
        "database": "ok",
        "redis": "not_configured",
        "n8n": "not_configured",
    }


def test_checks_redis_when_configured(api: Harness) -> None:
    api.deps.redis = FakeRedis(up=True)
    assert api.call("GET", "/health").json["checks"]["redis"] == "ok"


def test_is_unhealthy_and_503_when_redis_is_down(api: Harness) -> None:
    api.deps.redis = FakeRedis(up=False)
    result = api.call("GET", "/health")
    assert result.status_code == 503
    assert result.json["status"] == "unhealthy" and result.json["checks"]["redis"] == "error"


def test_is_unhealthy_and_503_when_the_database_is_down(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise OSError("database unreachable")

    monkeypatch.setattr(api.deps.db, "one", down)
    result = api.call("GET", "/health")
    assert result.status_code == 503
    assert result.json["status"] == "unhealthy" and result.json["checks"]["database"] == "error"
