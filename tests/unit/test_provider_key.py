"""The provider-key vault's aggregate and handlers on the embedded store (SQLite, no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from commands.organization import CreateOrganization, create_organization
from commands.provider_key import (
    CreateProviderKey,
    RecordUsage,
    RotateProviderKey,
    UpdateProviderKey,
    create_provider_key,
    delete_provider_key,
    read_secret,
    record_usage,
    rotate_provider_key,
    update_provider_key,
)
from commands.user import RegisterUser, register_user
from events.application import Flowledger
from events.errors import NotFound
from events.provider_key import KeyDeleted, KeyExpired, KeyInactive, ProviderKey, month_after
from events.vault import SecretShredded
from flowledger.settings import Settings
from projections.runner import Item
from workers import broker
from workers.webhook_events import body, outgoing

KEY = "sk-live-UNIT-0123456789-wxyz"
READER = {"via": "test"}


def organization(app: Flowledger, tenant: str = "acme") -> UUID:
    user = register_user(
        app, RegisterUser(email=f"{tenant}@example.com", password="x" * 12, full_name="O")
    )
    org_id: UUID = create_organization(
        app, user.id, CreateOrganization(name="A", tenant_id=tenant)
    ).organization.id
    return org_id


def stored(app: Flowledger, org_id: UUID, **fields: Any) -> ProviderKey:
    cmd = CreateProviderKey.model_validate(
        {"provider": "openai", "key_name": "prod", "api_key": KEY, **fields}
    )
    return create_provider_key(app, org_id, cmd)


def use(app: Flowledger, org_id: UUID, key_id: UUID, cost: str, **fields: Any) -> bool:
    cmd = RecordUsage.model_validate(
        {"requests_count": 1, "tokens_used": 10, "cost": Decimal(cost), **fields}
    )
    return record_usage(app, org_id, key_id, cmd)[1]


def kinds(app: Flowledger, key_id: UUID) -> list[str]:
    return [type(e).__qualname__.split(".")[-1] for e in app.events.get(key_id)]


def test_the_key_is_sealed_in_its_event_and_opens_only_through_the_vault(
    app: Flowledger,
) -> None:
    key = stored(app, organization(app))
    [created] = app.events.get(key.id)
    assert isinstance(created, ProviderKey.Created)
    assert KEY not in repr(created.__dict__) and created.key_hint == "...wxyz"
    assert set(created.api_key) == {"key_id", "nonce", "ciphertext"}
    assert app.vault.open(created.api_key) == KEY
    assert read_secret(app, key.id, READER) == KEY


def test_rotating_shreds_the_old_data_key_and_reads_the_new_key(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id)
    old = key.api_key
    rotated = rotate_provider_key(
        app, org_id, key.id, RotateProviderKey.model_validate({"new_api_key": "sk-new-9876543210"})
    )
    assert rotated.key_hint == "...3210" and rotated.rotated_at is not None
    with pytest.raises(SecretShredded):
        app.vault.open(old)
    assert read_secret(app, key.id, READER) == "sk-new-9876543210"


def test_a_new_api_key_in_an_update_is_a_rotation(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id)
    old = key.api_key
    cmd = UpdateProviderKey.model_validate({"api_key": "sk-updated-ABCDEFGH", "key_name": "x"})
    updated = update_provider_key(app, org_id, key.id, cmd)
    assert updated.key_name == "x" and updated.key_hint == "...EFGH"
    with pytest.raises(SecretShredded):
        app.vault.open(old)
    assert read_secret(app, key.id, READER) == "sk-updated-ABCDEFGH"


def test_deleting_shreds_every_data_key_while_the_events_still_decode(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id)
    first = key.api_key
    rotate_provider_key(
        app, org_id, key.id, RotateProviderKey.model_validate({"new_api_key": "sk-second-12345678"})
    )
    second = app.repository.get(key.id).api_key
    delete_provider_key(app, org_id, key.id)
    for sealed in (first, second):
        with pytest.raises(SecretShredded):
            app.vault.open(sealed)
    assert kinds(app, key.id) == ["Created", "Rotated", "Deleted"]
    reloaded = Flowledger(app.settings)  # no cached aggregate, no cached data key
    try:
        with pytest.raises(KeyDeleted):
            read_secret(reloaded, key.id, READER)
        with pytest.raises(SecretShredded):
            reloaded.vault.open(second)
        assert reloaded.repository.get(key.id).deleted
    finally:
        reloaded.close()
    with pytest.raises(NotFound):
        delete_provider_key(app, org_id, key.id)


def test_a_refused_read_writes_nothing(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id)
    update_provider_key(app, org_id, key.id, UpdateProviderKey(is_active=False))
    version = app.repository.get(key.id).version
    with pytest.raises(KeyInactive) as disabled:
        read_secret(app, key.id, READER)
    assert disabled.value.details["reason"] == "disabled"
    assert app.repository.get(key.id).version == version
    update_provider_key(app, org_id, key.id, UpdateProviderKey(is_active=True))
    later = datetime.now(UTC) + timedelta(days=40)
    soon = stored(app, org_id, expires_at=datetime.now(UTC) + timedelta(days=30))
    with pytest.raises(KeyExpired):
        read_secret(app, soon.id, READER, now=later)
    assert read_secret(app, soon.id, READER) == KEY
    with pytest.raises(NotFound):
        read_secret(app, UUID(int=7), READER)


def test_every_read_is_an_event_naming_its_reader(app: Flowledger) -> None:
    key = stored(app, organization(app))
    read_secret(app, key.id, {"via": "internal_secret", "request_id": "r-1"})
    read_secret(app, key.id, {"via": "internal_secret", "request_id": "r-2"})
    reads = [e for e in app.events.get(key.id) if isinstance(e, ProviderKey.SecretRead)]
    assert [r.reader["request_id"] for r in reads] == ["r-1", "r-2"]
    assert app.repository.get(key.id).last_used_at == reads[-1].at


def test_reaching_the_monthly_limit_pauses_the_key_once(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id, usage_limit_monthly=Decimal("10"))
    assert [use(app, org_id, key.id, c) for c in ("4.5", "5.4", "0.1", "3")] == [
        False,
        False,
        True,  # 4.5 + 5.4 + 0.1 = 10 exactly: reached
        False,
    ]
    assert kinds(app, key.id).count("Paused") == 1
    now = datetime.now(UTC)
    paused = app.repository.get(key.id)
    assert paused.usage_micros(now) == 13_000_000 and not paused.is_active(now)
    with pytest.raises(KeyInactive) as refused:
        read_secret(app, key.id, READER)
    assert refused.value.details["reason"] == "usage_limit_reached"
    next_month = month_after(now.strftime("%Y-%m")) + timedelta(hours=1)
    assert read_secret(app, key.id, READER, now=next_month) == KEY  # the pause ends


def test_an_admin_resumes_a_paused_key_and_a_new_limit_is_reached_anew(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id, usage_limit_monthly=Decimal("1"))
    assert use(app, org_id, key.id, "1")
    update_provider_key(app, org_id, key.id, UpdateProviderKey(is_active=True))
    assert read_secret(app, key.id, READER) == KEY
    assert not use(app, org_id, key.id, "1")  # the same limit does not fire twice
    raised = UpdateProviderKey.model_validate({"usage_limit_monthly": 3})
    update_provider_key(app, org_id, key.id, raised)
    assert use(app, org_id, key.id, "1")  # 3 of 3
    assert kinds(app, key.id).count("Paused") == 2


def test_lowering_the_limit_below_this_months_cost_pauses_at_once(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id)
    use(app, org_id, key.id, "5")
    lowered = UpdateProviderKey.model_validate({"usage_limit_monthly": 2})
    updated = update_provider_key(app, org_id, key.id, lowered)
    assert not updated.is_active(datetime.now(UTC))
    [paused] = [e for e in app.events.get(key.id) if isinstance(e, ProviderKey.Paused)]
    assert paused.cost_micros == 5_000_000 and paused.limit_micros == 2_000_000


def test_a_back_dated_record_counts_against_its_own_month(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id, usage_limit_monthly=Decimal("10"))
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    use(app, org_id, key.id, "9", at=last_month)
    assert not use(app, org_id, key.id, "9")  # this month: 9 of 10
    assert use(app, org_id, key.id, "1", at=last_month)  # last month: 10 of 10
    assert app.repository.get(key.id).is_active(datetime.now(UTC))  # that pause is over


def test_money_never_loses_a_micro_unit(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id)
    for _ in range(10):
        use(app, org_id, key.id, "0.1")
        use(app, org_id, key.id, "0.000001")
    assert app.repository.get(key.id).usage_micros(datetime.now(UTC)) == 1_000_010
    for bad in ("0.0000001", "-1", "1000000000.5"):
        with pytest.raises(ValidationError):
            RecordUsage.model_validate({"requests_count": 1, "tokens_used": 1, "cost": bad})


def test_limit_reached_becomes_one_api_key_limit_reached_webhook(app: Flowledger) -> None:
    org_id = organization(app)
    key = stored(app, org_id, usage_limit_monthly=Decimal("2.5"))
    use(app, org_id, key.id, "2")
    use(app, org_id, key.id, "1")
    use(app, org_id, key.id, "1")
    items = [o for e in app.events.get(key.id) for o in outgoing(app, e)]
    [item] = items
    sent = body(item, "acme")
    assert sent["event"] == "api_key.limit_reached" and sent["organization_id"] == str(org_id)
    assert sent["data"]["usage_current"] == 3.0 and sent["data"]["usage_limit_monthly"] == 2.5
    assert sent["data"]["key_hint"] == "...wxyz" and KEY not in str(sent)
    [paused] = [e for e in app.events.get(key.id) if isinstance(e, ProviderKey.Paused)]
    broker.setup(Settings())  # the in-process broker, before the actors are declared
    from workers.dispatcher import sends_for

    [send] = sends_for([Item(1, paused)])
    assert send.actor.actor_name == "fan_out_many"
    assert send.args == ([[str(key.id), paused.originator_version]],)


def test_commands_never_show_the_key_in_a_repr_or_a_validation_error() -> None:
    cmd = CreateProviderKey.model_validate({"provider": "openai", "key_name": "k", "api_key": KEY})
    assert KEY not in repr(cmd) and KEY not in str(cmd.model_dump())
    with pytest.raises(ValidationError) as refused:
        CreateProviderKey.model_validate(
            {"provider": "Not Valid", "key_name": "k", "api_key": KEY + " x"}
        )
    assert KEY not in str(refused.value)
