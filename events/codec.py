"""The library's JSON transcoder, decoding with orjson.

Every load of an aggregate, every projector batch and every rebuild decodes stored events;
with the library's `JSONTranscoder` that is `json` plus a Python `object_hook` called for
every dict, about two thirds of a replayed event's decoding. This transcoder writes exactly
what the library writes (its `encode` is inherited), and reads the same objects back:

* orjson parses the bytes (C, several times faster than `json`);
* the library's `{"_type_": name, "_data_": data}` wrappers are then turned back into their
  objects. Event states keep them at the top level (the timestamp, ids), so those are
  converted in place; when the raw bytes hold more `"_type_"` keys than were converted there
  (a wrapper nested in a payload, or a user's own `_type_` key), the whole tree is walked
  bottom-up as the library's hook would have done;
* what orjson reads differently or refuses goes to the library: NaN and infinities (refused),
  and integers of 19 digits or more (orjson turns those beyond 64 bits into floats), found
  by one scan of the bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID, SafeUUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
    TranscodingNotRegisteredError,
    UUIDAsHex,
    find_id_convertor,
)

_NEEDLE = b'"_type_"'
_CONTAINERS = (dict, list)
# Digits to "9", everything else to " ": a run of 19 digits is then one substring search
# (five times cheaper than a regular expression; a run inside a string only costs a
# fallback to the library).
_DIGITS = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"9" * 19


_ESCAPED = "flowledger_dict"


class _EscapedDict:
    """Marker type of the `flowledger_dict` transcoding (never instantiated)."""


class EscapedDictAsPairs(Transcoding):
    """A payload's own object with a `_type_` key, stored as its pairs.

    The library's decoder turns every `{"_type_": ..., "_data_": ...}` it reads into an
    object of that transcoding, so a client sending such an object (in an execution's input,
    an n8n result, an event's data) would have it turned into a UUID or a date, or make the
    aggregate unreadable. `FastJSONTranscoder.encode` stores those objects as pairs under
    this name instead, and they are read back as the dict that was sent.
    """

    type = _EscapedDict
    name = _ESCAPED

    def encode(self, obj: Any) -> Any:
        raise TypeError("built by FastJSONTranscoder.encode, never encoded by type")

    def decode(self, data: list[list[Any]]) -> dict[str, Any]:
        return {key: value for key, value in data}


def _escape(value: Any) -> Any:
    """`value` with every dict that has a `_type_` key replaced by its escaped pairs."""
    if isinstance(value, dict):
        walked = {key: _escape(item) for key, item in value.items()}
        if "_type_" in walked:
            return {"_type_": _ESCAPED, "_data_": [[k, v] for k, v in walked.items()]}
        return walked
    if isinstance(value, (list, tuple)):
        return [_escape(item) for item in value]
    return value


class FastJSONTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()  # wrappers written by the current thread's encode
        self.register(EscapedDictAsPairs())

    def encode(self, obj: Any) -> bytes:
        """The library's encoding; when the bytes hold a `"_type_"` the library's wrappers
        do not account for (a payload's own key), encoded again with such objects escaped."""
        local = self._local
        local.wrapped = 0
        data = super().encode(obj)
        if data.count(_NEEDLE) != local.wrapped:
            data = super().encode(_escape(obj))
        return data

    def _encode_obj(self, o: Any) -> dict[str, Any]:
        self._local.wrapped = getattr(self._local, "wrapped", 0) + 1
        return super()._encode_obj(o)

    def decode(self, data: bytes) -> Any:
        if _LONG_RUN in data.translate(_DIGITS):
            return super().decode(data)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        wrapped = data.count(_NEEDLE)
        if not wrapped:
            return obj
        if type(obj) is dict and self._top_level(obj, wrapped) == wrapped:
            return obj
        return self._walk(obj)

    def _top_level(self, obj: dict[str, Any], wrapped: int) -> int:
        """Convert the top-level wrappers whose data is a plain value; how many (it stops
        once all `wrapped` of the bytes are converted: the rest holds none)."""
        converted = 0
        for key, value in obj.items():
            if (
                type(value) is dict
                and len(value) == 2
                and "_type_" in value
                and "_data_" in value
                and type(value["_data_"]) not in _CONTAINERS
            ):
                obj[key] = self._unwrap(value)
                converted += 1
                if converted == wrapped:
                    break
        return converted

    def _walk(self, value: Any) -> Any:
        """The library's object hook, applied bottom-up to every dict of the tree."""
        if type(value) is list:
            for i, item in enumerate(value):
                if type(item) in _CONTAINERS:
                    value[i] = self._walk(item)
            return value
        for key, item in value.items():
            if type(item) in _CONTAINERS:
                value[key] = self._walk(item)
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return self._unwrap(value)
        return value

    def _unwrap(self, value: dict[str, Any]) -> Any:
        try:
            transcoding = self.names[value["_type_"]]
        except KeyError as e:
            msg = (
                f"Data serialized with name '{value['_type_']}' is not deserializable. "
                "Please register a custom transcoding for this type."
            )
            raise TranscodingNotRegisteredError(msg) from e
        return transcoding.decode(value["_data_"])


class FastUUIDAsHex(UUIDAsHex):
    """The library's `uuid_hex`, read back without `UUID.__init__`'s string handling (a
    third of decoding an event with three ids). Anything but 32 letters and digits goes
    through `UUID` itself, so what it refuses is still refused."""

    def decode(self, data: str) -> UUID:
        if len(data) != 32 or not data.isalnum():
            return UUID(data)
        value = object.__new__(UUID)
        object.__setattr__(value, "int", int(data, 16))  # ValueError for non-hex, as UUID
        object.__setattr__(value, "is_safe", SafeUUID.unknown)
        return value


class FastMapper(Mapper[UUID]):
    """The library's `Mapper`, with what it looks up for every event (the class of a topic,
    its id converter and class version) looked up once per topic. Ciphers, compressors and
    versioned (upcast) events take the library's own path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known: dict[str, tuple[type, Callable[[Any], Any]]] = {}

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        known = self._known.get(stored_event.topic)
        if known is None or self.cipher or self.compressor:
            return self._first(stored_event)
        try:
            state = self.transcoder.decode(stored_event.state)
        except Exception:  # the library's own error, with its message
            return super().to_domain_event(stored_event)
        if "class_version" in state:
            return super().to_domain_event(stored_event)
        cls, id_convertor = known
        state["originator_id"] = id_convertor(stored_event.originator_id)
        state["originator_version"] = stored_event.originator_version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def _first(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        event = super().to_domain_event(stored_event)
        cls = type(event)
        if getattr(cls, "class_version", 1) == 1 and not (self.cipher or self.compressor):
            convertor = find_id_convertor(cls, type(stored_event.originator_id))  # type: ignore[arg-type]
            self._known[stored_event.topic] = (cls, convertor)
        return event
