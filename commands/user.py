"""Registering users, checking passwords, and refresh tokens that work once."""

from __future__ import annotations

import time
from uuid import UUID, uuid4

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from eventsourcing.persistence import IntegrityError, RecordConflictError
from pydantic import EmailStr, Field

from commands.base import Command, new_token, sha256_hex
from events.application import Flowledger
from events.errors import Conflict, Unauthorized
from events.ids import index_id
from events.index import Index
from events.user import RefreshToken, User

hasher = PasswordHasher()


class RegisterUser(Command):
    email: EmailStr
    password: str = Field(min_length=10, max_length=1024)
    full_name: str = Field(min_length=1, max_length=200)


def register_user(app: Flowledger, cmd: RegisterUser) -> User:
    email = cmd.email.lower()
    if app.claim("email", email):
        raise Conflict("a user with this email exists")
    user = User(email=email, full_name=cmd.full_name, password_hash=hasher.hash(cmd.password))
    claim = Index(kind="email", key=email, ref=user.id)
    try:
        app.save(user, claim)
    except IntegrityError:  # a concurrent registration of the same email won
        raise Conflict("a user with this email exists") from None
    return user


def user_by_email(app: Flowledger, email: str) -> User | None:
    claim = app.claim("email", email.lower())
    return app.find(claim.ref, User) if claim else None


def check_password(app: Flowledger, email: str, password: str) -> User:
    """The user whose password this is, or Unauthorized (same answer for unknown emails)."""
    user = user_by_email(app, email)
    try:
        if user is None:
            hasher.hash(password)  # spend the same time as a real check
            raise VerificationError
        hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("invalid email or password", code="INVALID_CREDENTIALS") from None
    if not user.is_active:
        raise Unauthorized("user is not active")
    return user


def issue_refresh_token(app: Flowledger, user_id: UUID) -> str:
    token = new_token("rt_")
    app.save(_refresh_token(app, token, user_id, uuid4()))
    return token


def _refresh_token(app: Flowledger, token: str, user_id: UUID, family_id: UUID) -> RefreshToken:
    return RefreshToken(
        token_hash=sha256_hex(token),
        user_id=user_id,
        family_id=family_id,
        expires_at=time.time() + app.settings.refresh_ttl_seconds,
    )


def rotate_refresh_token(app: Flowledger, token: str) -> tuple[UUID, str]:
    """Spend `token` and issue its successor; a second use fails (its save conflicts)."""
    record = app.find(index_id("refresh", sha256_hex(token)), RefreshToken)
    if record is None or record.used or record.expires_at < time.time():
        raise Unauthorized("refresh token is invalid or expired")
    record.use()
    successor = new_token("rt_")
    try:
        app.save(record, _refresh_token(app, successor, record.user_id, record.family_id))
    except RecordConflictError:
        raise Unauthorized("refresh token is invalid or expired") from None
    return record.user_id, successor


def revoke_refresh_token(app: Flowledger, token: str) -> None:
    record = app.find(index_id("refresh", sha256_hex(token)), RefreshToken)
    if record is not None and not record.used:
        record.revoke()
        app.save(record)
