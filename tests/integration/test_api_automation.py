"""Automation events and inbound webhooks over the API: n8n's signed events, `/events`,
event-triggered runs (dispatcher → worker → a fake n8n over real HTTP), trigger URLs and
their rotation, Stripe top-ups, and the organization's `/stream` of events."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import dramatiq
import httpx
import pytest

from commands.automation_event import trigger_workflows
from events.application import Flowledger
from flowledger.processes import run_followers
from tests.conftest import fresh_database
from tests.support.fake_n8n import FakeN8n
from tests.support.waiting import until
from tests.unit.test_api_harness import Harness, assert_error, dumps, fast_passwords
from workers import broker as broker_setup
from workers import context

STRIPE_SECRET = "whsec_test_" + "x" * 24
#: Checks that do not depend on the store run on SQLite only (each PostgreSQL case costs ~2 s).
embedded_only = pytest.mark.parametrize("api", ["embedded"], indirect=True)


@pytest.fixture(params=["embedded", "postgres"])
def api(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """The API on a real port with the dispatcher and worker threads running, on SQLite or
    on a fresh PostgreSQL database (LISTEN/NOTIFY followers)."""
    fast_passwords(monkeypatch)
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {"stripe_webhook_secret": STRIPE_SECRET}
        opened: list[Flowledger] = []
        if request.param == "postgres":
            overrides["database_url"] = stack.enter_context(fresh_database())
            # Its pools close after the harness stops, before the database is dropped.
            stack.callback(lambda: [app.close() for app in opened])
        harness = stack.enter_context(Harness.start(tmp_path, serve=True, **overrides))
        opened.append(harness.app)
        import workers.actors  # noqa: F401  (declared on the harness's broker)
        from workers.dispatcher import dispatcher

        context.use(harness.app)
        followers = [dispatcher(harness.app)]
        threads = run_followers(followers)
        worker = broker_setup.start_embedded_worker(dramatiq.get_broker(), threads=4)
        try:
            yield harness
        finally:
            for follower in followers:
                follower.stop()
            worker.stop(timeout=2000)
            for thread in threads:
                thread.join(timeout=5)


@pytest.fixture
def n8n() -> Iterator[FakeN8n]:
    with FakeN8n() as server:
        yield server


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    return api.tenant("acme")


def n8n_headers(secret: str, tenant: str, body: bytes, stamp: int | None = None) -> dict[str, str]:
    when = str(int(time.time()) if stamp is None else stamp)
    digest = hmac.new(secret.encode(), when.encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Tenant-ID": tenant,
        "X-N8N-Timestamp": when,
        "X-N8N-Signature": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def events(api: Harness, org: dict[str, Any], query: str = "") -> dict[str, Any]:
    assert api.deps.settle("automation_events")
    result = api.call("GET", f"/api/v1/events{query}", org["token"])
    assert result.status_code == 200, result.text
    return result.json


# -- n8n's signed events ------------------------------------------------------------------------


def test_a_signed_n8n_event_is_recorded_and_listed(api: Harness, acme: dict[str, Any]) -> None:
    body = dumps({"workflow_id": "n8n-7", "execution_id": "42", "data": {"lead": {"id": 1}}})
    headers = n8n_headers(acme["client_secret"], "acme", body)
    result = api.call("POST", "/webhooks/n8n/lead.created", body=body, headers=headers)
    assert result.status_code == 200, result.text
    assert result.json["status"] == "received"
    [item] = events(api, acme)["items"]
    assert item["id"] == result.json["event_id"]
    assert item["event_type"] == "lead.created" and item["event_data"] == {"lead": {"id": 1}}
    assert item["processed"] is True and item["workflow_ids"] == [] == item["execution_ids"]


@embedded_only
@pytest.mark.parametrize("fault", ["wrong secret", "stale", "future", "no signature", "tenant"])
def test_a_bad_or_stale_signature_is_refused_and_records_nothing(
    api: Harness, acme: dict[str, Any], fault: str
) -> None:
    body = dumps({"data": {"a": 1}})
    secret, stamp, tenant = acme["client_secret"], int(time.time()), "acme"
    if fault == "wrong secret":
        secret = "cs_not-the-secret"
    elif fault == "stale":
        stamp -= 301
    elif fault == "future":
        stamp += 301
    elif fault == "tenant":
        tenant = "nobody"
    headers = n8n_headers(secret, tenant, body, stamp)
    if fault == "no signature":
        del headers["X-N8N-Signature"]
    with api.nothing_written():
        result = api.call("POST", "/webhooks/n8n/lead.created", body=body, headers=headers)
        assert_error(result, 401, "UNAUTHORIZED")
    assert events(api, acme)["total"] == 0


def test_a_replayed_signature_is_refused(api: Harness, acme: dict[str, Any]) -> None:
    body = dumps({"data": {"a": 1}})
    headers = n8n_headers(acme["client_secret"], "acme", body)
    first = api.call("POST", "/webhooks/n8n/lead.created", body=body, headers=headers)
    assert first.status_code == 200, first.text
    with api.nothing_written():
        again = api.call("POST", "/webhooks/n8n/lead.created", body=body, headers=headers)
        assert_error(again, 401, "UNAUTHORIZED")
    assert events(api, acme)["total"] == 1


# -- /events ------------------------------------------------------------------------------------


@embedded_only
def test_event_data_over_256_kib_is_refused(api: Harness, acme: dict[str, Any]) -> None:
    body = {"event_type": "blob.saved", "event_data": {"blob": "x" * (300 * 1024)}}
    with api.nothing_written():
        result = api.call("POST", "/api/v1/events", acme["token"], json=body)
        error = assert_error(result, 422, "VALIDATION_ERROR")
    assert error["details"]["fields"][0]["field"] == "event_data"


@embedded_only
def test_an_event_type_must_match_the_pattern(api: Harness, acme: dict[str, Any]) -> None:
    body = {"event_type": "Lead Created", "event_data": {}}
    assert_error(api.call("POST", "/api/v1/events", acme["token"], json=body), 422,
                 "VALIDATION_ERROR")  # fmt: skip


def test_events_are_listed_with_filters(api: Harness, acme: dict[str, Any]) -> None:
    for kind in ("a.one", "b.two", "a.one"):
        body = {"event_type": kind, "event_data": {"k": kind}}
        result = api.call("POST", "/api/v1/events", acme["token"], json=body)
        assert result.status_code == 201, result.text
        assert result.json["status"] == "processing" and result.json["triggered_workflows"] == []
    assert events(api, acme)["total"] == 3
    assert events(api, acme, "?event_type=a.one")["total"] == 2
    assert events(api, acme, "?processed=false")["total"] == 0
    assert events(api, acme, "?limit=1")["items"][0]["event_type"] == "a.one"


def test_matching_event_triggers_run_their_workflows_and_charge_credits(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    token, url = acme["token"], n8n.webhook_url("sync")

    def on(event_types: list[str], *conditions: dict[str, Any], **fields: Any) -> str:
        trigger = {"type": "event", "event_types": event_types, "filter": list(conditions)}
        return api.workflow(token, url, trigger=trigger, **fields)["id"]

    hot = on(["lead.created"], {"field": "score", "op": "gte", "value": 80},
             {"field": "lead.source", "op": "in", "value": ["web", "ads"]},
             {"field": "lead.email", "op": "exists"}, credits_per_execution=7)  # fmt: skip
    any_lead = on(
        ["lead.updated", "lead.created"], {"field": "lead.vip", "op": "ne", "value": True}
    )
    cold = on(["lead.created"], {"field": "score", "op": "lt", "value": 10})
    other = on(["order.paid"])
    paused = on(["lead.created"])
    assert api.call("POST", f"/api/v1/workflows/{paused}/deactivate", token).status_code == 200
    api.workflow(token, url)  # a manual trigger never reacts

    data = {"score": 91, "lead": {"source": "web", "email": "a@b.c"}}
    body = {"event_type": "lead.created", "event_data": data}
    result = api.call("POST", "/api/v1/events", token, json=body)
    assert result.status_code == 201, result.text
    assert sorted(result.json["triggered_workflows"]) == sorted([hot, any_lead])
    assert cold not in result.json["triggered_workflows"]
    assert other not in result.json["triggered_workflows"]

    def processed() -> dict[str, Any] | None:
        [item] = events(api, acme)["items"]
        return item if item["processed"] and len(item["execution_ids"]) == 2 else None

    item = until(processed)
    assert sorted(item["workflow_ids"]) == sorted([hot, any_lead])
    for execution_id in item["execution_ids"]:

        def finished(execution_id: str = execution_id) -> dict[str, Any] | None:
            api.settle()
            found = api.call("GET", f"/api/v1/executions/{execution_id}", token).json
            return found if found["status"] == "completed" else None

        execution = until(finished)
        assert execution["trigger"] == "event" and execution["input"] == data
        assert execution["metadata"]["event_id"] == result.json["id"]
    assert len(n8n.requests_for("/webhook/sync")) == 2
    balance = api.call("GET", "/api/v1/credits/balance", token).json["balance"]
    assert balance == 100 - 7 - 1

    # The actor run again (a redelivered message) queues nothing twice.
    trigger_workflows(api.app, UUID(result.json["id"]))
    api.settle()
    runs = api.call("GET", "/api/v1/executions", token).json
    assert runs["total"] == 2


@embedded_only
def test_an_event_with_trigger_workflows_false_runs_nothing(
    api: Harness, acme: dict[str, Any]
) -> None:
    api.workflow(acme["token"], trigger={"type": "event", "event_types": ["x.y"]})
    body = {"event_type": "x.y", "event_data": {}, "trigger_workflows": False}
    result = api.call("POST", "/api/v1/events", acme["token"], json=body)
    assert result.status_code == 201 and result.json["triggered_workflows"] == []
    assert events(api, acme)["items"][0]["processed"] is True


@embedded_only
def test_an_api_key_may_record_events(api: Harness, acme: dict[str, Any]) -> None:
    headers = {"X-API-Key": acme["api_key"]}
    body = {"event_type": "k.v", "event_data": {"a": 1}}
    result = api.call("POST", "/api/v1/events", json=body, headers=headers)
    assert result.status_code == 201, result.text


# -- trigger URLs -------------------------------------------------------------------------------


def test_a_trigger_url_runs_the_workflow_and_rotation_retires_it(
    api: Harness, acme: dict[str, Any], n8n: FakeN8n
) -> None:
    token = acme["token"]
    workflow = api.workflow(token, n8n.webhook_url("sync"), trigger={"type": "webhook"})
    url = workflow["trigger_url"]
    assert url.startswith(f"{api.url}/webhooks/workflows/{workflow['id']}/")
    assert api.call("GET", f"/api/v1/workflows/{workflow['id']}", token).json["trigger_url"] == url
    listed = api.call("GET", "/api/v1/workflows", token).json["items"]
    assert [w["trigger_url"] for w in listed] == [url]

    answer = httpx.post(url, json={"order": 7}, timeout=5)  # anyone with the URL, no auth
    assert answer.status_code == 202, answer.text
    execution_id = answer.json()["execution_id"]

    def finished() -> dict[str, Any] | None:
        api.settle()
        found = api.call("GET", f"/api/v1/executions/{execution_id}", token).json
        return found if found["status"] == "completed" else None

    # The run finishes in a worker: wait, so its events do not land in `nothing_written`.
    execution = until(finished, what="the triggered run to complete")
    assert execution["trigger"] == "webhook" and execution["input"] == {"order": 7}

    path = f"/api/v1/workflows/{workflow['id']}/rotate-trigger-token"
    rotated = api.call("POST", path, token)
    assert rotated.status_code == 200, rotated.text
    new_url = rotated.json["trigger_url"]
    assert new_url != url and new_url.startswith(f"{api.url}/webhooks/workflows/")
    with api.nothing_written():
        assert_error(api.call("POST", url.removeprefix(api.url), json={}), 404, "NOT_FOUND")
    assert api.call("POST", new_url.removeprefix(api.url), json={}).status_code == 202

    # Changing the trigger retires the URL too.
    patched = api.call("PATCH", f"/api/v1/workflows/{workflow['id']}", token,
                       json={"trigger": {"type": "manual"}})  # fmt: skip
    assert patched.status_code == 200 and patched.json["trigger_url"] is None
    assert_error(api.call("POST", new_url.removeprefix(api.url), json={}), 404, "NOT_FOUND")
    back = api.call("PATCH", f"/api/v1/workflows/{workflow['id']}", token,
                    json={"trigger": {"type": "webhook"}})  # fmt: skip
    assert back.json["trigger_url"] not in (None, url, new_url)


@embedded_only
def test_unknown_tokens_and_other_triggers_are_not_found(
    api: Harness, acme: dict[str, Any]
) -> None:
    manual = api.workflow(acme["token"])
    assert manual["trigger_url"] is None
    with api.nothing_written():
        for path in (f"/webhooks/workflows/{manual['id']}/whatever",
                     "/webhooks/workflows/00000000-0000-0000-0000-000000000000/x"):  # fmt: skip
            assert_error(api.call("POST", path, json={}), 404, "NOT_FOUND")
    rotate = f"/api/v1/workflows/{manual['id']}/rotate-trigger-token"
    assert_error(api.call("POST", rotate, acme["token"]), 409, "CONFLICT")


# -- Stripe -------------------------------------------------------------------------------------


def stripe_headers(payload: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> dict:
    stamp = str(int(time.time()) if at is None else at)
    v1 = hmac.new(secret.encode(), stamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={v1}", "Content-Type": "application/json"}


def invoice_paid(event_id: str, tenant: str, credits: int) -> bytes:
    invoice = {"id": "in_1", "metadata": {"tenant_id": tenant, "credits": str(credits)}}
    return dumps({"id": event_id, "type": "invoice.paid", "data": {"object": invoice}})


def balance(api: Harness, org: dict[str, Any]) -> int:
    return int(api.call("GET", "/api/v1/credits/balance", org["token"]).json["balance"])


def test_stripe_invoice_paid_grants_credits_once_per_event(
    api: Harness, acme: dict[str, Any]
) -> None:
    payload = invoice_paid("evt_1", "acme", 500)
    path = "/api/v1/webhooks/stripe"
    first = api.call("POST", path, body=payload, headers=stripe_headers(payload))
    assert first.status_code == 200, first.text
    assert first.json["credits_granted"] == 500
    assert balance(api, acme) == 600
    again = api.call("POST", path, body=payload, headers=stripe_headers(payload))
    assert again.status_code == 200 and again.json["credits_granted"] == 0
    assert balance(api, acme) == 600
    api.settle()
    kinds = [t["type"] for t in api.call("GET", "/api/v1/credits/transactions", acme["token"])
             .json["items"]]  # fmt: skip
    assert kinds.count("purchase") == 1, kinds


@embedded_only
def test_stripe_signatures_are_checked(api: Harness, acme: dict[str, Any]) -> None:
    payload = invoice_paid("evt_2", "acme", 500)
    path = "/api/v1/webhooks/stripe"
    with api.nothing_written():
        for headers in (
            stripe_headers(payload, secret="whsec_wrong"),
            stripe_headers(payload, at=int(time.time()) - 301),
            {"Stripe-Signature": "garbage", "Content-Type": "application/json"},
            {"Content-Type": "application/json"},
        ):
            assert_error(api.call("POST", path, body=payload, headers=headers), 401,
                         "UNAUTHORIZED")  # fmt: skip
        other = dumps({"id": "evt_3", "type": "customer.created", "data": {"object": {}}})
        ignored = api.call("POST", path, body=other, headers=stripe_headers(other))
        assert ignored.status_code == 200 and ignored.json["status"] == "ignored"
    assert balance(api, acme) == 100


def test_stripe_endpoint_is_absent_without_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path) as api:
        payload = invoice_paid("evt_1", "acme", 5)
        result = api.call("POST", "/api/v1/webhooks/stripe", body=payload,
                          headers=stripe_headers(payload))  # fmt: skip
        assert_error(result, 404, "NOT_FOUND")


# -- /stream ------------------------------------------------------------------------------------


def test_the_stream_delivers_the_organizations_events(api: Harness, acme: dict[str, Any]) -> None:
    other = api.user("other@example.com")
    api.organization(other, "globex")
    received: list[tuple[str, dict[str, Any]]] = []
    connected = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {acme['token']}"}
        with httpx.stream("GET", f"{api.url}/api/v1/stream", headers=headers, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind is not None:
                    received.append((kind, json.loads(line.removeprefix("data: "))))
                    if kind == "event.received":
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(5)
    body = {"event_type": "globex.thing", "event_data": {}}
    assert api.call("POST", "/api/v1/events", other, json=body).status_code == 201
    body = {"event_type": "lead.created", "event_data": {"n": 1}}
    created = api.call("POST", "/api/v1/events", acme["token"], json=body)
    thread.join(10)
    assert not thread.is_alive(), received
    kind, message = received[-1]
    assert kind == "event.received"
    assert message["tenant_id"] == "acme" and message["event"] == "event.received"
    assert created.json["id"] in json.dumps(message["data"])
    assert all(m["tenant_id"] == "acme" for _, m in received)
