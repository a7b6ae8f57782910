"""A real HTTP receiver of outgoing webhooks, and Standard Webhooks verification written
from the spec (independent of `workers.webhooks`), for the integration and e2e tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def standard_webhooks_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, from the spec: HMAC-SHA256 over `id.timestamp.body`
    with the base64-decoded part of the secret after `whsec_`; any `v1,` signature may match."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = headers["webhook-id"] + "." + headers["webhook-timestamp"] + "." + body.decode()
    expected = base64.b64encode(hmac.new(key, content.encode(), hashlib.sha256).digest())
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    for part in headers["webhook-signature"].split(" "):
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return True
    return False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server: per path, fail the first N requests (500) or sleep first."""

    fail_first: dict[str, int] = field(default_factory=dict)
    sleep: dict[str, float] = field(default_factory=dict)
    got: list[Received] = field(default_factory=list)  # every request, failed ones too
    ok: list[Received] = field(default_factory=list)  # requests answered 2xx
    arrived: list[str] = field(default_factory=list)  # paths, as requests come in
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.arrived.append(path)
        time.sleep(self.sleep.get(path, 0))
        item = Received(path, headers, body, time.monotonic())
        with self.lock:
            self.got.append(item)
            seen = sum(1 for r in self.got if r.path == path)
            failing = seen <= self.fail_first.get(path, 0)
            if not failing:
                self.ok.append(item)
        return 500 if failing else 204

    def ok_for(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.ok if r.path == path]


def serve(receiver: Receiver, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(size)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
