"""`/health` and `/api/v1/health`: no authentication, 503 when a dependency is down."""

from __future__ import annotations

import pytest

from tests.unit.test_api_harness import Harness


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


# Redis, n8n and PostgreSQL up and down, for real: tests/integration/test_health.py
