"""How the gateway calls n8n: one signed POST to the workflow's webhook, classified.

2xx is an answer (sync mode: the output; callback mode: "started"), 4xx is refused (not
retried), 5xx / connection errors / timeouts are retryable. The caller decides what to
record; this module does no I/O besides the HTTP call, made with `workers.http_post`
(kept-alive `http.client` connections: a tenth of httpx's CPU per call).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

from commands.base import callback_token
from events.execution import Execution
from flowledger.settings import Settings
from workers import http_post

BODY_LIMIT = 4096
#: The largest answer read from n8n (a sync run's output); the rest is cut off.
MAX_ANSWER = 16 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    outcome: str  # answered | refused | retryable
    status_code: int | None
    output: Any
    text: str
    duration_ms: int

    @property
    def error(self) -> dict[str, Any]:
        return {"code": "N8N_ERROR", "status": self.status_code, "body": self.text[:BODY_LIMIT]}


def request_body(execution: Execution, settings: Settings) -> dict[str, Any]:
    base = settings.public_url.rstrip("/")
    return {
        "execution_id": str(execution.id),
        "workflow_id": str(execution.workflow_id),
        "tenant_id": execution.tenant_id,
        "input": execution.input,
        "metadata": execution.metadata,
        "callback": {
            "status_url": f"{base}/api/v1/internal/update-status",
            "error_url": f"{base}/api/v1/internal/log-error",
            "token": callback_token(settings.jwt_key, execution.id),
        },
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def call(execution: Execution, settings: Settings, secret: str, timeout: float) -> Answer:
    body = json.dumps(request_body(execution, settings), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Flowledger-Execution-ID": str(execution.id),
        "X-Flowledger-Timestamp": timestamp,
        "X-Flowledger-Signature": sign(secret, timestamp, body),
    }
    started = time.perf_counter()
    try:
        status, content = http_post.exchange(
            execution.target_url, body, headers, timeout, MAX_ANSWER
        )
    except (OSError, http.client.HTTPException, ValueError) as e:  # TimeoutError is an OSError
        return Answer("retryable", None, None, f"{type(e).__name__}: {e}", _ms(started))
    text = content.decode("utf-8", errors="replace")
    if 200 <= status < 300:
        return Answer("answered", status, _json_or_text(text), text, _ms(started))
    outcome = "refused" if 400 <= status < 500 else "retryable"
    return Answer(outcome, status, None, text, _ms(started))


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return {"text": text[:BODY_LIMIT]}


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
