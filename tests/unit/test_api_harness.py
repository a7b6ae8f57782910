"""The API around an embedded app: a temp SQLite file, projections following in threads.

Not fixtures (each test module declares its own `api` fixture from `Harness`), so the test
modules stay independent; the few tests at the bottom check the harness itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from argon2 import PasswordHasher
from dramatiq.brokers.stub import StubBroker
from falcon import testing

from api.app import Deps, create_app
from events.application import Flowledger
from events.execution import Execution
from flowledger.processes import projection_followers, run_followers
from flowledger.settings import Settings
from workers import broker

PASSWORD = "correct horse battery"
OPERATOR = "ops@example.com"
# Cheap argon2 parameters: the KDF's cost is not what these tests are about.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("commands.user.hasher", FAST_HASHER)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Harness:
    """`client` calls the app in-process; with `serve=True` it also listens on `url`
    (which is the settings' public URL, so n8n's callbacks reach it)."""

    def __init__(self, deps: Deps, url: str | None) -> None:
        self.deps, self.app, self.url = deps, deps.app, url
        self.wsgi = create_app(deps)
        self.client = testing.TestClient(self.wsgi)

    @classmethod
    @contextmanager
    def start(
        cls,
        tmp_path: Path,
        run_inline: Callable[[Flowledger, Execution], Execution] | None = None,
        serve: bool = False,
        **overrides: Any,
    ) -> Iterator[Harness]:
        server = make_server("127.0.0.1", 0, lambda *_: [], _Server, _Quiet) if serve else None
        url = f"http://127.0.0.1:{server.server_port}" if server else "http://127.0.0.1:8000"
        defaults: dict[str, Any] = {
            "public_url": url,
            "database_url": f"sqlite:///{tmp_path}/flowledger.db",
            "jwt_secret": "test-secret-" + uuid.uuid4().hex,
            "var_dir": tmp_path,
            "operator_emails": OPERATOR,
            "read_your_writes_timeout": 5.0,
        }
        settings = Settings(**{**defaults, **overrides})
        stub = broker.setup(settings)  # before workers.execution declares its actors
        if isinstance(stub, StubBroker):
            stub.flush_all()  # the in-process broker is per process: no earlier test's messages
        app = Flowledger(settings)
        deps = Deps(settings=settings, app=app, db=app.db)
        if run_inline is not None:
            deps.run_inline = run_inline
        followers = projection_followers(app)
        threads = run_followers(followers)
        harness = cls(deps, url if server else None)
        if server is not None:
            server.set_app(harness.wsgi)
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
            threads[-1].start()
        try:
            yield harness
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            for follower in followers:
                follower.stop()
            for thread in threads:
                thread.join(timeout=5)

    # -- what tests read ----------------------------------------------------------------------

    def position(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def settle(self) -> None:
        assert self.deps.settle("workflows", "executions", "credit_transactions")

    @contextmanager
    def nothing_written(self) -> Iterator[None]:
        """Asserts that the block appends no event to the log."""
        before = self.position()
        yield
        assert self.position() == before, "a refused request wrote events"

    # -- requests -------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> testing.Result:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.simulate_request(method, path, headers=headers, **kwargs)

    def register(self, email: str, full_name: str = "Test User") -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, "full_name": full_name}
        result = self.call("POST", "/api/v1/auth/register", json=body)
        assert result.status_code == 201, result.text
        return result.json

    def login(self, email: str) -> str:
        body = {"email": email, "password": PASSWORD}
        result = self.call("POST", "/api/v1/auth/login", json=body)
        assert result.status_code == 200, result.text
        return result.json["access_token"]

    def user(self, email: str) -> str:
        """A registered, logged-in user's access token."""
        self.register(email)
        return self.login(email)

    def organization(
        self, token: str, tenant_id: str, plan_type: str = "starter"
    ) -> dict[str, Any]:
        body = {"name": tenant_id.title(), "tenant_id": tenant_id, "plan_type": plan_type}
        result = self.call("POST", "/api/v1/organizations", token, json=body)
        assert result.status_code == 201, result.text
        return result.json

    def tenant(
        self, tenant_id: str, email: str = "owner@example.com", plan_type: str = "starter"
    ) -> dict[str, Any]:
        """A new owner logged in (`token`) with a new organization (the create answer)."""
        token = self.user(email)
        return {**self.organization(token, tenant_id, plan_type), "token": token}

    def member(self, owner: str, org: dict[str, Any], email: str, role: str) -> str:
        token = self.user(email)
        path = f"/api/v1/organizations/{org['id']}/members"
        result = self.call("POST", path, owner, json={"email": email, "role": role})
        assert result.status_code == 201, result.text
        return token

    def workflow(
        self, token: str, url: str = "https://n8n.example.com/webhook/x", **fields: Any
    ) -> dict[str, Any]:
        body = {"name": "Process", "webhook_url": url, **fields}
        result = self.call("POST", "/api/v1/workflows", token, json=body)
        assert result.status_code == 201, result.text
        return result.json


def signed(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": stamp, "X-Signature": f"sha256={digest}"}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def assert_error(result: testing.Result, status: int, code: str) -> dict[str, Any]:
    """The contract's envelope with this status and code; returns `error`."""
    assert result.status_code == status, result.text
    error = result.json["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code, error
    assert error["request_id"] == result.headers["X-Request-ID"]
    return error


def test_the_harness_projects_what_the_api_writes(api: Harness) -> None:
    owner = api.user("owner@example.com")
    api.organization(owner, "acme")
    result = api.call("GET", "/api/v1/credits/transactions", owner)
    assert result.status_code == 200, result.text
    assert [t["amount"] for t in result.json["items"]] == [100]
