"""`/auth`: register, login (JWT + cookie), refresh (a token works once), logout, me."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

import falcon
from pydantic import BaseModel, ConfigDict, Field

from api import shapes
from api.auth import cookie_is_secure, issue_access_token
from api.middleware import body
from api.ratelimit import check_login_allowed, record_failed_login
from commands.user import (
    RegisterUser,
    check_password,
    issue_refresh_token,
    register_user,
    revoke_refresh_token,
    rotate_refresh_token,
)
from events.errors import Unauthorized
from events.organization import Organization
from events.user import User

if TYPE_CHECKING:
    from api.app import Deps

COOKIE = "auth_token"


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=512)


class Logout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str | None = Field(None, max_length=512)


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def answer_with_tokens(self, resp: falcon.Response, user: User, refresh_token: str) -> None:
        settings = self.deps.settings
        access = issue_access_token(settings, user.id)
        self.set_cookie(resp, access, settings.jwt_ttl_seconds)
        resp.media = shapes.tokens(access, refresh_token, settings.jwt_ttl_seconds, user)

    def set_cookie(self, resp: falcon.Response, value: str, max_age: int) -> None:
        """httpOnly, SameSite=Strict, Secure unless the public URL is on localhost;
        `max_age=0` expires it."""
        secure = cookie_is_secure(self.deps.settings)
        expires = None if max_age else datetime(1970, 1, 1, tzinfo=UTC)
        resp.set_cookie(COOKIE, value, max_age=max_age or None, expires=expires, path="/",
                        secure=secure, http_only=True, same_site="Strict")  # fmt: skip


class Register(Resource):
    auth = {"POST": "public"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = register_user(self.deps.app, body(req, RegisterUser))
        resp.status = falcon.HTTP_201
        resp.media = shapes.user(user)


class LoginResource(Resource):
    auth = {"POST": "public"}
    idempotent = False  # tokens are never stored for replay

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        cmd = body(req, Login)
        check_login_allowed(self.deps, cmd.email)
        try:
            user = check_password(self.deps.app, cmd.email, cmd.password)
        except Unauthorized:
            record_failed_login(self.deps, cmd.email)
            raise
        self.answer_with_tokens(resp, user, issue_refresh_token(self.deps.app, user.id))


class Refresh(Resource):
    auth = {"POST": "public"}
    idempotent = False

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user_id, successor = rotate_refresh_token(
            self.deps.app, body(req, RefreshToken).refresh_token
        )
        user = self.deps.app.load(user_id, User, "user")
        self.answer_with_tokens(resp, user, successor)


class LogoutResource(Resource):
    auth = {"POST": "user"}
    idempotent = False

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        token = body(req, Logout).refresh_token
        if token:
            revoke_refresh_token(self.deps.app, token)
        self.set_cookie(resp, "", 0)
        resp.status = falcon.HTTP_204


class Me(Resource):
    auth = {"GET": "user"}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = req.context.principal.user
        orgs = [self.deps.app.find(UUID(org_id), Organization) for org_id in user.memberships]
        resp.media = shapes.me(user, [org for org in orgs if org is not None])


def add_routes(app: falcon.App, deps: Deps, prefix: str) -> None:
    app.add_route(f"{prefix}/auth/register", Register(deps))
    app.add_route(f"{prefix}/auth/login", LoginResource(deps))
    app.add_route(f"{prefix}/auth/refresh", Refresh(deps))
    app.add_route(f"{prefix}/auth/logout", LogoutResource(deps))
    app.add_route(f"{prefix}/auth/me", Me(deps))
