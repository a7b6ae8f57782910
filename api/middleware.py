"""Request ids, the body limit and JSON parsing; auth and idempotency have their own modules.

Order in the app: RequestId → ReadBody (413 before anything is parsed) → Authenticate →
ParseJson (415/400) → Idempotency. The raw body stays on `req.context.raw_body` for HMAC
signatures and idempotency fingerprints; the parsed JSON on `req.context.json`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import falcon
import structlog
from pydantic import BaseModel

from api.errors import ApiError

MAX_BODY = 1024 * 1024
MAX_OFFSET = 2**31 - 1  # past this a database integer overflows (a 500 before)
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
M = TypeVar("M", bound=BaseModel)
log = structlog.get_logger()


class RequestId:
    """Echo a sane `X-Request-ID`, else make one; bind it to every log line."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID") or ""
        req.context.request_id = given if SANE_REQUEST_ID.match(given) else str(uuid.uuid4())
        req.context.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=req.context.request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        resp.set_header("X-Request-ID", req.context.request_id)
        elapsed_ms = round((time.perf_counter() - req.context.started) * 1000, 1)
        log.info("http.request", method=req.method, path=req.path, status=resp.status_code,
                 duration_ms=elapsed_ms)  # fmt: skip


class ReadBody:
    """Read at most 1 MiB of body; more is a 413 whatever the Content-Length claims."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.raw_body = b""
        req.context.json = None
        length = req.content_length
        if length is not None and length > MAX_BODY:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "request body is larger than 1 MiB")
        if length or req.get_header("Transfer-Encoding"):
            stream = req.bounded_stream if length else req.stream  # chunked: the server dechunks
            raw = stream.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                raise ApiError(413, "PAYLOAD_TOO_LARGE", "request body is larger than 1 MiB")
            req.context.raw_body = raw


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class ParseJson:
    """A non-empty body must be UTF-8 JSON: wrong Content-Type → 415, bad JSON → 400."""

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        raw = req.context.raw_body
        if not raw.strip():
            return
        media_type, _, parameters = (req.content_type or "application/json").partition(";")
        media_type = media_type.strip().lower()
        charset = re.search(r"charset=\"?([\w-]+)", parameters.lower())
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json")
        if charset and charset.group(1) not in ("utf-8", "utf8"):
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "JSON bodies must be UTF-8")
        try:
            req.context.json = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, "BAD_REQUEST", f"malformed JSON body: {e}") from None
        except RecursionError:
            raise ApiError(400, "BAD_REQUEST", "malformed JSON body: nested too deeply") from None


def body(req: falcon.Request, model: type[M]) -> M:
    """The parsed body as `model` (pydantic errors become 422 in api/errors.py)."""
    data = req.context.json
    return model.model_validate({} if data is None else data)


def choice_param(req: falcon.Request, name: str, choices: Sequence[str]) -> str | None:
    """An optional query parameter that must be one of `choices` (else 400)."""
    value = req.get_param(name)
    if value is not None and value not in choices:
        raise falcon.HTTPInvalidParam(f"one of {', '.join(choices)}", name)
    return value


def page_params(req: falcon.Request) -> tuple[int, int]:
    limit = req.get_param_as_int("limit", min_value=1, max_value=200, default=50)
    offset = req.get_param_as_int("offset", min_value=0, max_value=MAX_OFFSET, default=0)
    return limit, offset


def timestamp_param(req: falcon.Request, name: str) -> datetime | None:
    """An optional RFC 3339 timestamp parameter (UTC if it names no offset), else 400."""
    value = req.get_param(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise falcon.HTTPInvalidParam("an RFC 3339 timestamp", name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
