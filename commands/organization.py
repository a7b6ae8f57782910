"""Creating organizations and managing their members, API keys and client secret."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from commands.base import Command, new_token, retry_on_conflict, sha256_hex
from commands.user import user_by_email
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.errors import Conflict, NotFound
from events.index import Index
from events.organization import OPENING_GRANT, Organization
from events.user import User

Plan = Literal["starter", "professional", "team", "enterprise"]
Role = Literal["owner", "admin", "member", "auditor"]
API_KEY_PREFIX = "fl_live_"


class OrganizationSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    require_signed_requests: bool | None = None
    low_balance_threshold: int | None = Field(None, ge=0, le=10**9)
    engagement_threshold: float | None = Field(None, ge=0)
    webhook_url: str | None = Field(None, max_length=2048, pattern=r"^https?://")


class CreateOrganization(Command):
    name: str = Field(min_length=1, max_length=200)
    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    plan_type: Plan = "starter"


class Created(BaseModel):
    """What is shown once: the first API key and the client secret in clear."""

    organization: Any
    api_key: str
    client_secret: str


def create_organization(app: Flowledger, owner_id: UUID, cmd: CreateOrganization) -> Created:
    owner = app.load(owner_id, User, "user")
    if app.claim("tenant", cmd.tenant_id):
        raise Conflict("tenant_id is taken", field="tenant_id")
    client_secret = new_token("cs_")
    org = Organization(
        name=cmd.name,
        tenant_id=cmd.tenant_id,
        plan_type=cmd.plan_type,
        owner_id=owner_id,
        client_secret=app.vault.seal(client_secret),
    )
    _, api_key, key_claim = _new_api_key(org)
    account = CreditAccount(organization_id=org.id)
    if OPENING_GRANT[cmd.plan_type]:
        account.grant(OPENING_GRANT[cmd.plan_type], kind="grant", description="plan opening grant")
    owner.join(org.id, cmd.tenant_id)
    tenant_claim = Index(kind="tenant", key=cmd.tenant_id, ref=org.id)
    try:
        app.save(org, account, owner, tenant_claim, key_claim)
    except IntegrityError:
        raise Conflict("tenant_id is taken", field="tenant_id") from None
    return Created(organization=org, api_key=api_key, client_secret=client_secret)


def _new_api_key(org: Organization) -> tuple[UUID, str, Index]:
    key = new_token(API_KEY_PREFIX)
    key_id = uuid4()
    org.issue_api_key(
        key_id=key_id, prefix=key[: len(API_KEY_PREFIX) + 4], key_hash=sha256_hex(key)
    )
    return key_id, key, Index(kind="api_key", key=sha256_hex(key), ref=org.id)


def organization_by_tenant(app: Flowledger, tenant_id: str) -> Organization | None:
    claim = app.claim("tenant", tenant_id)
    return app.find(claim.ref, Organization) if claim else None


def organization_by_api_key(app: Flowledger, api_key: str) -> tuple[Organization, UUID] | None:
    """The organization and key id of a live key; None for unknown or revoked keys."""
    key_hash = sha256_hex(api_key)
    claim = app.claim("api_key", key_hash)
    # Read only (every request with an API key): the cached organization, not a copy; its
    # keys listed first, as another thread may bring it up to date meanwhile.
    org = app.cached(claim.ref, Organization) if claim else None
    if org is None:
        return None
    for key_id, key in list(org.api_keys.items()):
        if key["key_hash"] == key_hash and not key["revoked"]:
            return org, UUID(key_id)
    return None


class UpdateOrganization(Command):
    name: str | None = Field(None, min_length=1, max_length=200)
    plan_type: Plan | None = None
    settings: OrganizationSettings | None = None


@retry_on_conflict()
def update_organization(app: Flowledger, org_id: UUID, cmd: UpdateOrganization) -> Organization:
    org = app.load(org_id, Organization, "organization")
    changes = {k: v for k, v in cmd.model_dump(exclude_unset=True).items() if v is not None}
    if changes:
        org.update(changes)
        app.save(org)
    return org


class AddMember(Command):
    email: EmailStr
    role: Role = "member"


@retry_on_conflict()
def add_member(app: Flowledger, org_id: UUID, cmd: AddMember) -> tuple[Organization, User]:
    org = app.load(org_id, Organization, "organization")
    user = user_by_email(app, cmd.email)
    if user is None:
        raise NotFound("no user with this email", field="email")
    org.add_member(user.id, cmd.role)
    user.join(org.id, org.tenant_id)
    app.save(org, user)
    return org, user


@retry_on_conflict()
def issue_api_key(app: Flowledger, org_id: UUID) -> tuple[UUID, str, str]:
    org = app.load(org_id, Organization, "organization")
    key_id, key, claim = _new_api_key(org)
    app.save(org, claim)
    return key_id, key, org.api_keys[str(key_id)]["prefix"]


@retry_on_conflict()
def revoke_api_key(app: Flowledger, org_id: UUID, key_id: UUID) -> None:
    org = app.load(org_id, Organization, "organization")
    org.revoke_api_key(key_id)
    app.save(org)


@retry_on_conflict()
def rotate_secret(app: Flowledger, org_id: UUID) -> str:
    org = app.load(org_id, Organization, "organization")
    secret = new_token("cs_")
    org.rotate_secret(app.vault.seal(secret))
    app.save(org)
    return secret


def client_secret(app: Flowledger, org: Organization) -> str:
    return app.vault.open(org.client_secret)
