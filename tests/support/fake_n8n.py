"""A fake n8n that plays the Webhook node over real HTTP.

One server serves every mode at once; the mode is chosen by the webhook path
(``/webhook/<mode>...``, ``/webhook-test/<mode>...`` too), so ``/webhook/sync-orders`` and
``/webhook/sync`` both answer in sync mode:

=====================  =======================================================================
path prefix            behaviour
=====================  =======================================================================
``sync``               200 ``{"result": "ok", "echo": body["input"]}`` at once
``callbackfail``       like ``callback`` but the callback reports ``status: "failed"``
``callback``           200 ``{"message": "Workflow was started"}`` at once, then after
                       ``callback_delay`` s POSTs to ``body.callback.status_url`` with
                       ``X-Callback-Token: body.callback.token`` (result kept in ``.callbacks``)
``fail``               500 ``{"message": "Error in workflow"}``
``badrequest``         400 ``{"message": "Bad request"}``
``slow``               sleeps ``slow_seconds`` (default 5) then answers like ``sync``
``flaky``              500 for the first ``flaky_failures`` (default 2) calls per execution id
                       (header ``X-Flowledger-Execution-ID``), then like ``sync``
anything else          404 like n8n's "webhook is not registered"
=====================  =======================================================================

Other routes: ``GET /healthz`` → ``{"status": "ok"}``; ``GET /api/v1/workflows`` (n8n's public
API, needs ``X-N8N-API-KEY: <api_key>`` else 401) → ``{"data": [...], "nextCursor": null}``
with :attr:`FakeN8n.workflows` (one of them has a Webhook node with path ``sync-imported``).

Control routes, never recorded, for tests that run the fake as a separate process:
``GET /_fake/requests[?path=/webhook/sync]``, ``GET /_fake/callbacks``, ``POST /_fake/reset``,
``POST /_fake/config`` with any of ``{"slow_seconds", "callback_delay", "flaky_failures",
"api_key"}``.

In-process use::

    with FakeN8n() as n8n:
        httpx.post(f"{n8n.url}/webhook/sync", json={"input": {"a": 1}})
        [req] = n8n.wait_for_requests(1, timeout=2)
        assert req.body["input"] == {"a": 1}            # req["body"] works too

As a process (e2e tests, benchmarks)::

    python -m tests.support.fake_n8n --port 5679

It prints ``fake-n8n listening on http://127.0.0.1:PORT`` once ready (use ``--port 0`` to get a
free port and read it from that line) and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import heapq
import hmac
import itertools
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

__all__ = [
    "DEFAULT_WORKFLOWS",
    "CallbackRecord",
    "FakeN8n",
    "RecordedRequest",
    "compute_signature",
    "verify_signature",
]

_MISSING = object()

DEFAULT_WORKFLOWS: list[dict[str, Any]] = [
    {
        "id": "wf-sync-imported",
        "name": "Imported sync workflow",
        "active": True,
        "createdAt": "2026-01-20T10:00:00.000Z",
        "updatedAt": "2026-01-20T10:00:00.000Z",
        "tags": [],
        "nodes": [
            {
                "id": "0f5532f9-36ba-4bef-86c7-30d607400b15",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "webhookId": "0f5532f9-36ba-4bef-86c7-30d607400b15",
                "parameters": {
                    "path": "sync-imported",
                    "httpMethod": "POST",
                    "responseMode": "responseNode",
                    "options": {},
                },
            },
            {
                "id": "8d4f3b53-5c1b-4a8e-9a43-2b7c1f3a4e10",
                "name": "Respond to Webhook",
                "type": "n8n-nodes-base.respondToWebhook",
                "typeVersion": 1.1,
                "position": [220, 0],
                "parameters": {"respondWith": "json", "responseBody": "={}"},
            },
        ],
        "connections": {
            "Webhook": {"main": [[{"node": "Respond to Webhook", "type": "main", "index": 0}]]}
        },
    },
    {
        "id": "wf-nightly-report",
        "name": "Nightly report (no webhook)",
        "active": False,
        "createdAt": "2026-01-20T10:00:00.000Z",
        "updatedAt": "2026-01-20T10:00:00.000Z",
        "tags": [],
        "nodes": [
            {
                "id": "5c2e1d0a-7f3b-4b7e-8a55-0e7d2b9c6f21",
                "name": "Schedule Trigger",
                "type": "n8n-nodes-base.scheduleTrigger",
                "typeVersion": 1.2,
                "position": [0, 0],
                "parameters": {"rule": {"interval": [{"field": "days"}]}},
            }
        ],
        "connections": {},
    },
]


class _ItemAccess:
    """Lets records be read as ``rec.path`` or ``rec["path"]``."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


@dataclass
class RecordedRequest(_ItemAccess):
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes
    body: Any  # parsed JSON, or None when the body was empty / not JSON
    received_at: float  # time.monotonic()
    status: int = 0  # the status the fake answered with (0 while still being handled)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def execution_id(self) -> str | None:
        return self.headers.get("x-flowledger-execution-id")

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "raw_body": self.raw_body.decode("utf-8", "replace"),
            "body": self.body,
            "received_at": self.received_at,
            "status": self.status,
        }


@dataclass
class CallbackRecord(_ItemAccess):
    url: str | None
    execution_id: Any
    token: str | None
    payload: dict[str, Any]
    status_code: int | None = None  # None when the call itself failed
    response_body: str = ""
    error: str | None = None
    sent_at: float = field(default=0.0)  # time.monotonic()

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "execution_id": self.execution_id,
            "token": self.token,
            "payload": self.payload,
            "status_code": self.status_code,
            "response_body": self.response_body,
            "error": self.error,
            "sent_at": self.sent_at,
        }


def compute_signature(client_secret: str | bytes, timestamp: str | bytes, raw_body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(client_secret, timestamp + raw_body)>`` as the gateway sends."""
    key = client_secret.encode() if isinstance(client_secret, str) else client_secret
    ts = timestamp.encode() if isinstance(timestamp, str) else timestamp
    return "sha256=" + hmac.new(key, ts + raw_body, hashlib.sha256).hexdigest()


def verify_signature(request: RecordedRequest | Any, client_secret: str | bytes) -> bool:
    """Check ``X-Flowledger-Signature`` of a recorded request against ``client_secret``.

    Accepts the signature with or without the ``sha256=`` prefix (the contract's form has it).
    """
    headers = request["headers"] if isinstance(request, dict) else request.headers
    raw = request["raw_body"] if isinstance(request, dict) else request.raw_body
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    sig = headers.get("x-flowledger-signature")
    ts = headers.get("x-flowledger-timestamp")
    if not sig or not ts:
        return False
    expected = compute_signature(client_secret, ts, raw)
    if not sig.startswith("sha256="):
        sig = "sha256=" + sig
    return hmac.compare_digest(sig.lower(), expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024
    fake: FakeN8n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-n8n/1.0"
    sys_version = ""
    # An idle keep-alive connection is dropped after this long (also bounds reads).
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track_connection(self.connection, add=False)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        try:
            self.server.fake._handle(self, raw)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # never let a bug kill the connection silently
            with contextlib.suppress(OSError):
                self.send_json(500, {"message": f"fake-n8n internal error: {exc!r}"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None):
        data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)


class FakeN8n:
    """A fake n8n server on 127.0.0.1 (port 0 = a free one), started in a daemon thread."""

    WEBHOOK_PREFIXES = ("/webhook/", "/webhook-test/")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        callback_delay: float = 0.05,
        slow_seconds: float = 5.0,
        flaky_failures: int = 2,
        api_key: str = "n8n-test-key",
        workflows: list[dict[str, Any]] | None = None,
        max_recorded: int | None = None,
        callback_timeout: float = 10.0,
        callback_workers: int = 32,
    ) -> None:
        self.host = host
        self.port = port
        self.callback_delay = callback_delay
        self.slow_seconds = slow_seconds
        self.flaky_failures = flaky_failures
        self.api_key = api_key
        self.workflows = copy.deepcopy(DEFAULT_WORKFLOWS if workflows is None else workflows)
        self.callback_timeout = callback_timeout
        self._max_recorded = max_recorded
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._callbacks: deque[CallbackRecord] = deque(maxlen=max_recorded)
        self._request_count = 0
        self._callback_count = 0
        self._flaky_counts: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Callbacks: a scheduler thread keeps a heap of due times and hands due jobs to a pool.
        self._callback_workers = callback_workers
        self._sched: list[tuple[float, int, Callable[[], None]]] = []
        self._sched_seq = itertools.count()
        self._sched_cond = threading.Condition()
        self._sched_thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending_callbacks = 0
        self._http: httpx.Client | None = None  # created at the first callback
        self._http_lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeN8n:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._pool = ThreadPoolExecutor(self._callback_workers, thread_name_prefix="fake-n8n-cb")
        self._sched_thread = threading.Thread(
            target=self._scheduler_loop, name="fake-n8n-scheduler", daemon=True
        )
        self._sched_thread.start()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-n8n",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:  # wake handler threads blocked on idle keep-alive sockets
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._sched_cond:
            self._sched.clear()
            self._sched_cond.notify_all()
        if self._sched_thread is not None:
            self._sched_thread.join(timeout=2)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._http_lock:
            if self._http is not None:
                self._http.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._server = self._thread = self._sched_thread = self._pool = self._http = None

    close = stop

    def __enter__(self) -> FakeN8n:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def webhook_url(self, path: str) -> str:
        return f"{self.url}/webhook/{path.lstrip('/')}"

    # ----------------------------------------------------------------- inspection
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first (control routes excluded)."""
        with self._cond:
            return list(self._requests)

    @property
    def callbacks(self) -> list[CallbackRecord]:
        """A snapshot of the callbacks made so far (after they completed), oldest first."""
        with self._cond:
            return list(self._callbacks)

    @property
    def request_count(self) -> int:
        """Every request recorded since start/reset, even those ``max_recorded`` dropped."""
        with self._cond:
            return self._request_count

    def requests_for(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    def wait_for_requests(
        self, n: int, timeout: float = 5.0, path: str | None = None
    ) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests (whose path starts with ``path``, if given) arrived.

        Returns the matching requests; raises ``TimeoutError`` if they don't come in time.
        """

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if path is None or r.path.startswith(path)]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= n, timeout=timeout):
                got = matching()
                raise TimeoutError(
                    f"fake n8n: expected {n} request(s)"
                    f"{f' to {path}*' if path else ''} within {timeout}s, got {len(got)}: "
                    f"{[r.method + ' ' + r.path for r in got]}"
                )
            return matching()

    def wait_for_callbacks(self, n: int, timeout: float = 5.0) -> list[CallbackRecord]:
        """Wait until at least ``n`` callbacks were sent and answered (or failed)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._callbacks) >= n, timeout=timeout):
                raise TimeoutError(
                    f"fake n8n: expected {n} callback(s) within {timeout}s, "
                    f"got {len(self._callbacks)}: {[c.to_json() for c in self._callbacks]}"
                )
            return list(self._callbacks)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no callback is scheduled or in flight."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending_callbacks == 0, timeout=timeout):
                raise TimeoutError(f"fake n8n: {self._pending_callbacks} callback(s) pending")

    def reset(self) -> None:
        """Forget recorded requests, callbacks and flaky counters."""
        with self._cond:
            self._requests.clear()
            self._callbacks.clear()
            self._flaky_counts.clear()
            self._request_count = 0
            self._callback_count = 0

    # ----------------------------------------------------------------- internals
    def _track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, req: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(req)
            self._request_count += 1
            self._cond.notify_all()

    def _handle(self, h: _Handler, raw: bytes) -> None:
        received_at = time.monotonic()
        split = urlsplit(h.path)
        path = split.path
        query = parse_qs(split.query)
        if path.startswith("/_fake/"):
            self._handle_control(h, path, query, raw)
            return
        headers = {k.lower(): v for k, v in h.headers.items()}
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        req = RecordedRequest(
            method=h.command,
            path=path,
            query=query,
            headers=headers,
            raw_body=raw,
            body=body,
            received_at=received_at,
        )
        self._record(req)  # at arrival, so a test sees a slow call while it is in flight
        status, payload = self._route(req)
        req.status = status
        h.send_json(status, payload)

    def _route(self, req: RecordedRequest) -> tuple[int, Any]:
        path = req.path
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path.rstrip("/") == "/api/v1/workflows" and req.method == "GET":
            if req.headers.get("x-n8n-api-key") != self.api_key:
                return 401, {"message": "unauthorized"}
            return 200, {"data": copy.deepcopy(self.workflows), "nextCursor": None}
        for prefix in self.WEBHOOK_PREFIXES:
            if path.startswith(prefix):
                return self._webhook(req, path[len(prefix) :])
        return 404, {"code": 404, "message": f"Cannot {req.method} {path}"}

    def _sync_answer(self, req: RecordedRequest) -> tuple[int, Any]:
        echo = req.body.get("input") if isinstance(req.body, dict) else None
        return 200, {"result": "ok", "echo": echo}

    def _webhook(self, req: RecordedRequest, hook: str) -> tuple[int, Any]:
        if req.method != "POST":
            return 404, {
                "code": 404,
                "message": f"This webhook is not registered for {req.method} requests. "
                "Did you mean to make a POST request?",
            }
        if hook.startswith("sync"):
            return self._sync_answer(req)
        if hook.startswith("callbackfail"):
            self._schedule_callback(req, failed=True)
            return 200, {"message": "Workflow was started"}
        if hook.startswith("callback"):
            self._schedule_callback(req, failed=False)
            return 200, {"message": "Workflow was started"}
        if hook.startswith("fail"):
            return 500, {"message": "Error in workflow"}
        if hook.startswith("badrequest"):
            return 400, {"message": "Bad request"}
        if hook.startswith("slow"):
            self._stopping.wait(self.slow_seconds)
            return self._sync_answer(req)
        if hook.startswith("flaky"):
            key = req.execution_id
            if key is None and isinstance(req.body, dict):
                key = str(req.body.get("execution_id", ""))
            key = key or ""
            with self._cond:
                seen = self._flaky_counts.get(key, 0)
                self._flaky_counts[key] = seen + 1
            if seen < self.flaky_failures:
                return 500, {"message": "Error in workflow", "attempt": seen + 1}
            return self._sync_answer(req)
        return 404, {
            "code": 404,
            "message": f'The requested webhook "POST {hook}" is not registered.',
            "hint": "fake n8n modes: sync, callback, callbackfail, fail, badrequest, slow, flaky",
        }

    def _schedule_callback(self, req: RecordedRequest, failed: bool) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        cb_raw = body.get("callback")
        cb: dict[str, Any] = cb_raw if isinstance(cb_raw, dict) else {}
        payload: dict[str, Any] = {
            "execution_id": body.get("execution_id"),
            "status": "failed" if failed else "completed",
            "execution_time_ms": 50,
        }
        if failed:
            payload["error"] = {"message": "boom"}
        else:
            payload["data"] = {"result": "called back"}
        record = CallbackRecord(
            url=cb.get("status_url"),
            execution_id=body.get("execution_id"),
            token=cb.get("token"),
            payload=payload,
        )
        with self._cond:
            self._pending_callbacks += 1
        due = time.monotonic() + max(0.0, float(self.callback_delay))
        with self._sched_cond:
            heapq.heappush(self._sched, (due, next(self._sched_seq), lambda: self._send(record)))
            self._sched_cond.notify()

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(
                    timeout=self.callback_timeout,
                    limits=httpx.Limits(max_connections=self._callback_workers * 2),
                    verify=False,  # callbacks go to local test servers; skips loading CAs
                )
            return self._http

    def _scheduler_loop(self) -> None:
        while not self._stopping.is_set():
            with self._sched_cond:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if self._sched and self._sched[0][0] <= now:
                        _, _, job = heapq.heappop(self._sched)
                        break
                    wait = self._sched[0][0] - now if self._sched else None
                    self._sched_cond.wait(wait)
                else:
                    return
            pool = self._pool
            if pool is None:
                return
            try:
                pool.submit(job)
            except RuntimeError:  # pool shut down
                return

    def _send(self, record: CallbackRecord) -> None:
        try:
            record.sent_at = time.monotonic()
            if not record.url:
                record.error = "request body has no callback.status_url"
            elif self._stopping.is_set():
                record.error = "fake n8n stopped"
            else:
                headers = {"X-Callback-Token": record.token or ""}
                try:
                    resp = self._client().post(record.url, json=record.payload, headers=headers)
                    record.status_code = resp.status_code
                    record.response_body = resp.text[:4096]
                except httpx.HTTPError as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._cond:
                self._callbacks.append(record)
                self._callback_count += 1
                self._pending_callbacks -= 1
                self._cond.notify_all()

    def _handle_control(
        self, h: _Handler, path: str, query: dict[str, list[str]], raw: bytes
    ) -> None:
        if path == "/_fake/requests" and h.command == "GET":
            prefix = (query.get("path") or [""])[0]
            reqs = [r.to_json() for r in self.requests if r.path.startswith(prefix)]
            h.send_json(200, {"requests": reqs, "total": self.request_count})
        elif path == "/_fake/callbacks" and h.command == "GET":
            h.send_json(200, {"callbacks": [c.to_json() for c in self.callbacks]})
        elif path == "/_fake/reset" and h.command == "POST":
            self.reset()
            h.send_json(200, {"reset": True})
        elif path == "/_fake/config" and h.command == "POST":
            try:
                conf = json.loads(raw or b"{}")
            except ValueError:
                h.send_json(400, {"message": "config body must be JSON"})
                return
            allowed = {"slow_seconds", "callback_delay", "flaky_failures", "api_key"}
            unknown = set(conf) - allowed
            if unknown:
                h.send_json(400, {"message": f"unknown settings {sorted(unknown)}"})
                return
            for key, value in conf.items():
                setattr(self, key, value)
            h.send_json(200, {k: getattr(self, k) for k in sorted(allowed)})
        else:
            h.send_json(404, {"message": f"unknown control route {h.command} {path}"})


try:  # a ready-made fixture: `from tests.support.fake_n8n import fake_n8n` in a conftest
    import pytest
except ImportError:  # pragma: no cover - running as a bare process without pytest
    pass
else:

    @pytest.fixture
    def fake_n8n() -> Iterator[FakeN8n]:
        with FakeN8n() as server:
            yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake n8n webhook server for Flowledger tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5679, help="0 picks a free port")
    parser.add_argument("--callback-delay", type=float, default=0.05)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--flaky-failures", type=int, default=2)
    parser.add_argument("--api-key", default="n8n-test-key")
    parser.add_argument(
        "--max-recorded",
        type=int,
        default=10000,
        help="keep at most this many requests/callbacks in memory (0 = unbounded)",
    )
    args = parser.parse_args(argv)
    fake = FakeN8n(
        args.host,
        args.port,
        callback_delay=args.callback_delay,
        slow_seconds=args.slow_seconds,
        flaky_failures=args.flaky_failures,
        api_key=args.api_key,
        max_recorded=args.max_recorded or None,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start()
    print(f"fake-n8n listening on {fake.url}", flush=True)
    try:
        stop.wait()  # the signal handler runs in this thread and sets it
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
