"""The production processes against fresh PostgreSQL and Redis, and a fake n8n over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_database
from tests.support.fake_n8n import FakeN8n
from tests.support.stack import Stack

TERMINAL = {"completed", "failed", "timed_out", "cancelled", "rejected"}


@pytest.fixture(scope="module")
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_database("flowledger_e2e") as url:
        system = Stack(tmp_path_factory.mktemp("stack"), url)
        try:
            yield system.start()
        finally:
            system.stop()


@dataclass
class Tenant:
    """A registered user, logged in, owning one organization."""

    api: httpx.Client
    org: dict[str, Any]

    def workflow(self, url: str, **fields: Any) -> dict[str, Any]:
        body = {"name": f"wf-{uuid.uuid4().hex[:6]}", "webhook_url": url, **fields}
        response = self.api.post("/workflows", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def execution(self, execution_id: str, timeout: float = 30) -> dict[str, Any]:
        """The execution once terminal (and its read model caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.api.get(f"/executions/{execution_id}")
            if response.status_code == 200 and response.json()["status"] in TERMINAL:
                return dict(response.json())
            time.sleep(0.05)
        raise AssertionError(f"execution {execution_id} not terminal: {response.text}")

    def balance(self) -> int:
        return int(self.api.get("/credits/balance").json()["balance"])

    def transactions(self, timeout: float = 10) -> list[dict[str, Any]]:
        """The ledger once it has caught up with the balance (the list is a read model)."""
        deadline = time.monotonic() + timeout
        while True:
            page = self.api.get("/credits/transactions", params={"limit": 200}).json()
            items = list(page["items"])
            if sum(t["amount"] for t in items) == self.balance() or time.monotonic() > deadline:
                return items
            time.sleep(0.05)


def sign_up(stack: Stack, plan: str = "starter") -> Tenant:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    email = f"{tenant}@example.com"
    api = stack.client()
    registered = api.post(
        "/auth/register", json={"email": email, "password": "correct horse", "full_name": "E2E"}
    )
    assert registered.status_code == 201, registered.text
    login = api.post("/auth/login", json={"email": email, "password": "correct horse"})
    assert login.status_code == 200, login.text
    api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    api.cookies.clear()
    org = api.post("/organizations", json={"name": tenant, "tenant_id": tenant, "plan_type": plan})
    assert org.status_code == 201, org.text
    api.headers["X-Tenant-ID"] = tenant
    return Tenant(api=api, org=org.json())
