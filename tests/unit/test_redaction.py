"""The audit index reads events from their stored JSON (`stored_data`); what it shows must
be exactly what redacting the decoded event shows (`event_data`), secrets included."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import projections.audit
from events.application import Flowledger
from projections.audit import AuditProjection
from projections.formats import dumps
from projections.redaction import (
    REDACTED,
    Unreadable,
    event_data,
    stored_data,
    stored_fields,
)
from projections.runner import projection_follower, record_position
from tests.support.read_models import varied_log
from tests.unit.test_codec import FAST, same, trees

secret_keys = st.sampled_from(
    ["api_key", "client_secret", "token_hash", "key_id", "nonce", "ciphertext", "tokens_used",
     "password", "name", "_type_", "_data_", "timestamp", "originator_topic"]
)  # fmt: skip
secret_values = st.sampled_from(
    ["fl_live_" + "a" * 20, "Bearer abc", "cs_" + "b" * 20, "whsec_" + "c" * 24, "rt_short", "hi"]
)
sealed = st.fixed_dictionaries(
    {"key_id": st.text(max_size=4), "nonce": st.text(max_size=4), "ciphertext": st.text(max_size=4)}
)
payloads = st.recursive(
    trees | secret_values | sealed,
    lambda children: (
        st.dictionaries(secret_keys | st.text(max_size=6), children, max_size=4)
        | st.lists(children, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(secret_keys | st.text(max_size=6), payloads, max_size=6))
def test_the_stored_json_shows_what_the_decoded_event_shows(state: dict[str, Any]) -> None:
    data = FAST.encode(state)  # as the application stores it (a user's `_type_` escaped)
    expected = event_data(SimpleNamespace(**FAST.decode(data)))
    try:
        shown = stored_data(stored_fields(data))
    except Unreadable:  # a type the application never stores, or a long integer
        return
    assert same(shown, expected)
    assert dumps(shown) == dumps(expected)


def test_what_it_cannot_read_it_says_so() -> None:
    unknown = b'{"x":{"_type_":"frozenset_as_list","_data_":[]}}'
    for data in (b'{"x":NaN}', b'{"n":12345678901234567890123}', b"[1]", b"\x78\x9c",
                 b'{"class_version":2}', unknown):  # fmt: skip
        with pytest.raises(Unreadable):
            stored_data(stored_fields(data))


def test_secrets_are_redacted_in_the_stored_reading() -> None:
    state = {
        "client_secret": {"key_id": "k", "nonce": "n", "ciphertext": "c"},
        "input": {"token": "t", "note": "Bearer xyz", "nested": [{"api_key": "k"}]},
        "url": "https://example.com",
    }
    shown = stored_data(stored_fields(FAST.encode(state)))
    assert shown == {
        "client_secret": REDACTED,
        "input": {"token": REDACTED, "note": REDACTED, "nested": [{"api_key": REDACTED}]},
        "url": "https://example.com",
    }


def test_the_index_from_stored_json_equals_the_index_from_decoded_events(
    app: Flowledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    varied_log(app, 300)
    projection_follower(app, AuditProjection()).catch_up()
    stored = app.db.query("SELECT * FROM audit_events ORDER BY position")
    owners = app.db.query("SELECT * FROM audit_owners ORDER BY aggregate_id")
    assert len(stored) > 300 and owners

    def unreadable(state: Any) -> Any:
        raise Unreadable("as if no event could be read from its JSON")

    with app.db.transaction() as cur:
        cur.execute("DELETE FROM audit_events")
        cur.execute("DELETE FROM audit_owners")
        record_position(cur, "audit", 0)
    monkeypatch.setattr(projections.audit, "stored_fields", unreadable)
    projection_follower(app, AuditProjection()).catch_up()  # every event decoded instead
    assert app.db.query("SELECT * FROM audit_events ORDER BY position") == stored
    assert app.db.query("SELECT * FROM audit_owners ORDER BY aggregate_id") == owners
