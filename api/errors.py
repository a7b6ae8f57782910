"""Every error, from every endpoint, in one envelope; mapped once with `add_error_handler`.

`{"error": {"code", "message", "details", "request_id"}}`: domain errors by their `code`,
falcon's HTTP errors (404 unknown route, 405, bad query parameters) by status, pydantic's
validation errors as 422 with `details.fields`, a database or Redis outage as 503, and
anything else as a 500 without a stack trace.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import falcon
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError, RecordConflictError
from pydantic import ValidationError

from events.errors import DomainError

log = structlog.get_logger()

STATUS_OF_CODE = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "INVALID_CREDENTIALS": 401,
    "INSUFFICIENT_CREDITS": 402,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "IDEMPOTENCY_KEY_REUSED": 409,
    "EXECUTION_FINISHED": 409,
    "KEY_DELETED": 410,  # a shredded secret is gone for good
    "VALIDATION_ERROR": 422,
}
CODE_OF_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    402: "INSUFFICIENT_CREDITS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "N8N_ERROR",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


class ApiError(Exception):
    """An HTTP answer decided by the API layer itself (502, 504, 400 on a header, ...)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, dict(headers or {})


def envelope(
    req: falcon.Request,
    resp: falcon.Response,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> None:
    resp.status = status
    request_id = getattr(req.context, "request_id", None)
    resp.media = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": request_id,
        }
    }


def _api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: Any) -> None:
    envelope(req, resp, ex.status, ex.code, ex.message, ex.details)
    for name, value in ex.headers.items():
        resp.set_header(name, value)


def _domain_error(req: falcon.Request, resp: falcon.Response, ex: DomainError, params: Any) -> None:
    details = dict(ex.details)
    code = details.pop("code", None) or ex.code
    if code == "VALIDATION_ERROR" and "fields" not in details:
        details["fields"] = [{"field": details.pop("field", "body"), "message": ex.message}]
    if code in ("UNAUTHORIZED", "INVALID_CREDENTIALS"):
        resp.set_header("WWW-Authenticate", "Bearer")
    envelope(req, resp, STATUS_OF_CODE.get(code, 409), code, ex.message, details)


def validation_fields(ex: ValidationError) -> list[dict[str, str]]:
    fields = []
    for error in ex.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        fields.append({"field": field, "message": error["msg"].removeprefix("Value error, ")})
    return fields


def _validation_error(
    req: falcon.Request, resp: falcon.Response, ex: ValidationError, params: Any
) -> None:
    fields = validation_fields(ex)
    message = "request body failed validation: " + "; ".join(
        f"{f['field']}: {f['message']}" for f in fields[:5]
    )
    envelope(req, resp, 422, "VALIDATION_ERROR", message, {"fields": fields})


def _http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: Any
) -> None:
    status = ex.status_code
    code = CODE_OF_STATUS.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    message = ex.description or code.replace("_", " ").lower()
    if status == 405:
        message = f"{req.method} is not allowed here"
    if ex.headers:
        resp.set_headers(ex.headers)
    envelope(req, resp, status, code, message)


def _unavailable(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    log.warning("http.unavailable", error=type(ex).__name__, message=str(ex)[:200])
    resp.set_header("Retry-After", "1")
    message = "a backing service is unavailable; retry later"
    envelope(req, resp, 503, "SERVICE_UNAVAILABLE", message)


def _sqlite_error(
    req: falcon.Request, resp: falcon.Response, ex: sqlite3.OperationalError, params: Any
) -> None:
    text = str(ex)
    if "locked" in text or "unable to open" in text or "disk" in text:
        return _unavailable(req, resp, ex, params)
    return _internal(req, resp, ex, params)


def _integrity_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any
) -> None:
    envelope(req, resp, 409, "CONFLICT", "a concurrent change won; retry the request")


def _internal(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    log.exception("http.unhandled_error", error=type(ex).__name__)
    envelope(req, resp, 500, "INTERNAL_ERROR", "internal error")


def _unavailable_types() -> list[type[Exception]]:
    types: list[type[Exception]] = [OperationalError, InterfaceError]
    try:
        import psycopg

        types += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        import redis.exceptions

        types += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return types


def install(app: falcon.App) -> None:
    """Register every handler once; falcon picks the most specific one by the error's MRO."""
    app.add_error_handler(Exception, _internal)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(DomainError, _domain_error)
    app.add_error_handler(ApiError, _api_error)
    app.add_error_handler(ValidationError, _validation_error)
    app.add_error_handler(RecordConflictError, _integrity_error)  # IntegrityError too
    app.add_error_handler(sqlite3.OperationalError, _sqlite_error)
    for kind in _unavailable_types():
        app.add_error_handler(kind, _unavailable)
