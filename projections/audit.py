"""The audit read models: a hash chain over the whole notification log, and an index of it.

Unlike the other read models they follow every event (no topic filter), so they override
`process` and append each batch with one bulk write per table (a projection that commits
once per event manages under 1,000 events/s; these are rebuilt over a million). They are
two read models because they replay differently: the chain is sequential and needs only
the stored bytes, the index decodes every event but each of its rows depends on one
aggregate, so a rebuild splits it by key into processes (`projections/rebuild.py`).

* `audit_chain(position, hash)` (`AuditChainProjection`): hash_n = SHA-256(hash_{n-1} ||
  link bytes of the stored row n), genesis 32 zero bytes, over the rows present in position
  order (ids may have gaps). `flowledger audit verify` recomputes it from the raw table.
* `audit_events` (`AuditProjection`): which organization each event belongs to, with the
  `/audit/log` item's columns and its redacted data; `audit_owners`: the organization (and
  type) of each aggregate whose created event named one, so its later events belong to it.

Secrets never reach these tables: `redact` runs before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from events.organization import Organization
from flowledger.db import Cursor, Database
from projections.formats import dumps, iso, uuid_text
from projections.redaction import (
    Unreadable,
    event_data,
    stored_data,
    stored_fields,
    stored_text,
)
from projections.runner import Item, Projection, topic_of

_ORGANIZATION_CREATED = topic_of(Organization.Created)

GENESIS = bytes(32)
REDACTED = "[REDACTED]"

CHAIN_TABLES = [
    "CREATE TABLE IF NOT EXISTS audit_chain (position BIGINT PRIMARY KEY, hash TEXT NOT NULL)",
]
INDEX_TABLES = [
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
TABLES = CHAIN_TABLES + INDEX_TABLES

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
    if type(value) is UUID:
        return uuid_text(value)
    if isinstance(value, UUID):
        return str(value)
    try:
        return str(UUID(str(value)))
    except ValueError:
        return str(value)


# -- what each event is ------------------------------------------------------------------


def event_type(topic: str) -> str:
    """`events.execution:Execution.Started` → `Execution.Started`."""
    return topic.rpartition(":")[2]


def _text(value: Any) -> str:
    return uuid_text(value) if type(value) is UUID else str(value)


@functools.lru_cache(maxsize=1024)
def _names(topic: str) -> tuple[str, str]:
    """(event type, aggregate type) of a topic: `Execution.Started`, `Execution`."""
    name = event_type(topic)
    return name, name.partition(".")[0]


def actor_of(name: str, aggregate_id: str, field: Callable[[str], Any]) -> str | None:
    """Who acted, when the event itself says so (commands do not record the caller yet):
    the user for an organization's creation and a user's own events, the trigger that
    queued a run, the source of an automation event; otherwise unknown (null). `field`
    gives one of the event's fields."""
    if name == "Organization.Created":
        return f"user:{field('owner_id')}"
    if name.startswith("User."):
        return f"user:{aggregate_id}"
    if name == "Execution.Queued":
        return f"trigger:{field('trigger')}"
    if name == "AutomationEvent.Received":
        return f"source:{field('source')}"
    return None


Described = tuple[str | None, str, str | None, dict[str, Any]]


def _described(item: Item, name: str, aggregate_id: str) -> Described:
    """(the organization id the event names, when, who, its redacted data): from the
    decoded event when the follower decoded it anyway (the projector, for the other read
    models), else from the stored JSON, decoding only what that cannot read (a rebuild)."""
    event = item.event
    if event is None:
        assert item.notification is not None
        try:
            return _from_stored(stored_fields(item.notification.state), name, aggregate_id)
        except Unreadable:
            event = item.domain_event()
    return _from_event(event, name, aggregate_id)


def _from_stored(fields: dict[str, Any], name: str, aggregate_id: str) -> Described:
    named = fields.get("organization_id")  # an owner only when it is an id
    is_id = type(named) is dict and named.get("_type_") == "uuid_hex"
    return (
        stored_text(named) if is_id else None,
        stored_text(fields["timestamp"]),
        actor_of(name, aggregate_id, lambda key: stored_text(fields[key])),
        stored_data(fields),
    )


def _from_event(event: Any, name: str, aggregate_id: str) -> Described:
    named = getattr(event, "organization_id", None)
    return (
        uuid_text(named) if isinstance(named, UUID) else None,
        iso(event.timestamp),
        actor_of(name, aggregate_id, functools.partial(getattr, event)),
        event_data(event),
    )


class AuditChainProjection(Projection):
    """The hash chain, `audit_chain`: it covers the stored bytes, so it reads the stored
    records and never decodes them. Sequential by nature (each hash needs the one before),
    so it is its own read model, apart from the index, which a rebuild can split by key."""

    name = "audit_chain"
    tables = CHAIN_TABLES
    decodes = False
    # No handlers, so no topics: the follower reads the whole log.

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        last = cur.execute("SELECT position, hash FROM audit_chain ORDER BY position DESC LIMIT 1")
        done, previous = (
            (int(last[0]["position"]), bytes.fromhex(last[0]["hash"])) if last else (0, GENESIS)
        )
        chain: list[tuple[Any, ...]] = []
        for item in items:
            n = item.notification
            if item.position <= done or n is None:
                continue
            oid = canonical_id(n.originator_id)
            previous = link(previous, item.position, oid, n.originator_version, n.topic, n.state)
            chain.append((item.position, previous.hex()))
        # Only positions after the chain's top get here, in the transaction that records
        # the position, so these rows are new: appended in bulk (COPY on PostgreSQL).
        cur.copy_rows("audit_chain", ("position", "hash"), chain)


class AuditProjection(Projection):
    """The index, `audit_events` and `audit_owners`: each row depends on one aggregate's
    events (its owner is named by its first), so a rebuild replays it in partitions."""

    name = "audit"
    tables = INDEX_TABLES
    keyed_by_originator = True
    decodes = False  # read from the stored JSON when not decoded (`_described`)
    # No handlers, so no topics: the follower reads the whole log.

    def __init__(self) -> None:
        # aggregate id → (org id, type), or None: it has none (its created event named none)
        self._owners: dict[str, tuple[str, str] | None] = {}

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        # A batch writes all its rows or none, so positions up to the last row are done
        # (a replay from an earlier tracking position writes nothing twice). Not so in a
        # partition of a rebuild: the other partitions' rows are there too, and it never
        # replays a position.
        done = 0
        if getattr(cur, "partition", None) is None:
            last = cur.execute("SELECT MAX(position) AS p FROM audit_events")
            done = int(last[0]["p"] or 0) if last else 0
        items = [i for i in items if i.position > done and i.notification is not None]
        if not items:
            return
        if len(self._owners) > 200_000:  # bounded memory: the table is the truth
            self._owners.clear()
        self._load_owners(cur, items)
        rows: list[tuple[Any, ...]] = []
        owners: list[tuple[Any, ...]] = []
        for item in items:
            row, owner = self._index(item)
            if row is not None:
                rows.append(row)
            if owner is not None:
                owners.append(owner)
        cur.copy_rows("audit_owners", ("aggregate_id", "organization_id", "aggregate_type"),
                      owners)  # fmt: skip
        columns = ("position", "organization_id", "aggregate_id", "aggregate_type", "version",
                   "event_type", "occurred_at", "actor", "data")  # fmt: skip
        cur.copy_rows("audit_events", columns, rows)

    def _index(self, item: Item) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
        """The `audit_events` row of an item (None: no organization) and a new owner."""
        n = item.notification
        assert n is not None
        name, aggregate_type = _names(n.topic)
        aggregate_id = _text(n.originator_id)
        org_named, occurred_at, actor, data = _described(item, name, aggregate_id)
        owner = None
        org_id: str | None
        known = self._owners.get(aggregate_id)
        if known is not None:
            org_id = known[0]
        elif n.topic == _ORGANIZATION_CREATED:
            org_id = aggregate_id
        else:
            org_id = org_named
        # A created event is processed once per committed batch (positions after the
        # index's last row only), so its owner row is written then, whatever memory holds.
        if n.originator_version == 1:
            if org_id is not None:
                owner = (aggregate_id, org_id, aggregate_type)
            self._owners[aggregate_id] = None if org_id is None else (org_id, aggregate_type)
        if org_id is None:
            return None, None
        row = (
            item.position, org_id, aggregate_id, aggregate_type, n.originator_version, name,
            occurred_at, actor, dumps(data),
        )  # fmt: skip
        return row, owner

    def _load_owners(self, cur: Cursor, items: Sequence[Item]) -> None:
        """Owners not in memory of this batch's aggregates created before it: one query."""
        later: set[str] = set()
        created: set[str] = set()
        for item in items:
            n = item.notification
            if n is not None:
                (created if n.originator_version == 1 else later).add(_text(n.originator_id))
        missing = later - created - self._owners.keys()
        wanted = sorted(missing)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            for row in cur.execute(
                "SELECT aggregate_id, organization_id, aggregate_type FROM audit_owners"
                f" WHERE aggregate_id IN ({marks})",
                chunk,
            ):
                self._owners[row["aggregate_id"]] = (row["organization_id"], row["aggregate_type"])
        for aggregate_id in missing:  # created without one
            self._owners.setdefault(aggregate_id, None)


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
