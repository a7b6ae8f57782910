"""The audit read model: a hash chain over the whole notification log, and an index of it.

Unlike the other read models it follows every event (no topic filter), so it overrides
`process` and appends each batch with one bulk write per table (a projection that commits
once per event manages under 1,000 events/s; this one is rebuilt over a million).

* `audit_chain(position, hash)`: hash_n = SHA-256(hash_{n-1} || link bytes of the stored
  row n), genesis 32 zero bytes, over the rows present in position order (ids may have
  gaps). `flowledger audit verify` recomputes it from the raw events table.
* `audit_events`: which organization each event belongs to, with the `/audit/log` item's
  columns and its redacted data; `audit_owners`: the organization (and type) of each
  aggregate whose created event named one, so its later events belong to it too.

Secrets never reach these tables: `redact` runs before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from events.organization import Organization
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso
from projections.runner import Item, Projection

GENESIS = bytes(32)
REDACTED = "[REDACTED]"

TABLES = [
    "CREATE TABLE IF NOT EXISTS audit_chain (position BIGINT PRIMARY KEY, hash TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS audit_events (
        position BIGINT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        version BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        actor TEXT,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_events_org ON audit_events (organization_id, position)",
    "CREATE INDEX IF NOT EXISTS audit_events_aggregate ON audit_events (aggregate_id, position)",
    "CREATE INDEX IF NOT EXISTS audit_events_type "
    "ON audit_events (organization_id, event_type, position)",
    """CREATE TABLE IF NOT EXISTS audit_owners (
        aggregate_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        aggregate_type TEXT NOT NULL
    )""",
]

# -- the hash chain ------------------------------------------------------------------------


_HEAD = struct.Struct(">qI").pack  # a number, then the length of the text after it
_SIZE = struct.Struct(">Q").pack


def link(previous: bytes, position: int, oid: str, version: int, topic: str, state: Any) -> bytes:
    """The next hash: every field length-prefixed, so no two rows encode alike.

    `oid` is the originator id as `canonical_id` gives it. `state` is the stored bytes; a
    row edited in SQL may hold text or NULL instead, which hashes as its UTF-8 bytes or as
    nothing (and so differs)."""
    if type(state) is not bytes:
        state = (b"" if state is None else str(state).encode()) if not isinstance(
            state, (bytearray, memoryview)) else bytes(state)  # fmt: skip
    o, t = oid.encode(), topic.encode()
    return hashlib.sha256(
        b"".join((previous, _HEAD(position, len(o)), o, _HEAD(version, len(t)), t,
                  _SIZE(len(state)), state))
    ).digest()  # fmt: skip


def canonical_id(value: Any) -> str:
    """The id as `str(UUID)`, whichever way the store keeps it (PostgreSQL: uuid; SQLite:
    32 hex digits); anything that is not a UUID stays as stored."""
    if isinstance(value, UUID):
        return str(value)
    try:
        return str(UUID(str(value)))
    except ValueError:
        return str(value)


# -- redaction -----------------------------------------------------------------------------

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


def redact(value: Any) -> Any:
    """`value` made JSON-safe with every secret-like field replaced by "[REDACTED]".

    The one redaction of the audit surface (log, history, time travel, export): fields
    named like secrets, sealed values (`{key_id, nonce, ciphertext}`), and strings that
    look like our keys or bearer tokens, at any depth.
    """
    if isinstance(value, dict):
        if value.keys() >= _SEALED:
            return REDACTED
        return {str(k): REDACTED if is_secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((redact(v) for v in value), key=str)
    if isinstance(value, str):
        return REDACTED if _SECRET_VALUE.match(value) else value
    if value is None or isinstance(value, (bool, int, float)):
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


# -- what each event is ------------------------------------------------------------------

_ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def event_type(topic: str) -> str:
    """`events.execution:Execution.Started` → `Execution.Started`."""
    return topic.rpartition(":")[2]


def event_data(event: Any) -> dict[str, Any]:
    """The event's own fields (not the envelope), redacted."""
    fields = {k: v for k, v in vars(event).items() if k not in _ENVELOPE}
    redacted: dict[str, Any] = redact(fields)
    return redacted


def actor_of(event: Any, name: str) -> str | None:
    """Who acted, when the event itself says so (commands do not record the caller yet):
    the user for an organization's creation and a user's own events, the trigger that
    queued a run, the source of an automation event; otherwise unknown (null)."""
    if name == "Organization.Created":
        return f"user:{event.owner_id}"
    if name.startswith("User."):
        return f"user:{event.originator_id}"
    if name == "Execution.Queued":
        return f"trigger:{event.trigger}"
    if name == "AutomationEvent.Received":
        return f"source:{event.source}"
    return None


class AuditProjection(Projection):
    name = "audit"
    tables = TABLES
    # No handlers, so no topics: the follower reads the whole log.

    def __init__(self) -> None:
        self._owners: dict[str, tuple[str, str]] = {}  # aggregate id → (org id, type)

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        last = cur.execute("SELECT position, hash FROM audit_chain ORDER BY position DESC LIMIT 1")
        done, previous = (
            (int(last[0]["position"]), bytes.fromhex(last[0]["hash"])) if last else (0, GENESIS)
        )
        items = [i for i in items if i.position > done and i.notification is not None]
        if not items:
            return
        if len(self._owners) > 200_000:  # bounded memory: the table is the truth
            self._owners.clear()
        self._load_owners(cur, items)
        chain: list[tuple[Any, ...]] = []
        rows: list[tuple[Any, ...]] = []
        owners: list[tuple[Any, ...]] = []
        for item in items:
            n = item.notification
            assert n is not None
            oid = canonical_id(n.originator_id)
            previous = link(previous, item.position, oid, n.originator_version, n.topic, n.state)
            chain.append((item.position, previous.hex()))
            row, owner = self._index(item)
            if row is not None:
                rows.append(row)
            if owner is not None:
                owners.append(owner)
        # Only positions after the chain's top get here, in the transaction that records
        # the position, so these rows are new: appended in bulk (COPY on PostgreSQL).
        cur.copy_rows("audit_chain", ("position", "hash"), chain)
        cur.copy_rows("audit_owners", ("aggregate_id", "organization_id", "aggregate_type"),
                      owners)  # fmt: skip
        columns = ("position", "organization_id", "aggregate_id", "aggregate_type", "version",
                   "event_type", "occurred_at", "actor", "data")  # fmt: skip
        cur.copy_rows("audit_events", columns, rows)

    def _index(self, item: Item) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
        """The `audit_events` row of an item (None: no organization) and a new owner."""
        n, event = item.notification, item.event
        assert n is not None
        name = event_type(n.topic)
        aggregate_type = name.partition(".")[0]
        aggregate_id = str(n.originator_id)
        owner = None
        org_id: str | None
        known = self._owners.get(aggregate_id)
        if known is not None:
            org_id = known[0]
        elif isinstance(event, Organization.Created):
            org_id = aggregate_id
        else:
            named = getattr(event, "organization_id", None)
            org_id = str(named) if isinstance(named, UUID) else None
        # A created event is processed once per committed batch (positions after the
        # chain's top only), so its owner row is written then, whatever memory holds.
        if org_id is not None and n.originator_version == 1:
            owner = (aggregate_id, org_id, aggregate_type)
            self._remember(aggregate_id, (org_id, aggregate_type))
        if org_id is None:
            return None, None
        row = (
            item.position, org_id, aggregate_id, aggregate_type, n.originator_version, name,
            iso(event.timestamp), actor_of(event, name), dumps(event_data(event)),
        )  # fmt: skip
        return row, owner

    def _load_owners(self, cur: Cursor, items: Sequence[Item]) -> None:
        """Owners of this batch's aggregates not in memory: one query per batch."""
        missing = {
            str(i.notification.originator_id)
            for i in items
            if i.notification is not None and i.notification.originator_version > 1
        } - self._owners.keys()
        wanted = sorted(missing)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            for row in cur.execute(
                "SELECT aggregate_id, organization_id, aggregate_type FROM audit_owners"
                f" WHERE aggregate_id IN ({marks})",
                chunk,
            ):
                self._remember(row["aggregate_id"], (row["organization_id"], row["aggregate_type"]))

    def _remember(self, aggregate_id: str, owner: tuple[str, str]) -> None:
        self._owners[aggregate_id] = owner


# -- queries ---------------------------------------------------------------------------------

ITEM_COLUMNS = (
    "position, aggregate_id, aggregate_type, version, event_type, occurred_at, actor, data"
)


def item_json(row: dict[str, Any]) -> dict[str, Any]:
    """An `/audit/log` item from its row."""
    return {
        "position": int(row["position"]),
        "aggregate_id": row["aggregate_id"],
        "aggregate_type": row["aggregate_type"],
        "version": int(row["version"]),
        "event_type": row["event_type"],
        "occurred_at": row["occurred_at"],
        "actor": row["actor"],
        "data": json.loads(row["data"]),
    }


def _item_sql(dialect: str) -> str:
    """An item as JSON text concatenated by the database (`data` is JSON text already,
    strings are quoted by it), so a page of 1000 costs no decoding or encoding in Python."""
    quote = "to_json({})::text" if dialect == "postgres" else "json_quote({})"
    parts: list[str] = []
    for column in ("position", "aggregate_id", "aggregate_type", "version", "event_type",
                   "occurred_at", "actor", "data"):  # fmt: skip
        value: str = column
        if column not in ("position", "version", "data"):
            value = f"COALESCE({quote.format(column)}, 'null')"
        parts.append(f"'{',' if parts else '{'}\"{column}\":' || {value}")
    return " || ".join(parts) + " || '}'"


def log_page(
    db: Database,
    org_id: Any,
    *,
    after: int = 0,
    limit: int = 100,
    event_type: str | None = None,
    aggregate_id: Any = None,
) -> str:
    """The `/audit/log` answer as JSON text: the organization's events after `after`, oldest
    first, and `next_after` (null when this page reached the end: one row more than asked
    tells whether more follow)."""
    where = ["organization_id = %s", "position > %s"]
    params: list[Any] = [str(org_id), after]
    if event_type is not None:
        where.append("event_type = %s")
        params.append(event_type)
    if aggregate_id is not None:
        where.append("aggregate_id = %s")
        params.append(str(aggregate_id))
    # The page first (the (organization_id, position) index, in order), then its JSON: only
    # for the rows returned, never for every row of the organization.
    rows = db.query(
        f"SELECT position, {_item_sql(db.dialect)} AS item FROM (SELECT {ITEM_COLUMNS}"
        f" FROM audit_events WHERE {' AND '.join(where)} ORDER BY position LIMIT %s) AS page"
        " ORDER BY position",
        [*params, limit + 1],
    )
    next_after = int(rows[limit - 1]["position"]) if len(rows) > limit else None
    items = ",".join(str(row["item"]) for row in rows[:limit])
    return f'{{"items":[{items}],"next_after":{json.dumps(next_after)}}}'


def owner_of(db: Database, aggregate_id: Any) -> tuple[str, str] | None:
    """(organization id, aggregate type) of an aggregate that belongs to an organization."""
    row = db.one(
        "SELECT organization_id, aggregate_type FROM audit_owners WHERE aggregate_id = %s",
        (str(aggregate_id),),
    )
    return (row["organization_id"], row["aggregate_type"]) if row else None


def history(db: Database, org_id: Any, aggregate_id: Any) -> list[dict[str, Any]]:
    """Every indexed event of one aggregate of the organization, oldest first."""
    rows = db.query(
        f"SELECT {ITEM_COLUMNS} FROM audit_events WHERE aggregate_id = %s AND organization_id = %s"
        " ORDER BY position",
        (str(aggregate_id), str(org_id)),
    )
    return [item_json(row) for row in rows]
