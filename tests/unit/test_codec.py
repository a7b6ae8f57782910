"""The orjson transcoder reads back exactly what the library's own transcoder reads back."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from events.codec import FastJSONTranscoder, FastUUIDAsHex


class FrozensetAsList(Transcoding):
    """A transcoding whose data is a container, so wrappers nest inside wrappers."""

    type = frozenset
    name = "frozenset_as_list"

    def encode(self, obj: frozenset[Any]) -> list[Any]:
        return sorted(obj)

    def decode(self, data: list[Any]) -> frozenset[Any]:
        return frozenset(data)


def transcoders() -> tuple[JSONTranscoder, FastJSONTranscoder]:
    library, fast = JSONTranscoder(), FastJSONTranscoder()
    for t in (library, fast):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), FrozensetAsList()):
            t.register(transcoding)
    fast.register(FastUUIDAsHex())
    return library, fast


LIBRARY, FAST = transcoders()

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC))
)
keys = st.sampled_from(["_type_", "_data_", "id", "at", "é"]) | st.text(max_size=8)
trees = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.frozensets(st.uuids(), max_size=3)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, including the types (1 == 1.0 == True would hide a difference)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, trees, max_size=6))
def test_any_event_state_decodes_as_the_library_decodes_it(state: dict[str, Any]) -> None:
    data = LIBRARY.encode(state)
    assert same(outcome(FAST, data), outcome(LIBRARY, data))


def outcome(transcoder: JSONTranscoder, data: bytes) -> Any:
    """What decoding gives: the object, or the class of the error it raises."""
    try:
        return transcoder.decode(data)
    except Exception as e:  # a payload the library cannot read back is refused alike
        return type(e).__name__


def test_an_event_state_with_wrappers_at_the_top() -> None:
    state = {
        "timestamp": datetime(2027, 3, 28, 1, 0, tzinfo=UTC),
        "organization_id": UUID(int=7),
        "cost": Decimal("0.01"),
        "input": {"text": "héllo", "n": [1, 2.5, None]},
    }
    data = LIBRARY.encode(state)
    assert data.count(b'"_type_"') == 3
    assert same(FAST.decode(data), state)


def test_wrappers_nested_in_payloads_and_in_wrappers() -> None:
    state = {
        "ids": frozenset({UUID(int=1), UUID(int=2)}),
        "deep": {
            "list": [{"at": datetime(2027, 10, 31, 2, 30, tzinfo=timezone(timedelta(hours=1)))}]
        },
    }
    data = LIBRARY.encode(state)
    assert same(FAST.decode(data), LIBRARY.decode(data))
    assert FAST.decode(data)["ids"] == frozenset({UUID(int=1), UUID(int=2)})


def test_a_users_own_type_key_is_left_as_the_library_leaves_it() -> None:
    data = b'{"input":{"_type_":"mine","other":1},"s":"\\"_type_\\""}'
    assert same(FAST.decode(data), LIBRARY.decode(data))


def test_what_orjson_refuses_goes_to_the_library() -> None:
    data = b'{"x":NaN,"big":123456789012345678901234567890,"low":-9223372036854775809}'
    decoded = FAST.decode(data)
    assert math.isnan(decoded["x"]) and decoded["big"] == 123456789012345678901234567890
    assert decoded["low"] == -9223372036854775809 and type(decoded["low"]) is int


def test_an_unknown_wrapper_is_refused_like_the_library_refuses_it() -> None:
    data = b'{"x":{"_type_":"nope","_data_":1}}'
    for transcoder in (LIBRARY, FAST):
        with pytest.raises(TranscodingNotRegisteredError):
            transcoder.decode(data)


@pytest.mark.parametrize(
    "data",
    ["00000000000000000000000000000007", "ABCDEF0123456789abcdef0123456789", "0" * 31 + "g",
     "-" + "0" * 31, "{" + "0" * 30 + "}", "0" * 33, "", "1_" + "0" * 30, " " + "0" * 31],
)  # fmt: skip
def test_a_uuid_is_read_back_as_uuid_reads_it(data: str) -> None:
    try:
        expected: Any = UUID(data)
    except ValueError:
        with pytest.raises(ValueError):
            FastUUIDAsHex().decode(data)
        return
    got = FastUUIDAsHex().decode(data)
    assert got == expected and str(got) == str(expected) and hash(got) == hash(expected)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, trees, max_size=6))
def test_what_this_transcoder_writes_it_reads_back_as_written(state: dict[str, Any]) -> None:
    """Objects with the library's `_type_`/`_data_` keys included: they are escaped."""
    assert same(FAST.decode(FAST.encode(state)), normal(state))


def normal(value: Any) -> Any:
    """What JSON keeps of a value: tuples become lists."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    return value


def test_a_payload_shaped_like_a_wrapper_is_escaped_and_the_rest_is_written_as_before() -> None:
    plain = {"at": datetime(2027, 1, 1, tzinfo=UTC), "id": UUID(int=3), "note": "_type_"}
    assert FAST.encode(plain) == LIBRARY.encode(plain)  # nothing to escape: the same bytes
    tricky = {"input": {"_type_": "uuid_hex", "_data_": "zz"}, "at": plain["at"]}
    data = FAST.encode(tricky)
    assert b"flowledger_dict" in data
    assert same(FAST.decode(data), tricky)
    with pytest.raises(ValueError):
        LIBRARY.decode(LIBRARY.encode(tricky))  # what the library alone does with it
