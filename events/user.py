"""A person who logs in; belongs to organizations through memberships."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.ids import index_id


class User(Aggregate):
    @event("Registered")
    def __init__(self, email: str, full_name: str, password_hash: str) -> None:
        self.email = email
        self.full_name = full_name
        self.password_hash = password_hash
        self.is_active = True
        self.memberships: dict[str, str] = {}  # organization id (str) -> tenant_id

    @event("JoinedOrganization")
    def join(self, organization_id: UUID, tenant_id: str) -> None:
        self.memberships[str(organization_id)] = tenant_id

    @event("PasswordRehashed")
    def rehash_password(self, password_hash: str) -> None:
        self.password_hash = password_hash


class RefreshToken(Aggregate):
    """One refresh token, stored by the hash of its value; it works exactly once."""

    @staticmethod
    def create_id(token_hash: str, **_: Any) -> UUID:
        return index_id("refresh", token_hash)

    @event("Issued")
    def __init__(self, token_hash: str, user_id: UUID, family_id: UUID, expires_at: float) -> None:
        self.user_id = user_id
        self.family_id = family_id
        self.expires_at = expires_at
        self.used = False

    @event("Used")
    def use(self) -> None:
        self.used = True

    @event("Revoked")
    def revoke(self) -> None:
        self.used = True
