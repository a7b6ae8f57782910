"""What the dispatcher sends for a batch of the log (`workers.dispatcher.sends_for` with
`workers.subscribers.Subscribers`), on the embedded store through the real command handlers.

Proven here:
* an organization without webhook endpoints gets no `fan_out_many` (without `Subscribers`,
  the same batch does fan out: its webhook events are there);
* once an endpoint is created, the organization's events are fanned out, whether its
  registry events are in the same batch or in an earlier one read by the same `Subscribers`;
* after its only endpoint is removed, the organization's later events are not fanned out;
* an event whose organization cannot be found is fanned out (the worker finds out);
* fan-out events go in log order, `FAN_OUT_BATCH` per message;
* a queued sync-mode run gets only `call_n8n` (no `expire`); a queued callback-mode run
  gets `expire` delayed by its timeout and `call_n8n`; an inline run only `expire`.

Batches are built as the dispatcher builds them: `Item(position, event)` from the app's
notification log (`select_notifications` and the mapper).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from commands.credits import GrantCredits, account_of, grant_credits
from commands.execution import ExecuteWorkflow, queue_execution, start_execution
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from commands.webhook import CreateEndpoint, archive_endpoint, create_endpoint
from commands.workflow import RegisterWorkflow, register_workflow
from events.application import Flowledger
from events.credit_account import CreditAccount
from events.execution import Execution
from events.webhook_endpoint import WebhookSubscriptions
from flowledger.settings import Settings
from projections.runner import Item
from tests.support.log import Log
from workers import broker

broker.setup(Settings())  # the in-process broker, before the actor modules are imported

from workers.dispatcher import Send, sends_for  # noqa: E402
from workers.subscribers import Subscribers  # noqa: E402
from workers.webhooks import FAN_OUT_BATCH  # noqa: E402


def organization(app: Flowledger, tenant: str) -> UUID:
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
    )
    org_id: UUID = create_organization(
        app, user.id, CreateOrganization(name=tenant, tenant_id=tenant)
    ).organization.id
    return org_id


def workflow(app: Flowledger, org_id: UUID, **fields: Any) -> UUID:
    fields.setdefault("webhook_url", "http://127.0.0.1:9/webhook/sync")
    wf_id: UUID = register_workflow(app, org_id, RegisterWorkflow(name="wf", **fields)).id
    return wf_id


def endpoint(app: Flowledger, org_id: UUID) -> UUID:
    cmd = CreateEndpoint(url="https://hooks.example.com/in", event_types=["*"])
    endpoint_id: UUID = create_endpoint(app, org_id, cmd)[0].id
    return endpoint_id


def fanned(sends: list[Send]) -> list[list[Any]]:
    """The `[aggregate id, version]` pairs of every `fan_out_many` message, in order."""
    return [pair for s in sends if s.actor.actor_name == "fan_out_many" for pair in s.args[0]]


def routed(sends: list[Send]) -> list[tuple[str, tuple[Any, ...], int | None]]:
    """The other messages, as (actor name, args, delay)."""
    return [(s.actor.actor_name, s.args, s.delay_ms) for s in sends
            if s.actor.actor_name != "fan_out_many"]  # fmt: skip


def test_an_organization_without_endpoints_gets_no_fan_out(app: Flowledger) -> None:
    org_id = organization(app, "quiet")
    wf_id = workflow(app, org_id)
    run = queue_execution(app, org_id, "quiet", wf_id, ExecuteWorkflow())
    start_execution(app, run.id, "m1")
    items = Log(app).batch()
    assert fanned(sends_for(items))  # the batch does hold webhook events (credits, workflow…)
    sends = sends_for(items, Subscribers(app))
    assert fanned(sends) == []
    assert routed(sends) == [("call_n8n", (str(run.id),), None)]  # the rest is still sent


def test_an_endpoint_created_in_the_same_batch_turns_the_fan_out_on(app: Flowledger) -> None:
    org_id = organization(app, "hooked")
    endpoint(app, org_id)
    wf_id = workflow(app, org_id)
    items = Log(app).batch()
    pairs = fanned(sends_for(items, Subscribers(app)))
    assert [str(wf_id), 1] in pairs
    assert pairs == fanned(sends_for(items))  # every webhook event of the batch


def test_registry_events_of_an_earlier_batch_turn_the_fan_out_on(app: Flowledger) -> None:
    log, subscribers = Log(app), Subscribers(app)
    org_id = organization(app, "later")
    workflow(app, org_id)
    assert fanned(sends_for(log.batch(), subscribers)) == []  # no endpoint (remembered)
    endpoint(app, org_id)
    registry_batch = log.batch()
    assert any(isinstance(i.event, WebhookSubscriptions.Added) for i in registry_batch)
    assert fanned(sends_for(registry_batch, subscribers)) == []  # nothing to fan out in it
    wf_id = workflow(app, org_id)
    assert fanned(sends_for(log.batch(), subscribers)) == [[str(wf_id), 1]]


def test_registry_events_in_the_batch_drop_what_was_remembered(app: Flowledger) -> None:
    log, subscribers = Log(app), Subscribers(app)
    org_id = organization(app, "both")
    assert fanned(sends_for(log.batch(), subscribers)) == []
    endpoint(app, org_id)
    wf_id = workflow(app, org_id)
    assert fanned(sends_for(log.batch(), subscribers)) == [[str(wf_id), 1]]


def test_an_organization_whose_only_endpoint_was_removed_gets_no_fan_out(
    app: Flowledger,
) -> None:
    log, subscribers = Log(app), Subscribers(app)
    org_id = organization(app, "gone")
    endpoint_id = endpoint(app, org_id)
    first = workflow(app, org_id)
    assert [str(first), 1] in fanned(sends_for(log.batch(), subscribers))
    archive_endpoint(app, org_id, endpoint_id)
    later = workflow(app, org_id)
    batch = log.batch()
    assert any(isinstance(i.event, WebhookSubscriptions.Removed) for i in batch)
    assert fanned(sends_for(batch, subscribers)) == []
    assert fanned(sends_for(batch)) == [[str(later), 1]]  # what it would have sent


def test_only_the_organizations_with_endpoints_are_fanned_out(app: Flowledger) -> None:
    quiet, hooked = organization(app, "quiet"), organization(app, "hooked")
    endpoint(app, hooked)
    log, subscribers = Log(app), Subscribers(app)
    log.batch()  # both organizations' creation, read by another dispatcher run
    quiet_wf, hooked_wf = workflow(app, quiet), workflow(app, hooked)
    grant_credits(app, quiet, GrantCredits(amount=5))
    grant_credits(app, hooked, GrantCredits(amount=7))
    account = account_of(app, hooked)
    pairs = fanned(sends_for(log.batch(), subscribers))
    assert pairs == [[str(hooked_wf), 1], [str(account.id), account.version]]
    assert [str(quiet_wf), 1] not in pairs


def test_an_event_whose_organization_is_unknown_is_fanned_out(
    app: Flowledger, tmp_path: Path
) -> None:
    """The account's events name no organization and this store does not hold it (as if
    the event came from elsewhere): the worker is left to find out."""
    other = Flowledger(Settings(database_url=f"sqlite:///{tmp_path}/other.db", var_dir=tmp_path))
    try:
        org_id = organization(other, "elsewhere")
        account = account_of(other, org_id)
        [granted] = [i for i in Log(other).batch() if isinstance(i.event, CreditAccount.Granted)]
        assert granted.event.originator_id == account.id  # the opening grant
        assert not hasattr(granted.event, "organization_id")
    finally:
        other.close()
        other.db.close()
    subscribers = Subscribers(app)
    assert subscribers.organization_of(granted.event) is None
    assert fanned(sends_for([granted], subscribers)) == [[str(account.id), 2]]


def test_fan_out_is_split_in_messages_of_fan_out_batch_events_in_log_order(
    app: Flowledger,
) -> None:
    org_id = organization(app, "busy")
    endpoint(app, org_id)
    log = Log(app)
    log.batch()
    for _ in range(FAN_OUT_BATCH + 20):
        grant_credits(app, org_id, GrantCredits(amount=1))
    account = account_of(app, org_id)
    sends = sends_for(log.batch(), Subscribers(app))
    assert [len(s.args[0]) for s in sends] == [FAN_OUT_BATCH, 20]
    first = account.version - FAN_OUT_BATCH - 20 + 1
    assert fanned(sends) == [[str(account.id), v] for v in range(first, account.version + 1)]


def queued(app: Flowledger, org_id: UUID, wf_id: UUID, **options: Any) -> tuple[Execution, Item]:
    """A new run (with `options` for `queue_execution`) and the log item of its `Queued`."""
    timeout = options.pop("timeout_override", None)
    tenant = app.repository.get(org_id).tenant_id
    cmd = ExecuteWorkflow(timeout_override=timeout)
    run = queue_execution(app, org_id, tenant, wf_id, cmd, **options)
    found = app.recorder.select_notifications(start=0, limit=100_000)
    [item] = [
        Item(n.id, app.mapper.to_domain_event(n), n)
        for n in found
        if n.originator_id == run.id and n.originator_version == 1
    ]
    assert isinstance(item.event, Execution.Queued)
    return run, item


def test_a_queued_sync_run_gets_its_n8n_call_and_no_timeout_guard(app: Flowledger) -> None:
    org_id = organization(app, "sync")
    run, item = queued(app, org_id, workflow(app, org_id, timeout_seconds=30))
    assert routed(sends_for([item], Subscribers(app))) == [("call_n8n", (str(run.id),), None)]


def test_a_queued_callback_run_gets_a_timeout_guard_delayed_by_its_timeout(
    app: Flowledger,
) -> None:
    org_id = organization(app, "callback")
    wf_id = workflow(app, org_id, response_mode="callback", timeout_seconds=30)
    run, item = queued(app, org_id, wf_id)
    assert routed(sends_for([item], Subscribers(app))) == [
        ("expire", (str(run.id),), 30_000),
        ("call_n8n", (str(run.id),), None),
    ]
    overridden, item = queued(app, org_id, wf_id, timeout_override=7)
    assert ("expire", (str(overridden.id),), 7_000) in routed(sends_for([item]))


def test_an_inline_run_gets_only_the_timeout_guard(app: Flowledger) -> None:
    org_id = organization(app, "inline")
    wf_id = workflow(app, org_id, timeout_seconds=45)
    run, item = queued(app, org_id, wf_id, inline=True)
    assert item.event.inline
    assert routed(sends_for([item], Subscribers(app))) == [("expire", (str(run.id),), 45_000)]
