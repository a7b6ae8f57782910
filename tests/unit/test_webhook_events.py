"""Which webhook events a domain event becomes: credit warnings only on the crossing."""

from __future__ import annotations

from uuid import UUID, uuid4

from commands.credits import account_of
from commands.organization import CreateOrganization, create_organization
from commands.user import RegisterUser, register_user
from events.application import Flowledger
from flowledger.settings import Settings
from workers import broker
from workers.webhook_events import body, outgoing


def organization(app: Flowledger) -> UUID:
    """A starter organization: 100 credits, low-balance threshold 10."""
    user = register_user(app, RegisterUser(email="o@example.com", password="x" * 12, full_name="O"))
    created = create_organization(app, user.id, CreateOrganization(name="A", tenant_id="acme"))
    org_id: UUID = created.organization.id
    return org_id


def organization_named(app: Flowledger, tenant: str) -> UUID:
    email = f"{tenant}@example.com"
    user = register_user(app, RegisterUser(email=email, password="x" * 12, full_name="O"))
    created = create_organization(app, user.id, CreateOrganization(name="B", tenant_id=tenant))
    org_id: UUID = created.organization.id
    return org_id


def debit(app: Flowledger, org_id: UUID, amount: int) -> list[str]:
    account = account_of(app, org_id)
    account.debit(amount, execution_id=uuid4())
    app.save(account)
    [event] = app.events.get(account.id, gt=account.version - 1)
    return [o.type for o in outgoing(app, event)]


def test_low_balance_fires_once_on_the_crossing_and_depleted_at_zero(app: Flowledger) -> None:
    org_id = organization(app)
    assert debit(app, org_id, 80) == []  # 100 → 20
    assert debit(app, org_id, 11) == ["credits.low_balance"]  # 20 → 9
    assert debit(app, org_id, 4) == []  # 9 → 5: still low, no repeat
    assert debit(app, org_id, 5) == ["credits.depleted"]  # 5 → 0


def test_one_debit_to_zero_from_above_the_threshold_is_both(app: Flowledger) -> None:
    org_id = organization(app)
    assert debit(app, org_id, 100) == ["credits.low_balance", "credits.depleted"]


def test_the_opening_grant_is_credits_granted_with_the_contract_body(app: Flowledger) -> None:
    org_id = organization(app)
    account = account_of(app, org_id)
    [opened, granted] = app.events.get(account.id)
    assert outgoing(app, opened) == []
    [item] = outgoing(app, granted)
    sent = body(item, "acme")
    assert sent["event"] == "credits.granted" and sent["tenant_id"] == "acme"
    assert sent["data"] == {"amount": 100, "kind": "grant", "balance": 100}
    assert sent["timestamp"].endswith("Z")


def test_an_event_is_described_as_it_happened_after_the_aggregate_moved_on(
    app: Flowledger,
) -> None:
    """Fan-out reads the cached current aggregate when it is still at the event's version,
    and rebuilds the aggregate as of the event when later events came meanwhile."""
    org_id = organization(app)
    account = account_of(app, org_id)
    account.grant(5, kind="grant")
    app.save(account)
    [granted] = app.events.get(account.id, gt=account.version - 1)
    [now] = outgoing(app, granted)  # the current aggregate is at the event's version
    assert now.data["balance"] == 105
    account.grant(7, kind="grant")
    app.save(account)
    [later] = outgoing(app, granted)  # the version described before, as of the event
    assert later == now
    [seven] = app.events.get(account.id, gt=account.version - 1)
    account.grant(9, kind="grant")
    app.save(account)
    [rolled] = outgoing(app, seven)  # rolled forward from the earlier version by one event
    assert rolled.data == {"amount": 7, "kind": "grant", "balance": 112}
    globex = account_of(app, organization_named(app, "globex"))
    [first] = app.events.get(globex.id, gt=1, lte=2)
    globex.grant(1, kind="grant")
    app.save(globex)  # moved on, and never described in this process
    assert outgoing(app, first)[0].data["balance"] == 100  # rebuilt from the log


def test_backoff_grows_about_5s_30s_2min_and_scales() -> None:
    broker.setup(Settings())  # the in-process broker, before the actors module is imported
    from workers.webhooks import backoff_seconds

    for attempt, base in ((1, 5), (2, 30), (3, 120), (4, 600)):
        assert 0.8 * base <= backoff_seconds(attempt) <= 1.2 * base
    assert backoff_seconds(1, scale=0.01) <= 0.06
    assert backoff_seconds(50) <= 1.2 * 12 * 3600
