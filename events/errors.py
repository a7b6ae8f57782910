"""Domain errors: raised by aggregates and handlers, mapped to HTTP once in `api/errors.py`."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A rule of the domain refused a command; nothing was written."""

    code = "CONFLICT"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "NOT_FOUND"


class Conflict(DomainError):
    code = "CONFLICT"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class Unauthorized(DomainError):
    code = "UNAUTHORIZED"


class InsufficientCredits(DomainError):
    code = "INSUFFICIENT_CREDITS"


class ExecutionFinished(DomainError):
    code = "EXECUTION_FINISHED"


class InvalidInput(DomainError):
    """A value passed the request model but breaks a domain rule (e.g. an input schema)."""

    code = "VALIDATION_ERROR"
