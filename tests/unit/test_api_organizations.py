"""`/organizations`: tenants, members, API keys, the client secret, usage and grants."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_api_harness import OPERATOR, Harness, assert_error, signed


def _path(org: dict[str, Any], rest: str = "") -> str:
    return f"/api/v1/organizations/{org['id']}{rest}"


# -- create and read --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "credits"),
    [("starter", 100), ("professional", 1000), ("team", 5000), ("enterprise", 0)],
)
def test_creating_an_organization_grants_the_plans_opening_credits(
    api: Harness, plan: str, credits: int
) -> None:
    token = api.user("founder@example.com")
    created = api.organization(token, "acme", plan_type=plan)
    assert set(created) == {"id", "name", "tenant_id", "plan_type", "credits", "api_key",
                            "client_secret", "message"}  # fmt: skip
    assert created["credits"] == credits and created["plan_type"] == plan
    assert created["api_key"].startswith("fl_live_") and created["client_secret"]
    me = api.call("GET", "/api/v1/auth/me", token).json
    assert me["organizations"] == [{"id": created["id"], "tenant_id": "acme", "role": "owner"}]


def test_a_taken_tenant_id_is_409_and_writes_nothing(api: Harness, acme: dict[str, Any]) -> None:
    other = api.user("other@example.com")
    body = {"name": "Copy", "tenant_id": "acme", "plan_type": "starter"}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/organizations", other, json=body)
    assert_error(result, 409, "CONFLICT")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "A", "tenant_id": "Bad_Tenant"},
        {"name": "A", "tenant_id": "-starts-with-dash"},
        {"name": "A", "tenant_id": "ok-tenant", "plan_type": "platinum"},
        {"tenant_id": "ok-tenant"},
    ],
)
def test_organizations_are_validated(api: Harness, body: dict[str, Any]) -> None:
    token = api.user("founder@example.com")
    with api.nothing_written():
        result = api.call("POST", "/api/v1/organizations", token, json=body)
    assert_error(result, 422, "VALIDATION_ERROR")


def test_creating_an_organization_needs_a_user(api: Harness, acme: dict[str, Any]) -> None:
    body = {"name": "B", "tenant_id": "bee"}
    assert_error(api.call("POST", "/api/v1/organizations", json=body), 401, "UNAUTHORIZED")
    headers = {"X-API-Key": acme["api_key"]}
    result = api.call("POST", "/api/v1/organizations", json=body, headers=headers)
    assert_error(result, 403, "FORBIDDEN")


def test_lists_the_callers_organizations_with_role_and_credits(
    api: Harness, acme: dict[str, Any]
) -> None:
    api.member(acme["token"], acme, "member@example.com", "member")
    other = api.user("other@example.com")
    api.organization(other, "globex")
    member = api.login("member@example.com")
    result = api.call("GET", "/api/v1/organizations", member)
    assert result.status_code == 200 and result.json["total"] == 1
    [item] = result.json["items"]
    assert item["tenant_id"] == "acme" and item["role"] == "member" and item["credits"] == 100


def test_members_read_their_organization(api: Harness, acme: dict[str, Any]) -> None:
    member = api.member(acme["token"], acme, "member@example.com", "member")
    result = api.call("GET", _path(acme), member)
    assert result.status_code == 200
    assert set(result.json) == {"id", "name", "tenant_id", "credits", "plan_type", "is_active",
                                "settings", "created_at"}  # fmt: skip
    assert set(result.json["settings"]) == {"require_signed_requests", "low_balance_threshold",
                                            "engagement_threshold", "webhook_url"}  # fmt: skip


def test_another_organization_is_404_not_403(api: Harness, acme: dict[str, Any]) -> None:
    stranger = api.user("stranger@example.com")
    api.organization(stranger, "globex")
    assert_error(api.call("GET", _path(acme), stranger), 404, "NOT_FOUND")
    headers = {"X-API-Key": api.organization(api.user("x@example.com"), "initech")["api_key"]}
    assert_error(api.call("GET", _path(acme), headers=headers), 404, "NOT_FOUND")


def test_an_unknown_organization_is_404(api: Harness, acme: dict[str, Any]) -> None:
    path = "/api/v1/organizations/00000000-0000-4000-8000-000000000000"
    assert_error(api.call("GET", path, acme["token"]), 404, "NOT_FOUND")


def test_reading_an_organization_needs_credentials(api: Harness, acme: dict[str, Any]) -> None:
    assert_error(api.call("GET", _path(acme)), 401, "UNAUTHORIZED")


# -- change -----------------------------------------------------------------------------------


def test_admins_change_the_name_and_settings(api: Harness, acme: dict[str, Any]) -> None:
    admin = api.member(acme["token"], acme, "admin@example.com", "admin")
    body = {"name": "Acme Corp", "settings": {"low_balance_threshold": 25}}
    result = api.call("PATCH", _path(acme), admin, json=body)
    assert result.status_code == 200
    assert result.json["name"] == "Acme Corp"
    assert result.json["settings"]["low_balance_threshold"] == 25
    assert result.json["settings"]["require_signed_requests"] is False


def test_members_cannot_change_the_organization(api: Harness, acme: dict[str, Any]) -> None:
    member = api.member(acme["token"], acme, "member@example.com", "member")
    with api.nothing_written():
        result = api.call("PATCH", _path(acme), member, json={"name": "Mine"})
    assert_error(result, 403, "FORBIDDEN")


def test_only_operators_change_the_plan(api: Harness, acme: dict[str, Any]) -> None:
    with api.nothing_written():
        result = api.call("PATCH", _path(acme), acme["token"], json={"plan_type": "enterprise"})
    assert_error(result, 403, "FORBIDDEN")
    operator = api.member(acme["token"], acme, OPERATOR, "admin")
    result = api.call("PATCH", _path(acme), operator, json={"plan_type": "enterprise"})
    assert result.status_code == 200 and result.json["plan_type"] == "enterprise"


def test_patches_are_validated(api: Harness, acme: dict[str, Any]) -> None:
    for body in ({"settings": {"webhook_url": "ftp://x"}}, {"color": "red"}, {"name": ""}):
        with api.nothing_written():
            result = api.call("PATCH", _path(acme), acme["token"], json=body)
        assert_error(result, 422, "VALIDATION_ERROR")


# -- members ----------------------------------------------------------------------------------


def test_admins_add_members_by_email(api: Harness, acme: dict[str, Any]) -> None:
    api.register("new@example.com")
    body = {"email": "new@example.com", "role": "admin"}
    result = api.call("POST", _path(acme, "/members"), acme["token"], json=body)
    assert result.status_code == 201 and result.json["role"] == "admin"
    me = api.call("GET", "/api/v1/auth/me", api.login("new@example.com")).json
    assert me["organizations"][0]["role"] == "admin"


def test_adding_an_unknown_email_is_404(api: Harness, acme: dict[str, Any]) -> None:
    body = {"email": "ghost@example.com", "role": "member"}
    with api.nothing_written():
        result = api.call("POST", _path(acme, "/members"), acme["token"], json=body)
    assert_error(result, 404, "NOT_FOUND")


def test_adding_a_member_twice_is_409(api: Harness, acme: dict[str, Any]) -> None:
    api.member(acme["token"], acme, "member@example.com", "member")
    body = {"email": "member@example.com", "role": "admin"}
    with api.nothing_written():
        result = api.call("POST", _path(acme, "/members"), acme["token"], json=body)
    assert_error(result, 409, "CONFLICT")


def test_only_owners_add_owners_and_members_add_nobody(api: Harness, acme: dict[str, Any]) -> None:
    admin = api.member(acme["token"], acme, "admin@example.com", "admin")
    member = api.member(acme["token"], acme, "member@example.com", "member")
    api.register("new@example.com")
    path = _path(acme, "/members")
    with api.nothing_written():
        owner_body = {"email": "new@example.com", "role": "owner"}
        assert_error(api.call("POST", path, admin, json=owner_body), 403, "FORBIDDEN")
        member_body = {"email": "new@example.com", "role": "member"}
        assert_error(api.call("POST", path, member, json=member_body), 403, "FORBIDDEN")


def test_an_unknown_role_is_422(api: Harness, acme: dict[str, Any]) -> None:
    body = {"email": "owner@example.com", "role": "emperor"}
    result = api.call("POST", _path(acme, "/members"), acme["token"], json=body)
    assert_error(result, 422, "VALIDATION_ERROR")


# -- API keys and the client secret -----------------------------------------------------------


def test_admins_issue_and_revoke_api_keys(api: Harness, acme: dict[str, Any]) -> None:
    result = api.call("POST", _path(acme, "/api-keys"), acme["token"])
    assert result.status_code == 201
    assert result.json["api_key"].startswith(result.json["prefix"])
    key_path = _path(acme, f"/api-keys/{result.json['id']}")
    assert api.call("DELETE", key_path, acme["token"]).status_code == 204
    with api.nothing_written():
        assert_error(api.call("DELETE", key_path, acme["token"]), 404, "NOT_FOUND")


def test_members_cannot_issue_api_keys(api: Harness, acme: dict[str, Any]) -> None:
    member = api.member(acme["token"], acme, "member@example.com", "member")
    with api.nothing_written():
        assert_error(api.call("POST", _path(acme, "/api-keys"), member), 403, "FORBIDDEN")


def test_owners_rotate_the_client_secret(api: Harness, acme: dict[str, Any]) -> None:
    result = api.call("POST", _path(acme, "/rotate-secret"), acme["token"])
    assert result.status_code == 200
    new_secret = result.json["client_secret"]
    assert new_secret != acme["client_secret"]
    headers = {"X-API-Key": acme["api_key"]}
    old = api.call("GET", "/api/v1/credits/balance",
                   headers={**headers, **signed(acme["client_secret"], b"")})  # fmt: skip
    assert_error(old, 401, "UNAUTHORIZED")
    new = api.call("GET", "/api/v1/credits/balance", headers={**headers, **signed(new_secret, b"")})
    assert new.status_code == 200


def test_admins_cannot_rotate_the_secret(api: Harness, acme: dict[str, Any]) -> None:
    admin = api.member(acme["token"], acme, "admin@example.com", "admin")
    with api.nothing_written():
        assert_error(api.call("POST", _path(acme, "/rotate-secret"), admin), 403, "FORBIDDEN")


# -- usage and operator grants ----------------------------------------------------------------


def test_usage_lists_executions_with_the_remaining_credits(
    api: Harness, acme: dict[str, Any]
) -> None:
    workflow = api.workflow(acme["token"], name="Billing")
    path = f"/api/v1/workflows/{workflow['id']}/execute"
    api.call("POST", path, acme["token"], json={"input": {}})
    api.settle()
    result = api.call("GET", _path(acme, "/usage"), acme["token"])
    assert result.status_code == 200
    assert result.json["total"] == 1 and result.json["credits_remaining"] == 100
    [log] = result.json["usage_logs"]
    assert log["workflow_name"] == "Billing" and log["status"] == "queued"
    assert set(log) >= {"id", "execution_id", "workflow_id", "credits_used", "execution_time_ms",
                        "created_at", "completed_at"}  # fmt: skip
    assert_error(
        api.call("GET", _path(acme, "/usage?status=nope"), acme["token"]), 400, "BAD_REQUEST"
    )


def test_operators_grant_credits_once_per_invoice(api: Harness, acme: dict[str, Any]) -> None:
    operator = api.user(OPERATOR)
    body = {"amount": 500, "invoice_id": "inv-1", "description": "top-up"}
    first = api.call("POST", _path(acme, "/credits"), operator, json=body)
    assert first.json == {"success": True, "new_balance": 600, "amount_added": 500}
    again = api.call("POST", _path(acme, "/credits"), operator, json=body)
    assert again.status_code == 200 and again.json["new_balance"] == 600
    assert again.json["amount_added"] == 0
    ledger = api.call("GET", "/api/v1/credits/transactions", acme["token"]).json
    assert [t["amount"] for t in ledger["items"]] == [500, 100]


def test_granting_credits_is_for_operators_only(api: Harness, acme: dict[str, Any]) -> None:
    with api.nothing_written():
        result = api.call("POST", _path(acme, "/credits"), acme["token"], json={"amount": 5})
    assert_error(result, 403, "FORBIDDEN")


@pytest.mark.parametrize("amount", [0, -5, 10**9 + 1])
def test_grants_are_validated(api: Harness, acme: dict[str, Any], amount: int) -> None:
    operator = api.user(OPERATOR)
    with api.nothing_written():
        result = api.call("POST", _path(acme, "/credits"), operator, json={"amount": amount})
    assert_error(result, 422, "VALIDATION_ERROR")


def test_granting_to_an_unknown_organization_is_404(api: Harness) -> None:
    operator = api.user(OPERATOR)
    path = "/api/v1/organizations/00000000-0000-4000-8000-000000000000/credits"
    assert_error(api.call("POST", path, operator, json={"amount": 5}), 404, "NOT_FOUND")
