"""`Idempotency-Key` on POSTs: the same key and body within 24 h replays the first answer.

A row per (scope, key) in the read side's database claims the key before the responder
runs; the answer is stored when it is sent (encrypted: it may hold a client secret shown
once). A concurrent request with the same key waits for the first one's answer and replays
it. A 5xx answer releases the key, since nothing was done. Scope = the organization (else
the user) so two tenants never share keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

import falcon
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.errors import ApiError
from flowledger.db import Database, Row

if TYPE_CHECKING:
    from api.app import Deps

TABLES = [
    "CREATE TABLE IF NOT EXISTS idempotency_keys ("
    " scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, owner TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL, status INTEGER, content_type TEXT, body TEXT,"
    " PRIMARY KEY (scope, key))"
]
TTL = 24 * 3600
PENDING_TTL = 15 * 60  # a claim without an answer this old belongs to a dead process
WAIT_FOR_FIRST = 30.0  # how long a concurrent duplicate waits for the first answer


class IdempotencyStore:
    def __init__(self, db: Database, master_key: bytes) -> None:
        self.db = db
        self._aead = AESGCM(hashlib.sha256(b"flowledger-idempotency:" + master_key).digest())
        db.script(TABLES)

    def claim(self, scope: str, key: str, fingerprint: str) -> tuple[str, Row | None]:
        """(owner, None) when this request runs; (owner, row) when it replays `row`."""
        deadline = time.monotonic() + WAIT_FOR_FIRST
        if random.random() < 0.001:
            self.db.query(
                "DELETE FROM idempotency_keys WHERE created_at < %s", (time.time() - TTL,)
            )
        while True:
            owner = uuid.uuid4().hex
            self.db.query(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, owner, created_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (scope, key) DO NOTHING",
                (scope, key, fingerprint, owner, time.time()),
            )
            row = self.db.one(
                "SELECT * FROM idempotency_keys WHERE scope = %s AND key = %s", (scope, key)
            )
            if row is None or row["owner"] == owner:
                return owner, None
            if self._expired(row):
                self._release(scope, key, row["owner"])
                continue
            if row["fingerprint"] != fingerprint:
                raise ApiError(
                    409,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with another request",
                )
            if row["status"] is not None:
                return owner, row
            if time.monotonic() > deadline:
                raise ApiError(
                    409, "CONFLICT", "a request with this Idempotency-Key is in progress"
                )
            time.sleep(0.02)

    def _expired(self, row: Row) -> bool:
        age = time.time() - float(row["created_at"])
        return age > TTL or (row["status"] is None and age > PENDING_TTL)

    def _release(self, scope: str, key: str, owner: str) -> None:
        self.db.query(
            "DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND owner = %s",
            (scope, key, owner),
        )

    def store(
        self, claim: tuple[str, str, str], status: int, content_type: str, data: bytes
    ) -> None:
        scope, key, owner = claim
        if status >= 500:
            return self._release(scope, key, owner)
        self.db.query(
            "UPDATE idempotency_keys SET status = %s, content_type = %s, body = %s "
            "WHERE scope = %s AND key = %s AND owner = %s",
            (status, content_type, self._seal(data), scope, key, owner),
        )

    def body_of(self, row: Row) -> bytes:
        raw = base64.b64decode(row["body"] or "")
        return self._aead.decrypt(raw[:12], raw[12:], None) if raw else b""

    def _seal(self, data: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, data, None)).decode()


def fingerprint(req: falcon.Request) -> str:
    """Method, path and body; JSON bodies compare by content, not by key order."""
    body: Any = req.context.json
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if body is None:
        canonical = req.context.raw_body
    return hashlib.sha256(f"{req.method} {req.path}\n".encode() + canonical).hexdigest()


class Idempotency:
    def __init__(self, deps: Deps) -> None:
        self.store = deps.idempotency

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        key = req.get_header("Idempotency-Key")
        if key is None or req.method != "POST" or not getattr(resource, "idempotent", True):
            return
        if not 1 <= len(key) <= 255:
            raise ApiError(400, "BAD_REQUEST", "Idempotency-Key must be 1 to 255 characters")
        principal = getattr(req.context, "principal", None)
        scope = principal.scope if principal else "public"
        owner, row = self.store.claim(scope, key, fingerprint(req))
        if row is None:
            req.context.idempotency = (scope, key, owner)
            return
        resp.status = int(row["status"])
        resp.content_type = row["content_type"]
        resp.data = self.store.body_of(row)
        resp.set_header("Idempotent-Replayed", "true")
        resp.complete = True

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        claim = getattr(req.context, "idempotency", None)
        if claim is not None:
            data = resp.render_body() or b""
            self.store.store(claim, resp.status_code, resp.content_type or "", data)
