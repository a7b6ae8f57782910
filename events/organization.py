"""A tenant: members with roles, API keys (hashes only) and an encrypted client secret."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from events.errors import Conflict, NotFound

ROLES = ("owner", "admin", "member", "auditor")
PLANS = ("starter", "professional", "team", "enterprise")
OPENING_GRANT = {"starter": 100, "professional": 1000, "team": 5000, "enterprise": 0}
DEFAULT_SETTINGS: dict[str, Any] = {
    "require_signed_requests": False,
    "low_balance_threshold": 10,
    "engagement_threshold": None,
    "webhook_url": None,
}


class Organization(Aggregate):
    @event("Created")
    def __init__(
        self,
        name: str,
        tenant_id: str,
        plan_type: str,
        owner_id: UUID,
        client_secret: dict[str, str],
    ) -> None:
        self.name = name
        self.tenant_id = tenant_id
        self.plan_type = plan_type
        self.is_active = True
        self.settings: dict[str, Any] = dict(DEFAULT_SETTINGS)
        self.members: dict[str, str] = {str(owner_id): "owner"}
        self.api_keys: dict[str, dict[str, Any]] = {}
        self.client_secret = client_secret  # sealed by events.vault, never clear text

    def role_of(self, user_id: UUID) -> str | None:
        return self.members.get(str(user_id))

    @event("Updated")
    def update(self, changes: dict[str, Any]) -> None:
        for name in ("name", "plan_type"):
            if name in changes:
                setattr(self, name, changes[name])
        self.settings = {**self.settings, **changes.get("settings", {})}

    def add_member(self, user_id: UUID, role: str) -> None:
        if str(user_id) in self.members:
            raise Conflict("user is already a member")
        self._member_added(user_id=user_id, role=role)

    @event("MemberAdded")
    def _member_added(self, user_id: UUID, role: str) -> None:
        self.members[str(user_id)] = role

    @event("ApiKeyIssued")
    def issue_api_key(self, key_id: UUID, prefix: str, key_hash: str) -> None:
        self.api_keys[str(key_id)] = {"prefix": prefix, "key_hash": key_hash, "revoked": False}

    def revoke_api_key(self, key_id: UUID) -> None:
        key = self.api_keys.get(str(key_id))
        if key is None or key["revoked"]:
            raise NotFound("API key not found")
        self._api_key_revoked(key_id=key_id)

    @event("ApiKeyRevoked")
    def _api_key_revoked(self, key_id: UUID) -> None:
        self.api_keys[str(key_id)]["revoked"] = True

    @event("SecretRotated")
    def rotate_secret(self, client_secret: dict[str, str]) -> None:
        self.client_secret = client_secret
