"""Small functions that shape aggregates into the contract's JSON answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from events.credit_account import CreditAccount
from events.execution import Execution
from events.organization import Organization
from events.user import User
from events.workflow import Workflow

CREDENTIALS_MESSAGE = "Save these credentials securely - they won't be shown again!"


def ts(value: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds and `Z`: 2026-01-20T10:00:00.123Z."""
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now() -> str:
    return ts(datetime.now(UTC)) or ""


def page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def user(u: User) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "email": u.email,
        "full_name": u.full_name,
        "is_active": u.is_active,
        "created_at": ts(u.created_on),
    }


def me(u: User, orgs: list[Organization]) -> dict[str, Any]:
    memberships = [
        {"id": str(o.id), "tenant_id": o.tenant_id, "role": o.role_of(u.id)} for o in orgs
    ]
    return {**user(u), "organizations": memberships}


def tokens(access_token: str, refresh_token: str, expires_in: int, u: User) -> dict[str, Any]:
    return {
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "user": user(u),
    }


def organization(org: Organization, account: CreditAccount) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "tenant_id": org.tenant_id,
        "credits": account.balance,
        "plan_type": org.plan_type,
        "is_active": org.is_active,
        "settings": dict(org.settings),
        "created_at": ts(org.created_on),
    }


def organization_item(
    org: Organization, account: CreditAccount, role: str | None
) -> dict[str, Any]:
    return {**organization(org, account), "role": role}


def created_organization(
    org: Organization, account: CreditAccount, api_key: str, secret: str
) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "tenant_id": org.tenant_id,
        "plan_type": org.plan_type,
        "credits": account.balance,
        "api_key": api_key,
        "client_secret": secret,
        "message": CREDENTIALS_MESSAGE,
    }


def balance(account: CreditAccount, org: Organization) -> dict[str, Any]:
    return {
        "balance": account.balance,
        "currency": "credits",
        "low_balance_threshold": org.settings.get("low_balance_threshold"),
        "updated_at": ts(account.modified_on),
    }


def workflow(wf: Workflow) -> dict[str, Any]:
    """The workflow from its aggregate (the read model adds execution counts)."""
    d = wf.definition
    return {
        "id": str(wf.id),
        **{k: d.get(k) for k in ("name", "description", "project_id", "n8n_connection_id")},
        **{k: d.get(k) for k in ("n8n_workflow_id", "n8n_webhook_path", "webhook_url")},
        "response_mode": d.get("response_mode", "sync"),
        "is_active": wf.is_active,
        "credits_per_execution": d.get("credits_per_execution", 1),
        "timeout_seconds": d.get("timeout_seconds", 300),
        "retry": d.get("retry"),
        "input_schema": d.get("input_schema"),
        "trigger": d.get("trigger", {"type": "manual"}),
        "tags": d.get("tags", []),
        "category": d.get("category"),
        "trigger_url": d.get("trigger_url"),
        "execution_count": 0,
        "last_executed_at": None,
        "created_at": ts(wf.created_on),
        "updated_at": ts(wf.modified_on),
    }


def execution(ex: Execution) -> dict[str, Any]:
    """The execution from its aggregate (the read model adds its log lines)."""
    return {
        "id": str(ex.id),
        "workflow_id": str(ex.workflow_id),
        "status": ex.status,
        "input": ex.input,
        "metadata": ex.metadata,
        "output": ex.output,
        "error": ex.error,
        "credits_used": ex.debited - ex.refund_due,
        "attempts": ex.attempts,
        "retry_of": str(ex.retry_of) if ex.retry_of else None,
        "trigger": ex.trigger,
        "queued_at": ts(ex.created_on),
        "started_at": ts(ex.started_at),
        "finished_at": ts(ex.finished_at),
        "duration_ms": ex.duration_ms,
        "logs": [],
    }


def queued(ex: Execution) -> dict[str, Any]:
    return {"execution_id": str(ex.id), "status": ex.status, "queued_at": ts(ex.created_on)}


def completed(ex: Execution, credits_remaining: int) -> dict[str, Any]:
    return {
        "success": True,
        "execution_id": str(ex.id),
        "status": ex.status,
        "data": ex.output,
        "credits_used": ex.debited - ex.refund_due,
        "credits_remaining": credits_remaining,
        "execution_time_ms": ex.duration_ms,
    }
