"""`/credits`: the balance, the ledger and transfers between organizations."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_api_harness import Harness, assert_error


@pytest.fixture
def globex(api: Harness) -> dict[str, Any]:
    return api.tenant("globex", "globex@example.com", plan_type="professional")


def _transfer(api: Harness, token: str, **body: Any) -> Any:
    return api.call("POST", "/api/v1/credits/transfers", token, json=body)


def test_the_balance_answers_with_the_threshold(api: Harness, acme: dict[str, Any]) -> None:
    result = api.call("GET", "/api/v1/credits/balance", acme["token"])
    assert result.status_code == 200
    assert result.json["balance"] == 100 and result.json["currency"] == "credits"
    assert result.json["low_balance_threshold"] == 10 and result.json["updated_at"].endswith("Z")


def test_the_balance_needs_credentials(api: Harness) -> None:
    assert_error(api.call("GET", "/api/v1/credits/balance"), 401, "UNAUTHORIZED")


def test_a_transfer_moves_credits_and_writes_both_ledgers(
    api: Harness, acme: dict[str, Any], globex: dict[str, Any]
) -> None:
    result = _transfer(api, acme["token"], to_tenant_id="globex", amount=30, message="thanks")
    assert result.status_code == 201
    assert result.json["status"] == "completed" and result.json["amount"] == 30
    assert result.json["balance"] == 70 and result.json["transfer_id"]
    mine = api.call("GET", "/api/v1/credits/transactions", acme["token"]).json["items"]
    assert [(t["type"], t["amount"], t["balance_after"]) for t in mine] == [
        ("transfer_out", -30, 70),
        ("grant", 100, 100),
    ]
    theirs = api.call("GET", "/api/v1/credits/transactions?type=transfer_in", globex["token"]).json
    assert [(t["amount"], t["balance_after"]) for t in theirs["items"]] == [(30, 1030)]
    assert api.call("GET", "/api/v1/credits/balance", globex["token"]).json["balance"] == 1030


def test_a_transfer_beyond_the_balance_is_402_and_writes_nothing(
    api: Harness, acme: dict[str, Any], globex: dict[str, Any]
) -> None:
    with api.nothing_written():
        result = _transfer(api, acme["token"], to_tenant_id="globex", amount=101)
    error = assert_error(result, 402, "INSUFFICIENT_CREDITS")
    assert error["details"] == {"credits_required": 101, "credits_available": 100}


def test_a_transfer_to_an_unknown_tenant_is_404(api: Harness, acme: dict[str, Any]) -> None:
    with api.nothing_written():
        result = _transfer(api, acme["token"], to_tenant_id="nobody", amount=1)
    assert_error(result, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"to_tenant_id": "globex", "amount": 0},
        {"amount": 5},
        {"to_tenant_id": "globex", "amount": 5, "memo": "x"},
    ],
)
def test_transfers_are_validated(
    api: Harness, acme: dict[str, Any], globex: dict[str, Any], body: dict[str, Any]
) -> None:
    with api.nothing_written():
        result = _transfer(api, acme["token"], **body)
    assert_error(result, 422, "VALIDATION_ERROR")


def test_members_cannot_transfer(
    api: Harness, acme: dict[str, Any], globex: dict[str, Any]
) -> None:
    member = api.member(acme["token"], acme, "member@example.com", "member")
    with api.nothing_written():
        result = _transfer(api, member, to_tenant_id="globex", amount=1)
    assert_error(result, 403, "FORBIDDEN")


def test_api_keys_read_the_balance_but_do_not_transfer(
    api: Harness, acme: dict[str, Any], globex: dict[str, Any]
) -> None:
    headers = {"X-API-Key": acme["api_key"]}
    assert api.call("GET", "/api/v1/credits/balance", headers=headers).status_code == 200
    body = {"to_tenant_id": "globex", "amount": 1}
    result = api.call("POST", "/api/v1/credits/transfers", json=body, headers=headers)
    assert_error(result, 403, "FORBIDDEN")


def test_transactions_filter_by_type_and_refuse_unknown_types(
    api: Harness, acme: dict[str, Any]
) -> None:
    result = api.call("GET", "/api/v1/credits/transactions?type=grant", acme["token"])
    assert result.status_code == 200 and result.json["total"] == 1
    item = result.json["items"][0]
    assert set(item) == {"id", "type", "amount", "balance_after", "execution_id", "description",
                         "created_at"}  # fmt: skip
    bad = api.call("GET", "/api/v1/credits/transactions?type=bonus", acme["token"])
    assert_error(bad, 400, "BAD_REQUEST")


def test_transactions_are_the_organizations_own(
    api: Harness, acme: dict[str, Any], globex: dict[str, Any]
) -> None:
    items = api.call("GET", "/api/v1/credits/transactions", globex["token"]).json["items"]
    assert [t["amount"] for t in items] == [1000]
