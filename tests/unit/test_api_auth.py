"""Authentication: register, login, refresh, logout, me; JWTs, the cookie, API keys with
HMAC signatures, and how the organization and the role are found."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.unit.test_api_harness import (
    OPERATOR,
    PASSWORD,
    Harness,
    assert_error,
    dumps,
    fast_passwords,
    signed,
)


def _login(api: Harness, email: str, password: str = PASSWORD) -> Any:
    return api.call("POST", "/api/v1/auth/login", json={"email": email, "password": password})


# -- register ---------------------------------------------------------------------------------


def test_registers_a_user(api: Harness) -> None:
    body = {"email": "New@Example.com", "password": PASSWORD, "full_name": "New User"}
    result = api.call("POST", "/api/v1/auth/register", json=body)
    assert result.status_code == 201
    assert set(result.json) == {"id", "email", "full_name", "is_active", "created_at"}
    assert result.json["email"] == "new@example.com" and result.json["is_active"] is True


def test_registering_an_existing_email_is_409_and_writes_nothing(api: Harness) -> None:
    api.register("taken@example.com")
    body = {"email": "TAKEN@example.com", "password": PASSWORD, "full_name": "Again"}
    with api.nothing_written():
        assert_error(api.call("POST", "/api/v1/auth/register", json=body), 409, "CONFLICT")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "password": "short", "full_name": "A"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD, "full_name": "A"}, "email"),
        ({"email": "a@example.com", "password": PASSWORD}, "full_name"),
    ],
)
def test_registration_validates_its_fields(api: Harness, body: dict[str, Any], field: str) -> None:
    with api.nothing_written():
        result = api.call("POST", "/api/v1/auth/register", json=body)
    fields = assert_error(result, 422, "VALIDATION_ERROR")["details"]["fields"]
    assert [f["field"] for f in fields] == [field]


# -- login, cookie, refresh, logout -----------------------------------------------------------


def test_login_answers_tokens_and_sets_a_strict_http_only_cookie(api: Harness) -> None:
    api.register("a@example.com")
    result = _login(api, "a@example.com")
    assert result.status_code == 200
    assert result.json["token_type"] == "bearer" and result.json["expires_in"] == 3600
    assert result.json["user"]["email"] == "a@example.com"
    claims = jwt.decode(result.json["access_token"], options={"verify_signature": False})
    assert claims["sub"] == result.json["user"]["id"] and claims["exp"] > time.time()
    cookie = result.cookies["auth_token"]
    assert cookie.value == result.json["access_token"]
    assert cookie.http_only and cookie.same_site == "Strict" and not cookie.secure  # localhost


def test_the_cookie_is_secure_off_localhost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path, public_url="https://api.example.com") as api:
        api.register("a@example.com")
        assert _login(api, "a@example.com").cookies["auth_token"].secure


@pytest.mark.parametrize(
    ("email", "password"), [("a@example.com", "wrong password"), ("nobody@example.com", PASSWORD)]
)
def test_bad_credentials_are_401(api: Harness, email: str, password: str) -> None:
    api.register("a@example.com")
    result = _login(api, email, password)
    assert result.status_code == 401
    assert result.json["error"]["code"] in ("UNAUTHORIZED", "INVALID_CREDENTIALS")


def test_login_without_a_password_is_422(api: Harness) -> None:
    result = api.call("POST", "/api/v1/auth/login", json={"email": "a@example.com"})
    assert_error(result, 422, "VALIDATION_ERROR")


def test_a_refresh_token_works_once(api: Harness) -> None:
    api.register("a@example.com")
    refresh_token = _login(api, "a@example.com").json["refresh_token"]
    first = api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert first.status_code == 200 and first.json["refresh_token"] != refresh_token
    assert first.json["access_token"]
    with api.nothing_written():
        again = api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert_error(again, 401, "UNAUTHORIZED")
    successor = {"refresh_token": first.json["refresh_token"]}
    assert api.call("POST", "/api/v1/auth/refresh", json=successor).status_code == 200


def test_an_unknown_refresh_token_is_401(api: Harness) -> None:
    result = api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": "rt_made_up"})
    assert_error(result, 401, "UNAUTHORIZED")


def test_logout_revokes_the_refresh_token_and_clears_the_cookie(api: Harness) -> None:
    api.register("a@example.com")
    tokens = _login(api, "a@example.com").json
    body = {"refresh_token": tokens["refresh_token"]}
    result = api.call("POST", "/api/v1/auth/logout", tokens["access_token"], json=body)
    assert result.status_code == 204
    cookie = result.cookies["auth_token"]
    assert cookie.value in ("", '""') and cookie.expires.timestamp() < time.time()
    assert cookie.http_only and cookie.same_site == "Strict"
    assert_error(api.call("POST", "/api/v1/auth/refresh", json=body), 401, "UNAUTHORIZED")


def test_logout_needs_a_user(api: Harness) -> None:
    assert_error(api.call("POST", "/api/v1/auth/logout", json={}), 401, "UNAUTHORIZED")


# -- who am I ---------------------------------------------------------------------------------


def test_me_lists_the_users_organizations_and_roles(api: Harness, acme: dict[str, Any]) -> None:
    result = api.call("GET", "/api/v1/auth/me", acme["token"])
    assert result.status_code == 200
    assert result.json["email"] == "owner@example.com"
    assert result.json["organizations"] == [
        {"id": acme["id"], "tenant_id": "acme", "role": "owner"}
    ]


def test_the_cookie_authenticates_like_the_bearer_token(api: Harness) -> None:
    token = api.user("a@example.com")
    result = api.call("GET", "/api/v1/auth/me", headers={"Cookie": f"auth_token={token}"})
    assert result.status_code == 200 and result.json["email"] == "a@example.com"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Cookie": "auth_token=garbage"},
    ],
)
def test_missing_or_invalid_credentials_are_401(api: Harness, headers: dict[str, str]) -> None:
    result = api.call("GET", "/api/v1/auth/me", headers=headers)
    assert_error(result, 401, "UNAUTHORIZED")
    assert result.headers["WWW-Authenticate"] == "Bearer"


def test_an_expired_token_is_401(api: Harness) -> None:
    user_id = api.register("a@example.com")["id"]
    claims = {"sub": user_id, "exp": int(time.time()) - 60}
    token = jwt.encode(claims, api.deps.settings.jwt_key, algorithm="HS256")
    assert_error(api.call("GET", "/api/v1/auth/me", token), 401, "UNAUTHORIZED")


def test_a_token_signed_with_another_key_is_401(api: Harness) -> None:
    user_id = api.register("a@example.com")["id"]
    token = jwt.encode({"sub": user_id, "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    assert_error(api.call("GET", "/api/v1/auth/me", token), 401, "UNAUTHORIZED")


def test_rs256_tokens_of_an_identity_provider_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with Harness.start(tmp_path, jwt_public_key=public.decode()) as api:
        api.register("clerk@example.com")
        claims = {"sub": "user_2abc", "email": "clerk@example.com", "exp": int(time.time()) + 60}
        token = jwt.encode(claims, key, algorithm="RS256")
        result = api.call("GET", "/api/v1/auth/me", token)
        assert result.status_code == 200 and result.json["email"] == "clerk@example.com"
        forged = jwt.encode(claims, rsa.generate_private_key(65537, 2048), algorithm="RS256")
        assert_error(api.call("GET", "/api/v1/auth/me", forged), 401, "UNAUTHORIZED")


def test_rs256_tokens_are_refused_without_a_public_key(api: Harness) -> None:
    api.register("a@example.com")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"sub": "x", "email": "a@example.com", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, key, algorithm="RS256")
    assert_error(api.call("GET", "/api/v1/auth/me", token), 401, "UNAUTHORIZED")


# -- which organization -----------------------------------------------------------------------


def test_a_user_of_several_organizations_picks_one_with_x_tenant_id(api: Harness) -> None:
    token = api.user("a@example.com")
    api.organization(token, "first")
    api.organization(token, "second")
    assert_error(api.call("GET", "/api/v1/credits/balance", token), 400, "BAD_REQUEST")
    result = api.call("GET", "/api/v1/workflows", token, headers={"X-Tenant-ID": "second"})
    assert result.status_code == 200


def test_the_org_id_claim_chooses_the_organization(api: Harness) -> None:
    token = api.user("a@example.com")
    api.organization(token, "first")
    second = api.organization(token, "second")
    user_id = api.call("GET", "/api/v1/auth/me", token).json["id"]
    claims = {"sub": user_id, "org_id": second["id"], "exp": int(time.time()) + 60}
    scoped = jwt.encode(claims, api.deps.settings.jwt_key, algorithm="HS256")
    api.workflow(scoped, name="in second")
    listed = api.call("GET", "/api/v1/workflows", token, headers={"X-Tenant-ID": "second"})
    assert [w["name"] for w in listed.json["items"]] == ["in second"]


def test_a_tenant_the_user_does_not_belong_to_is_403(api: Harness, acme: dict[str, Any]) -> None:
    stranger = api.user("stranger@example.com")
    api.organization(stranger, "globex")
    result = api.call("GET", "/api/v1/workflows", stranger, headers={"X-Tenant-ID": "acme"})
    assert_error(result, 403, "FORBIDDEN")


def test_a_user_without_organizations_is_403_on_tenant_routes(api: Harness) -> None:
    token = api.user("lonely@example.com")
    assert_error(api.call("GET", "/api/v1/workflows", token), 403, "FORBIDDEN")


# -- roles ------------------------------------------------------------------------------------


def test_members_read_but_admins_write(api: Harness, acme: dict[str, Any]) -> None:
    member = api.member(acme["token"], acme, "member@example.com", "member")
    admin = api.member(acme["token"], acme, "admin@example.com", "admin")
    body = {"name": "w", "webhook_url": "https://n8n.example.com/w"}
    with api.nothing_written():
        assert_error(api.call("POST", "/api/v1/workflows", member, json=body), 403, "FORBIDDEN")
    assert api.call("GET", "/api/v1/workflows", member).status_code == 200
    assert api.call("POST", "/api/v1/workflows", admin, json=body).status_code == 201


def test_auditors_only_read(api: Harness, acme: dict[str, Any]) -> None:
    auditor = api.member(acme["token"], acme, "auditor@example.com", "auditor")
    workflow = api.workflow(acme["token"])
    assert api.call("GET", "/api/v1/credits/transactions", auditor).status_code == 200
    path = f"/api/v1/workflows/{workflow['id']}/execute"
    assert_error(api.call("POST", path, auditor, json={"input": {}}), 403, "FORBIDDEN")


# -- API keys and signatures ------------------------------------------------------------------


def _balance(api: Harness, key: str, **headers: str) -> Any:
    return api.call("GET", "/api/v1/credits/balance", headers={"X-API-Key": key, **headers})


def test_an_api_key_acts_for_its_organization(api: Harness, acme: dict[str, Any]) -> None:
    result = _balance(api, acme["api_key"])
    assert result.status_code == 200 and result.json["balance"] == 100


def test_an_unknown_api_key_is_401(api: Harness) -> None:
    assert_error(_balance(api, "fl_live_unknown"), 401, "UNAUTHORIZED")


def test_api_keys_cannot_do_admin_work(api: Harness, acme: dict[str, Any]) -> None:
    body = {"name": "w", "webhook_url": "https://n8n.example.com/w"}
    headers = {"X-API-Key": acme["api_key"]}
    result = api.call("POST", "/api/v1/workflows", json=body, headers=headers)
    assert_error(result, 403, "FORBIDDEN")


def _execute(api: Harness, acme: dict[str, Any], body: bytes, headers: dict[str, str]) -> Any:
    workflow = api.workflow(acme["token"])
    return api.call(
        "POST",
        f"/api/v1/workflows/{workflow['id']}/execute",
        body=body,
        headers={"X-API-Key": acme["api_key"], "Content-Type": "application/json", **headers},
    )


def test_a_good_signature_is_accepted(api: Harness, acme: dict[str, Any]) -> None:
    body = dumps({"input": {"n": 1}})
    result = _execute(api, acme, body, signed(acme["client_secret"], body))
    assert result.status_code == 202


def test_a_bare_hex_signature_is_accepted_too(api: Harness, acme: dict[str, Any]) -> None:
    body = dumps({"input": {}})
    headers = signed(acme["client_secret"], body)
    headers["X-Signature"] = headers["X-Signature"].removeprefix("sha256=")
    assert _execute(api, acme, body, headers).status_code == 202


def test_a_bad_signature_is_401_and_writes_nothing(api: Harness, acme: dict[str, Any]) -> None:
    body = dumps({"input": {"n": 1}})
    headers = signed(acme["client_secret"], dumps({"input": {"n": 2}}))
    workflow = api.workflow(acme["token"])
    with api.nothing_written():
        result = api.call("POST", f"/api/v1/workflows/{workflow['id']}/execute", body=body,
                          headers={"X-API-Key": acme["api_key"], "Content-Type": "application/json",
                                   **headers})  # fmt: skip
    assert_error(result, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_stale_timestamp_is_401(api: Harness, acme: dict[str, Any], skew: int) -> None:
    headers = signed(acme["client_secret"], b"", int(time.time()) + skew)
    assert_error(_balance(api, acme["api_key"], **headers), 401, "UNAUTHORIZED")


def test_a_signature_without_a_timestamp_is_401(api: Harness, acme: dict[str, Any]) -> None:
    headers = signed(acme["client_secret"], b"")
    del headers["X-Timestamp"]
    assert_error(_balance(api, acme["api_key"], **headers), 401, "UNAUTHORIZED")


def test_a_replayed_signature_is_401(api: Harness, acme: dict[str, Any]) -> None:
    headers = signed(acme["client_secret"], b"")
    assert _balance(api, acme["api_key"], **headers).status_code == 200
    result = _balance(api, acme["api_key"], **headers)
    error = assert_error(result, 401, "UNAUTHORIZED")
    assert "replay" in error["message"]


def test_signed_requests_can_be_required(api: Harness, acme: dict[str, Any]) -> None:
    path = f"/api/v1/organizations/{acme['id']}"
    body = {"settings": {"require_signed_requests": True}}
    assert api.call("PATCH", path, acme["token"], json=body).status_code == 200
    assert_error(_balance(api, acme["api_key"]), 401, "UNAUTHORIZED")
    assert _balance(api, acme["api_key"], **signed(acme["client_secret"], b"")).status_code == 200


def test_a_revoked_api_key_is_401(api: Harness, acme: dict[str, Any]) -> None:
    issued = api.call("POST", f"/api/v1/organizations/{acme['id']}/api-keys", acme["token"])
    key = issued.json["api_key"]
    assert _balance(api, key).status_code == 200
    path = f"/api/v1/organizations/{acme['id']}/api-keys/{issued.json['id']}"
    assert api.call("DELETE", path, acme["token"]).status_code == 204
    assert_error(_balance(api, key), 401, "UNAUTHORIZED")


def test_an_api_key_with_another_tenants_header_is_403(api: Harness, acme: dict[str, Any]) -> None:
    result = _balance(api, acme["api_key"], **{"X-Tenant-ID": "globex"})
    assert_error(result, 403, "FORBIDDEN")


def test_operators_come_from_the_settings(api: Harness, acme: dict[str, Any]) -> None:
    operator = api.user(OPERATOR)
    path = f"/api/v1/organizations/{acme['id']}/credits"
    assert api.call("POST", path, operator, json={"amount": 5}).status_code == 200
    assert_error(api.call("POST", path, acme["token"], json={"amount": 5}), 403, "FORBIDDEN")
