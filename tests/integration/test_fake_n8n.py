"""The fake n8n answers every mode over real HTTP, as the gateway's tests rely on."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_n8n import FakeN8n, compute_signature, verify_signature

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture
def client(n8n: FakeN8n) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=n8n.url, timeout=5, verify=False) as c:  # plain http
        yield c


class _Receiver:
    """A tiny stdlib server standing in for the gateway's /internal/update-status."""

    def __init__(self, status: int = 200) -> None:
        self.received: queue.Queue[tuple[str, dict[str, str], Any]] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.put((self.path, headers, json.loads(raw)))
                out = json.dumps({"ok": True}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _gateway_body(execution_id: str, status_url: str = "http://127.0.0.1:9/x") -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "workflow_id": "wf-1",
        "tenant_id": "acme",
        "input": {"name": "Ada"},
        "metadata": {},
        "callback": {
            "status_url": status_url,
            "error_url": status_url.replace("update-status", "log-error"),
            "token": f"tok-{execution_id}",
        },
    }


def test_sync_echoes_input_and_records_request(n8n: FakeN8n, client: httpx.Client) -> None:
    before = time.monotonic()
    resp = client.post(
        "/webhook/sync-orders",
        json={"input": {"x": [1, 2]}},
        headers={"X-Flowledger-Execution-ID": "e-1"},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {"result": "ok", "echo": {"x": [1, 2]}}

    [req] = n8n.wait_for_requests(1, timeout=1)
    assert req.method == "POST"
    assert req.path == "/webhook/sync-orders"
    assert req.headers["x-flowledger-execution-id"] == "e-1"
    assert req["body"] == {"input": {"x": [1, 2]}}
    assert json.loads(req.raw_body) == req.body
    assert before <= req.received_at <= time.monotonic()
    assert req.status == 200


def test_wait_for_requests_times_out_with_a_clear_message(n8n: FakeN8n) -> None:
    with pytest.raises(TimeoutError, match="expected 1 request"):
        n8n.wait_for_requests(1, timeout=0.05)


def test_callback_mode_calls_back_with_the_token(n8n: FakeN8n, client: httpx.Client) -> None:
    with _Receiver() as receiver:
        status_url = f"{receiver.url}/api/v1/internal/update-status"
        started = time.monotonic()
        resp = client.post("/webhook/callback-x", json=_gateway_body("e-cb", status_url))
        assert resp.status_code == 200
        assert resp.json() == {"message": "Workflow was started"}
        assert time.monotonic() - started < n8n.callback_delay + 0.5  # answered at once

        path, headers, body = receiver.received.get(timeout=2)
        assert path == "/api/v1/internal/update-status"
        assert headers["x-callback-token"] == "tok-e-cb"
        assert headers["content-type"].startswith("application/json")
        assert body == {
            "execution_id": "e-cb",
            "status": "completed",
            "data": {"result": "called back"},
            "execution_time_ms": 50,
        }
        [cb] = n8n.wait_for_callbacks(1, timeout=2)
        assert cb.status_code == 200
        assert cb["execution_id"] == "e-cb"
        assert cb.error is None


def test_callbackfail_mode_reports_failure(n8n: FakeN8n, client: httpx.Client) -> None:
    with _Receiver() as receiver:
        status_url = f"{receiver.url}/api/v1/internal/update-status"
        resp = client.post("/webhook/callbackfail", json=_gateway_body("e-f", status_url))
        assert resp.json() == {"message": "Workflow was started"}
        _, headers, body = receiver.received.get(timeout=2)
        assert headers["x-callback-token"] == "tok-e-f"
        assert body["execution_id"] == "e-f"
        assert body["status"] == "failed"
        assert body["error"] == {"message": "boom"}
        assert "data" not in body


def test_callback_to_an_unreachable_gateway_is_recorded(n8n: FakeN8n, client: httpx.Client):
    client.post("/webhook/callback", json=_gateway_body("e-x", "http://127.0.0.1:9/nowhere"))
    [cb] = n8n.wait_for_callbacks(1, timeout=3)
    assert cb.status_code is None
    assert cb.error


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/webhook/fail", 500),
        ("/webhook/failing-thing", 500),
        ("/webhook/badrequest", 400),
        ("/webhook/no-such-mode", 404),
        ("/webhook-test/sync", 200),
    ],
)
def test_status_modes(client: httpx.Client, path: str, status: int) -> None:
    resp = client.post(path, json=_gateway_body("e-s"))
    assert resp.status_code == status
    if status == 500:
        assert resp.json() == {"message": "Error in workflow"}


def test_webhook_with_wrong_method_is_404(client: httpx.Client) -> None:
    assert client.get("/webhook/sync").status_code == 404


def test_slow_mode_sleeps_then_answers(n8n: FakeN8n, client: httpx.Client) -> None:
    n8n.slow_seconds = 0.3
    started = time.monotonic()
    resp = client.post("/webhook/slow", json={"input": 7})
    assert time.monotonic() - started >= 0.3
    assert resp.json() == {"result": "ok", "echo": 7}


def test_slow_mode_lets_the_client_time_out(n8n: FakeN8n, client: httpx.Client) -> None:
    n8n.slow_seconds = 1.0
    with pytest.raises(httpx.ReadTimeout):
        client.post("/webhook/slow", json={"input": 1}, timeout=0.1)
    # Seen at arrival, while still in flight.
    [req] = n8n.wait_for_requests(1, timeout=1, path="/webhook/slow")
    assert req.body == {"input": 1}


def test_flaky_fails_first_calls_per_execution(n8n: FakeN8n, client: httpx.Client) -> None:
    def call(eid: str) -> int:
        return client.post(
            "/webhook/flaky", json={"input": 1}, headers={"X-Flowledger-Execution-ID": eid}
        ).status_code

    assert [call("a"), call("a"), call("b"), call("a"), call("b"), call("b")] == [
        500,
        500,
        500,
        200,
        500,
        200,
    ]
    n8n.flaky_failures = 0
    assert call("c") == 200


def test_public_api_lists_workflows_with_api_key(n8n: FakeN8n, client: httpx.Client) -> None:
    assert client.get("/api/v1/workflows").status_code == 401
    wrong = client.get("/api/v1/workflows", headers={"X-N8N-API-KEY": "nope"})
    assert wrong.status_code == 401
    resp = client.get("/api/v1/workflows?limit=250", headers={"X-N8N-API-KEY": n8n.api_key})
    assert resp.status_code == 200
    payload = resp.json()
    assert payload["nextCursor"] is None
    assert len(payload["data"]) >= 2
    webhook_nodes = [
        node
        for wf in payload["data"]
        for node in wf["nodes"]
        if node["type"] == "n8n-nodes-base.webhook"
    ]
    assert [n["parameters"]["path"] for n in webhook_nodes] == ["sync-imported"]
    assert webhook_nodes[0]["parameters"]["httpMethod"] == "POST"
    req = n8n.requests[-1]
    assert req.query == {"limit": ["250"]}


def test_healthz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_verify_signature(n8n: FakeN8n, client: httpx.Client) -> None:
    raw = json.dumps(_gateway_body("e-sig"), separators=(",", ":")).encode()
    ts = str(int(time.time()))
    sig = compute_signature("s3cret", ts, raw)
    client.post(
        "/webhook/sync",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Flowledger-Timestamp": ts,
            "X-Flowledger-Signature": sig,
        },
    )
    client.post("/webhook/sync", json={"input": 1})
    signed, unsigned = n8n.wait_for_requests(2, timeout=1)
    assert signed.raw_body == raw
    assert verify_signature(signed, "s3cret")
    assert verify_signature(signed, b"s3cret")
    assert not verify_signature(signed, "other")
    assert not verify_signature(unsigned, "s3cret")


def test_keep_alive_serves_many_requests_on_one_connection(n8n: FakeN8n) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", n8n.port, timeout=2)
    try:
        for i in range(20):
            body = json.dumps({"input": i})
            conn.request("POST", "/webhook/sync", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.version == 11
            assert json.loads(resp.read())["echo"] == i
            assert conn.sock is not None  # not closed by the server
    finally:
        conn.close()


def test_concurrent_requests(n8n: FakeN8n) -> None:
    def worker(k: int) -> list[int]:
        with httpx.Client(base_url=n8n.url) as c:
            return [c.post("/webhook/sync", json={"input": k}).status_code for _ in range(25)]

    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda k=k: results.append(worker(k))) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sum(len(r) for r in results) == 200
    assert {s for r in results for s in r} == {200}
    assert len(n8n.wait_for_requests(200, timeout=2)) == 200


def test_control_routes(n8n: FakeN8n, client: httpx.Client) -> None:
    client.post("/webhook/sync", json={"input": 1})
    resp = client.post("/_fake/config", json={"flaky_failures": 1, "slow_seconds": 0.01})
    assert resp.status_code == 200
    assert n8n.flaky_failures == 1
    assert client.post("/_fake/config", json={"bogus": 1}).status_code == 400
    listed = client.get("/_fake/requests", params={"path": "/webhook/"}).json()
    assert [r["path"] for r in listed["requests"]] == ["/webhook/sync"]
    assert client.post("/_fake/reset").status_code == 200
    assert n8n.requests == []


def test_runs_as_a_standalone_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_n8n", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("fake-n8n listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert httpx.get(f"{url}/healthz", timeout=2).json() == {"status": "ok"}
        resp = httpx.post(f"{url}/webhook/sync", json={"input": "p"}, timeout=2)
        assert resp.json() == {"result": "ok", "echo": "p"}
        recorded = httpx.get(f"{url}/_fake/requests", timeout=2).json()["requests"]
        assert [r["path"] for r in recorded] == ["/healthz", "/webhook/sync"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
