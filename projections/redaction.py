"""Redaction: what the audit surface shows of an event, with secrets replaced.

Two readers that must agree, row for row (`tests/unit/test_redaction.py` holds them to it):
`redact` and `event_data` work on decoded objects (history, time travel, export, and any
stored event the other cannot read); `stored_fields` works on an event's STORED JSON, the
library's `{"_type_", "_data_"}` wrappers read straight as the text `redact` would have
made of their objects (an id's canonical form, a time in `iso`), so the audit index is
built, and rebuilt over millions of events, without decoding a single event.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from projections.formats import iso, uuid_text

REDACTED = "[REDACTED]"

# Key words (split on `_`, `-` and case) that mark a value as secret; whole words, so
# `tokens_used` or `key_id` stay visible while `token_hash`, `client_secret` do not.
_SECRET_WORDS = frozenset({
    "secret", "secrets", "password", "passwd", "token", "hash", "sealed", "ciphertext",
    "credential", "credentials", "signature", "authorization", "apikey", "cookie", "nonce",
    "wrapped", "private",
})  # fmt: skip
_SECRET_KEYS = frozenset({"api_key", "x-api-key", "access_key", "private_key", "refresh_token"})
# Our own tokens (API keys, client secrets, refresh tokens, webhook secrets) and bearer ones.
_SECRET_VALUE = re.compile(r"^((fl_live_|cs_|rt_|whsec_)[A-Za-z0-9_+/=-]{16,}|bearer\s)", re.I)
_WORD = re.compile(r"[A-Za-z][a-z0-9]*|[A-Z]+(?![a-z])")
_SEALED = frozenset({"key_id", "nonce", "ciphertext"})


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    lowered = name.lower()
    if lowered in _SECRET_KEYS:
        return True
    return any(word.lower() in _SECRET_WORDS for word in _WORD.findall(name))


_FIRST = frozenset("fFcCrRwWbB")  # what every `_SECRET_VALUE` match starts with


def _redact_text(value: str) -> str:
    """A string shaped like one of our keys or a bearer token, replaced."""
    return REDACTED if value[:1] in _FIRST and _SECRET_VALUE.match(value) else value


def redact(value: Any) -> Any:
    """`value` made JSON-safe with every secret-like field replaced by "[REDACTED]".

    The one redaction of the audit surface (log, history, time travel, export): fields
    named like secrets, sealed values (`{key_id, nonce, ciphertext}`), and strings that
    look like our keys or bearer tokens, at any depth. It runs on every event a rebuild of
    the index replays, so the common exact types are tried first.
    """
    t = type(value)
    if t is str:
        return _redact_text(value)
    if t is dict:
        if len(value) >= 3 and value.keys() >= _SEALED:
            return REDACTED
        return {
            (k if type(k) is str else str(k)): REDACTED if is_secret_key(str(k)) else redact(v)
            for k, v in value.items()
        }
    if value is None or t is int or t is bool or t is float:
        return value
    if t is UUID:
        return uuid_text(value)
    if t is datetime:
        return iso(value)
    return _redact_other(value)


def _redact_other(value: Any) -> Any:
    """`redact` of the rarer types and of subclasses."""
    if isinstance(value, dict):
        return redact(dict(value))
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((redact(v) for v in value), key=str)
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return REDACTED  # raw bytes are keys, digests or ciphertext here
    if hasattr(value, "__dict__"):
        return redact(public_fields(value))
    return str(value)


def public_fields(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


_ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def event_data(event: Any) -> dict[str, Any]:
    """The event's own fields (not the envelope), redacted."""
    return _own_fields(vars(event), redact)


def _own_fields(fields: dict[str, Any], redact_value: Callable[[Any], Any]) -> dict[str, Any]:
    """`fields` without the envelope, secret-named ones replaced, the rest `redact_value`d."""
    return {
        key: REDACTED if is_secret_key(key) else redact_value(value)
        for key, value in fields.items()
        if key not in _ENVELOPE
    }


# -- the stored JSON ---------------------------------------------------------------------


class Unreadable(Exception):
    """Stored state `stored_fields` does not read (compressed or encrypted, upcast, a type
    it does not know): the caller decodes the event through the library instead."""


# Digits to "9", the rest to " ": a run of 19 digits (an integer orjson may read as a
# float) is then one substring search, as in `events/codec.py`.
_DIGITS = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"9" * 19


def stored_fields(state: Any) -> dict[str, Any]:
    """The stored event's own fields, as the library would decode them, wrappers as text
    (`timestamp` and `originator_topic` included: the caller takes them out)."""
    if type(state) is not bytes or _LONG_RUN in state.translate(_DIGITS):
        raise Unreadable("not plain JSON bytes, or a long integer")
    try:
        obj = orjson.loads(state)
    except orjson.JSONDecodeError:
        raise Unreadable("not JSON orjson reads") from None
    if type(obj) is not dict or "class_version" in obj or "_type_" in obj:
        raise Unreadable("not an unversioned event's fields")
    return obj


def stored_text(value: Any) -> Any:
    """A top-level stored value as `redact` would show its object, without redaction."""
    if type(value) is dict and len(value) == 2 and "_type_" in value and "_data_" in value:
        return _unwrapped(value["_type_"], value["_data_"])
    return value


def stored_data(fields: dict[str, Any]) -> dict[str, Any]:
    """`event_data` of the event whose stored fields these are."""
    return _own_fields(fields, _redact_stored)


def _redact_stored(value: Any) -> Any:
    t = type(value)
    if t is str:
        return _redact_text(value)
    if t is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return _unwrapped(value["_type_"], value["_data_"])
        return _redact_stored_dict(value)
    if t is list:
        return [_redact_stored(v) for v in value]
    return value  # numbers, booleans, null


def _redact_stored_dict(value: dict[str, Any]) -> Any:
    if len(value) >= 3 and value.keys() >= _SEALED:
        return REDACTED
    return {k: REDACTED if is_secret_key(k) else _redact_stored(v) for k, v in value.items()}


def _unwrapped(name: Any, data: Any) -> Any:
    """A wrapper's value as `redact` shows the object the library would decode."""
    if name == "uuid_hex" and type(data) is str and len(data) == 32:
        h = data.lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if name == "datetime_iso" and type(data) is str:
        return iso(datetime.fromisoformat(data))
    if name == "decimal_str" and type(data) is str:
        return str(Decimal(data))
    if name == "flowledger_dict" and type(data) is list:  # a payload's dict with `_type_`
        return _redact_stored_dict({k: v for k, v in data})
    raise Unreadable(f"a stored {name!r} value")
