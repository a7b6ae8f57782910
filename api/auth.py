"""Who is calling, inside which organization, with which role.

Three ways in (Bearer JWT, the `auth_token` cookie, `X-API-Key` with an optional or
required HMAC signature), all resolving to a `Principal` on `req.context.principal`.
Resources declare what each method needs in a class attribute, e.g.
`auth = {"GET": "member", "POST": "admin"}`; the middleware enforces it before the responder.

Needs: `public` (nobody), `internal` (the resource checks n8n's tokens itself), `user` (a
logged-in user, no organization), `operator` (a platform operator), `member`, `admin`,
`owner` (a role in the organization; API keys count as members; auditors only read),
`audit` (owners, admins and auditors only: not members, not API keys).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from uuid import UUID, uuid4

import falcon
import jwt
import structlog

from api.errors import ApiError
from commands.organization import client_secret, organization_by_api_key, organization_by_tenant
from commands.user import user_by_email
from events.errors import Forbidden, NotFound, Unauthorized
from events.organization import Organization
from events.user import User
from flowledger.settings import Settings

if TYPE_CHECKING:
    from api.app import Deps

SIGNATURE_WINDOW = 300
RANK = {"auditor": 1, "member": 1, "api_key": 1, "admin": 2, "owner": 3}
READS = frozenset({"GET", "HEAD"})
# The need `audit` (the audit surface): owners, admins and auditors, reads only.
AUDIT_ROLES = frozenset({"owner", "admin", "auditor"})


@dataclass
class Principal:
    kind: str  # user | api_key
    user: User | None = None
    org: Organization | None = None
    role: str | None = None
    key_id: UUID | None = None
    is_operator: bool = False

    @property
    def org_id(self) -> UUID:
        assert self.org is not None, "an organization-scoped route"
        return self.org.id

    @property
    def tenant_id(self) -> str:
        assert self.org is not None, "an organization-scoped route"
        return self.org.tenant_id

    @property
    def user_id(self) -> UUID:
        assert self.user is not None, "a user-only route"
        return self.user.id

    @property
    def scope(self) -> str:
        """Where idempotency keys live: the organization, else the user."""
        if self.org is not None:
            return f"org:{self.org.id}"
        return f"user:{self.user.id}" if self.user else "public"


def allows(role: str | None, need: str, method: str) -> bool:
    if role is None:
        return False
    if need == "audit":
        return role in AUDIT_ROLES and method in READS
    if role == "auditor" and method not in READS:
        return False
    return RANK.get(role, 0) >= RANK.get(need, 99)


# -- tokens ---------------------------------------------------------------------------


def issue_access_token(settings: Settings, user_id: UUID, org_id: UUID | None = None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + settings.jwt_ttl_seconds,
        "jti": uuid4().hex,
    }
    if org_id is not None:
        claims["org_id"] = str(org_id)
    return jwt.encode(claims, settings.jwt_key, algorithm="HS256")


def cookie_is_secure(settings: Settings) -> bool:
    return urlparse(settings.public_url).hostname not in ("localhost", "127.0.0.1", "::1")


def decode_token(settings: Settings, token: str) -> dict[str, Any]:
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm == "HS256":
            key = settings.jwt_key
        elif algorithm == "RS256" and settings.jwt_public_key:
            key = settings.jwt_public_key.replace("\\n", "\n")
        else:
            raise Unauthorized("unsupported token algorithm")
        options: Any = {"require": ["sub", "exp"]}
        return jwt.decode(token, key, algorithms=[algorithm], options=options, leeway=5)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None


# -- replay protection ------------------------------------------------------------------


class NonceStore:
    """Signatures seen within the window: Redis `SET NX EX`, else an in-process TTL dict."""

    def __init__(self, redis: Any = None) -> None:
        self.redis = redis
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, nonce: str, ttl: int) -> bool:
        if self.redis is not None:
            return bool(self.redis.set(f"flowledger:nonce:{nonce}", 1, nx=True, ex=ttl))
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            if self._seen.get(nonce, 0) > now:
                return False
            self._seen[nonce] = now + ttl
            return True


def check_signature(deps: Deps, req: falcon.Request, org: Organization) -> None:
    """`X-Signature` = hex HMAC-SHA256(client_secret, X-Timestamp + raw body), seen once."""
    signature = req.get_header("X-Signature")
    if signature is None:
        if org.settings.get("require_signed_requests"):
            raise Unauthorized("this organization requires signed requests (X-Signature)")
        return
    stamp = req.get_header("X-Timestamp") or ""
    verify_signature(deps, org, stamp, signature, req.context.raw_body, "X-Timestamp")


def verify_signature(
    deps: Deps, org: Organization, stamp: str, signature: str, body: bytes, stamp_header: str
) -> None:
    """hex HMAC-SHA256(client_secret, timestamp + body) (optionally `sha256=`), within ±300 s
    of now and seen once: the scheme of signed API-key requests and of n8n's inbound calls."""
    if not stamp.isdigit():
        raise Unauthorized(f"{stamp_header} (unix seconds) is required with the signature")
    if abs(time.time() - int(stamp)) > SIGNATURE_WINDOW:
        raise Unauthorized(f"{stamp_header} is outside the allowed window of 300 seconds")
    secret = client_secret(deps.app, org).encode()
    expected = hmac.new(secret, stamp.encode() + body, hashlib.sha256).hexdigest()
    given = signature.strip().removeprefix("sha256=").lower()
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("invalid signature")
    if not deps.nonces.first_use(f"{org.id}:{given}", 2 * SIGNATURE_WINDOW):
        raise Unauthorized("this signed request was already used (replay)")


# -- the middleware -----------------------------------------------------------------------


class Authenticate:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        need = getattr(resource, "auth", {}).get(req.method) if resource is not None else None
        if need is None or need in ("public", "internal"):
            return
        principal = self.scoped(self.identify(req), need, req, params)
        req.context.principal = principal
        tenant = principal.org.tenant_id if principal.org else None
        structlog.contextvars.bind_contextvars(tenant_id=tenant, principal=principal.kind)

    def identify(self, req: falcon.Request) -> Principal:
        authorization = req.get_header("Authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("use Authorization: Bearer <token>")
            return self.from_token(token.strip(), req)
        api_key = req.get_header("X-API-Key")
        if api_key:
            return self.from_api_key(api_key, req)
        cookie = next(iter(req.get_cookie_values("auth_token") or []), None)
        if cookie:
            return self.from_token(cookie, req)
        raise Unauthorized("authentication required")

    def from_token(self, token: str, req: falcon.Request) -> Principal:
        claims = decode_token(self.deps.settings, token)
        user = self._user_of(claims)
        if user is None or not user.is_active:
            raise Unauthorized("unknown or inactive user")
        operator = user.email.lower() in self.deps.settings.operator_emails
        req.context.token_org_id = claims.get("org_id")
        return Principal(kind="user", user=user, is_operator=operator)

    def _user_of(self, claims: dict[str, Any]) -> User | None:
        try:  # read only: the cached user itself, not a copy
            user = self.deps.app.cached(UUID(str(claims["sub"])), User)
        except ValueError:
            user = None
        if user is None and isinstance(claims.get("email"), str):
            user = user_by_email(self.deps.app, claims["email"])
        return user

    def from_api_key(self, api_key: str, req: falcon.Request) -> Principal:
        found = organization_by_api_key(self.deps.app, api_key.strip())
        if found is None or not found[0].is_active:
            raise Unauthorized("invalid API key")
        org, key_id = found
        check_signature(self.deps, req, org)
        tenant = req.get_header("X-Tenant-ID")
        if tenant and tenant != org.tenant_id:
            raise Forbidden("this API key belongs to another organization")
        return Principal(kind="api_key", org=org, role="api_key", key_id=key_id)

    def scoped(
        self, who: Principal, need: str, req: falcon.Request, params: dict[str, Any]
    ) -> Principal:
        """Attach the organization and role, and check the role against `need`."""
        if need in ("user", "operator"):
            if who.user is None:
                raise Forbidden("this endpoint needs a user, not an API key")
            if need == "operator" and not who.is_operator:
                raise Forbidden("platform operators only")
            if "org_id" in params:
                who.org = self.deps.app.load(params["org_id"], Organization, "organization")
            return who
        if who.kind == "user":
            who.org = self.organization_of(who, req, params)
            who.role = who.org.role_of(who.user_id)
        elif "org_id" in params and params["org_id"] != who.org_id:
            raise NotFound("organization not found")
        if not allows(who.role, need, req.method):
            raise Forbidden(f"this action needs the {need} role")
        return who

    def organization_of(
        self, who: Principal, req: falcon.Request, params: dict[str, Any]
    ) -> Organization:
        app, user = self.deps.app, who.user
        assert user is not None
        # Read only (every request with a token): cached organizations, not copies.
        if "org_id" in params:
            org = app.cached(params["org_id"], Organization)
            if org is None or org.role_of(user.id) is None:
                raise NotFound("organization not found")
            return org
        claim, tenant = getattr(req.context, "token_org_id", None), req.get_header("X-Tenant-ID")
        if claim:
            org = app.cached(_uuid(claim), Organization)
        elif tenant:
            org = organization_by_tenant(app, tenant)
        elif len(user.memberships) == 1:
            org = app.cached(UUID(next(iter(user.memberships))), Organization)
        elif not user.memberships:
            raise Forbidden("you do not belong to any organization yet")
        else:
            raise ApiError(
                400, "BAD_REQUEST", "you belong to several organizations: send X-Tenant-ID"
            )
        if org is None or org.role_of(user.id) is None:
            raise Forbidden("you are not a member of this organization")
        if not org.is_active:
            raise Forbidden("this organization is not active")
        return org


def _uuid(value: Any) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise Unauthorized("invalid org_id claim") from None
