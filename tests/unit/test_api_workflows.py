"""`/workflows`: register, list, read, change, activate, deactivate, archive."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_api_harness import Harness, assert_error

URL = "https://n8n.example.com/webhook/process"
FIELDS = {"id", "name", "description", "project_id", "n8n_connection_id", "n8n_workflow_id",
          "n8n_webhook_path", "webhook_url", "response_mode", "is_active", "credits_per_execution",
          "timeout_seconds", "retry", "input_schema", "trigger", "tags", "category", "trigger_url",
          "execution_count", "last_executed_at", "created_at", "updated_at"}  # fmt: skip


@pytest.fixture
def owner(api: Harness) -> str:
    token = api.user("owner@example.com")
    api.organization(token, "acme")
    return token


def _item(workflow: dict[str, Any], rest: str = "") -> str:
    return f"/api/v1/workflows/{workflow['id']}{rest}"


def test_registers_a_workflow_with_the_contracts_defaults(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL, name="Process Customer Data")
    assert set(workflow) == FIELDS
    assert workflow["webhook_url"] == URL and workflow["response_mode"] == "sync"
    assert workflow["credits_per_execution"] == 1 and workflow["timeout_seconds"] == 300
    assert workflow["retry"] == {"max_retries": 0, "backoff_seconds": 2}
    assert workflow["trigger"] == {"type": "manual"} and workflow["is_active"] is True
    assert workflow["execution_count"] == 0 and workflow["tags"] == []


def test_a_registered_workflow_reads_back_at_once(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL, tags=["crm"], category="sales")
    assert api.call("GET", _item(workflow), owner).json == workflow


def test_registers_schedule_and_event_triggers(api: Harness, owner: str) -> None:
    schedule = {"type": "schedule", "cron": "0 9 * * *", "timezone": "Europe/Paris"}
    workflow = api.workflow(owner, URL, trigger=schedule)
    assert workflow["trigger"].items() >= schedule.items()
    event = {"type": "event", "event_types": ["lead.created"],
             "filter": [{"field": "score", "op": "gte", "value": 80}]}  # fmt: skip
    assert api.workflow(owner, URL, trigger=event)["trigger"] == event


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"trigger": {"type": "schedule", "cron": "every day"}}, "trigger.schedule.cron"),
        ({"trigger": {"type": "schedule", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}},
         "trigger.schedule.timezone"),
        ({"trigger": {"type": "event", "event_types": ["x"], "filter": [
            {"field": "a", "op": "like", "value": 1}]}}, "trigger.event.filter.0.op"),
        ({"timeout_seconds": 601}, "timeout_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"credits_per_execution": -1}, "credits_per_execution"),
        ({"retry": {"max_retries": 11}}, "retry.max_retries"),
        ({"input_schema": {"type": "nonsense"}}, "input_schema"),
        ({"response_mode": "later"}, "response_mode"),
        ({"unknown": 1}, "unknown"),
    ],
)  # fmt: skip
def test_invalid_workflows_are_422_naming_the_field(
    api: Harness, owner: str, fields: dict[str, Any], field: str
) -> None:
    body = {"name": "w", "webhook_url": URL, **fields}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/workflows", owner, json=body)
    assert [
        f["field"] for f in assert_error(result, 422, "VALIDATION_ERROR")["details"]["fields"]
    ] == [field]


def test_a_workflow_needs_a_target(api: Harness, owner: str) -> None:
    with api.nothing_written():
        result = api.call("POST", "/api/v1/workflows", owner, json={"name": "nowhere"})
    assert_error(result, 422, "VALIDATION_ERROR")


def test_registering_needs_an_admin(api: Harness, owner: str) -> None:
    org = api.call("GET", "/api/v1/organizations", owner).json["items"][0]
    member = api.member(owner, org, "member@example.com", "member")
    body = {"name": "w", "webhook_url": URL}
    with api.nothing_written():
        assert_error(api.call("POST", "/api/v1/workflows", member, json=body), 403, "FORBIDDEN")
    assert_error(api.call("POST", "/api/v1/workflows", json=body), 401, "UNAUTHORIZED")


def test_lists_filter_by_active_category_search_and_project(api: Harness, owner: str) -> None:
    project = "7b0c2f1e-8a61-4f3e-9d0a-6c1f0e7a2b11"
    api.workflow(owner, URL, name="Invoice sync", category="billing")
    off = api.workflow(owner, URL, name="Lead scoring", category="sales", project_id=project)
    api.call("POST", _item(off, "/deactivate"), owner)

    def names(query: str) -> list[str]:
        result = api.call("GET", f"/api/v1/workflows?{query}", owner)
        assert result.status_code == 200, result.text
        return [w["name"] for w in result.json["items"]]

    assert names("") == ["Lead scoring", "Invoice sync"]
    assert names("active_only=true") == ["Invoice sync"]
    assert names("category=sales") == ["Lead scoring"]
    assert names("search=INVOICE") == ["Invoice sync"]
    assert names(f"project_id={project}") == ["Lead scoring"]
    assert_error(api.call("GET", "/api/v1/workflows?project_id=nope", owner), 400, "BAD_REQUEST")


def test_another_organizations_workflow_is_404(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL)
    stranger = api.user("stranger@example.com")
    api.organization(stranger, "globex")
    assert_error(api.call("GET", _item(workflow), stranger), 404, "NOT_FOUND")
    with api.nothing_written():
        result = api.call("PATCH", _item(workflow), stranger, json={"name": "mine"})
    assert_error(result, 404, "NOT_FOUND")
    assert api.call("GET", "/api/v1/workflows", stranger).json["total"] == 0


def test_an_unknown_workflow_is_404(api: Harness, owner: str) -> None:
    path = "/api/v1/workflows/00000000-0000-4000-8000-000000000000"
    assert_error(api.call("GET", path, owner), 404, "NOT_FOUND")


def test_patch_changes_only_the_given_fields(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL, description="old")
    body = {"name": "Renamed", "credits_per_execution": 3, "description": None}
    result = api.call("PATCH", _item(workflow), owner, json=body)
    assert result.status_code == 200
    assert result.json["name"] == "Renamed" and result.json["credits_per_execution"] == 3
    assert result.json["description"] is None and result.json["webhook_url"] == URL
    assert api.call("GET", _item(workflow), owner).json == result.json


def test_patches_are_validated(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL)
    with api.nothing_written():
        result = api.call("PATCH", _item(workflow), owner, json={"timeout_seconds": 9999})
    assert_error(result, 422, "VALIDATION_ERROR")


def test_deactivate_and_activate(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL)
    off = api.call("POST", _item(workflow, "/deactivate"), owner)
    assert off.status_code == 200 and off.json["is_active"] is False
    on = api.call("POST", _item(workflow, "/activate"), owner)
    assert on.status_code == 200 and on.json["is_active"] is True


def test_an_inactive_workflow_cannot_run(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL)
    api.call("POST", _item(workflow, "/deactivate"), owner)
    with api.nothing_written():
        result = api.call("POST", _item(workflow, "/execute"), owner, json={"input": {}})
    assert_error(result, 404, "NOT_FOUND")


def test_delete_archives_and_the_workflow_is_gone(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL)
    assert api.call("DELETE", _item(workflow), owner).status_code == 204
    assert_error(api.call("GET", _item(workflow), owner), 404, "NOT_FOUND")
    assert api.call("GET", "/api/v1/workflows", owner).json["total"] == 0
    with api.nothing_written():
        result = api.call("POST", _item(workflow, "/execute"), owner, json={"input": {}})
        assert_error(result, 404, "NOT_FOUND")
        assert_error(api.call("DELETE", _item(workflow), owner), 404, "NOT_FOUND")
        assert_error(api.call("POST", _item(workflow, "/activate"), owner), 404, "NOT_FOUND")


def test_members_read_but_do_not_change_workflows(api: Harness, owner: str) -> None:
    workflow = api.workflow(owner, URL)
    org = api.call("GET", "/api/v1/organizations", owner).json["items"][0]
    member = api.member(owner, org, "member@example.com", "member")
    assert api.call("GET", _item(workflow), member).status_code == 200
    with api.nothing_written():
        for method, rest in (("PATCH", ""), ("DELETE", ""), ("POST", "/deactivate")):
            result = api.call(method, _item(workflow, rest), member, json={})
            assert_error(result, 403, "FORBIDDEN")
