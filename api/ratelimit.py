"""Rate limits: per organization by plan, per client IP without one, per email for logins.

Fixed one-minute windows counted in Redis (`INCRBY` + `EXPIRE` in one script call, shared by
every API process) or, in the embedded mode, in this process. Every limited answer carries
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix seconds);
over the limit → 429 `RATE_LIMIT_EXCEEDED` with `Retry-After`.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

import falcon

from api.errors import ApiError

if TYPE_CHECKING:
    from api.app import Deps

PLAN_LIMITS = {"starter": 60, "professional": 300, "team": 600, "enterprise": 6000}
WINDOW = 60
FAILED_LOGINS, FAILED_LOGIN_WINDOW = 10, 15 * 60
#: Add to a window's count; a new window's key gets its expiry. One round trip per request
#: (a MULTI/INCRBY/EXPIRE/EXEC pipeline was four commands).
_HIT = """
local hits = redis.call('INCRBY', KEYS[1], ARGV[1])
if hits == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return hits
"""


class Counter:
    """Hits per key and fixed window: Redis when configured, else a dict under a lock."""

    def __init__(self, redis: Any = None, namespace: str = "flowledger") -> None:
        self.redis = redis
        self.namespace = namespace  # FLOWLEDGER_BROKER_NAMESPACE: stacks sharing a Redis apart
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._hit = redis.register_script(_HIT) if redis is not None else None

    def hit(self, key: str, window: int, amount: int = 1) -> tuple[int, int]:
        """Add `amount` hits; returns (hits in this window, unix time the window resets)."""
        index = int(time.time() // window)
        name, reset = f"{self.namespace}:rl:{key}:{index}", (index + 1) * window
        if self._hit is not None:
            return int(self._hit(keys=[name], args=[amount, window + 1])), reset
        with self._lock:
            if len(self._counts) > 50_000:
                suffix = f":{index}"
                self._counts = {k: v for k, v in self._counts.items() if k.endswith(suffix)}
            self._counts[name] = self._counts.get(name, 0) + amount
            return self._counts[name], reset


class RateLimit:
    def __init__(self, deps: Deps) -> None:
        self.counter, self.settings = deps.limits, deps.settings

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        need = getattr(resource, "auth", {}).get(req.method) if resource is not None else None
        if need is None or need == "internal":
            return
        principal = getattr(req.context, "principal", None)
        if principal is not None and principal.org is not None:
            key, limit = f"org:{principal.org.id}", PLAN_LIMITS.get(principal.org.plan_type, 60)
        else:
            key, limit = f"ip:{req.remote_addr}", self.settings.ip_rate_limit
        limit = max(1, int(limit * self.settings.rate_limit_scale))
        hits, reset = self.counter.hit(key, WINDOW)
        resp.set_header("X-RateLimit-Limit", str(limit))
        resp.set_header("X-RateLimit-Remaining", str(max(0, limit - hits)))
        resp.set_header("X-RateLimit-Reset", str(reset))
        if hits > limit:
            raise too_many(reset, "rate limit exceeded", limit)


def too_many(reset: int, message: str, limit: int) -> ApiError:
    """429 with `Retry-After` and the `X-RateLimit-*` headers of the limit that was hit."""
    retry_after = max(1, math.ceil(reset - time.time()))
    headers = {
        "Retry-After": str(retry_after),
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    return ApiError(429, "RATE_LIMIT_EXCEEDED", message, headers=headers, retry_after=retry_after)


def check_login_allowed(deps: Deps, email: str) -> None:
    """10 failed logins per email per 15 minutes (not scaled); raises 429 past that.

    The 429 carries the email's limit in its `X-RateLimit-*` headers (not the IP's)."""
    hits, reset = deps.limits.hit(f"login:{email.lower()}", FAILED_LOGIN_WINDOW, amount=0)
    if hits >= FAILED_LOGINS:
        message = "too many failed logins for this email; try again later"
        raise too_many(reset, message, FAILED_LOGINS)


def record_failed_login(deps: Deps, email: str) -> None:
    deps.limits.hit(f"login:{email.lower()}", FAILED_LOGIN_WINDOW)
