"""What every command and handler shares."""

from __future__ import annotations

import functools
import hashlib
import hmac
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import ParamSpec, TypeVar
from uuid import UUID

import structlog
from eventsourcing.persistence import RecordConflictError
from pydantic import BaseModel, ConfigDict

P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger()


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def retry_on_conflict(attempts: int = 20) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Re-run a handler whose save lost an optimistic-concurrency race.

    The handler reloads the aggregates and re-checks its rules each time, so two concurrent
    debits can never spend the same credit: the loser sees the new balance. Between attempts
    it sleeps a random, growing while (full jitter, capped at 50 ms): without it two processes
    hammering one aggregate can keep colliding until one runs out of attempts.
    """

    def decorate(handler: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(handler)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(1, attempts + 1):
                try:
                    return handler(*args, **kwargs)
                except RecordConflictError:
                    if attempt == attempts:
                        raise
                    log.debug("command.conflict_retry", handler=handler.__name__, attempt=attempt)
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            raise AssertionError("unreachable")

        return wrapper

    return decorate


_STRIPES = [threading.Lock() for _ in range(64)]


def serialised(key: UUID) -> threading.Lock:
    """A process-local lock for `key` (striped): handlers that change one hot aggregate
    (an organization's credit account) take turns here instead of racing to conflicting
    saves; other processes still race, and `retry_on_conflict` settles those."""
    return _STRIPES[key.int % len(_STRIPES)]


@contextmanager
def serialised_all(keys: Iterable[UUID]) -> Iterator[None]:
    """`serialised` for several keys at once: each stripe taken once, in one global order
    (no deadlock between two threads taking overlapping sets)."""
    stripes = sorted({key.int % len(_STRIPES) for key in keys})
    with ExitStack() as held:
        for stripe in stripes:
            held.enter_context(_STRIPES[stripe])
        yield


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def callback_token(key: str, execution_id: UUID) -> str:
    """The per-execution token n8n uses to call back; derived, so it is never stored."""
    return hmac.new(key.encode(), f"callback:{execution_id}".encode(), hashlib.sha256).hexdigest()
