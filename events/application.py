"""The one event-sourced Application: every aggregate, one notification log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.persistence import RecordConflictError, Recording, Transcoder

from events.codec import FastJSONTranscoder, FastUUIDAsHex
from events.credit_account import CreditAccount
from events.errors import NotFound
from events.freshness import Freshness
from events.group_save import GroupSave
from events.ids import index_id
from events.index import Index
from events.organization import Organization
from events.provider_key import ProviderKey
from events.recorder import FlowledgerRecorder
from events.user import User
from events.vault import TABLES as VAULT_TABLES
from events.vault import Vault
from flowledger.db import Database
from flowledger.settings import Settings

A = TypeVar("A")


class Flowledger(Application[UUID]):
    name = "flowledger"
    # Hot aggregates gain events with every execution; snapshots keep their loads short.
    snapshotting_intervals = {
        CreditAccount: 200,
        Organization: 100,
        User: 100,
        ProviderKey: 200,  # an event per usage record and per secret read
    }

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        env: dict[str, Any] = {
            **settings.postgres_env(),
            "AGGREGATE_CACHE_MAXSIZE": "20000",
            "AGGREGATE_CACHE_FASTFORWARD": "y",
            "MAPPER_TOPIC": "events.codec:FastMapper",  # the library's, with lookups cached
        }
        self.settings = settings
        self.db = db or Database(settings)
        with self.db.schema_lock():  # the library creates its tables in here
            super().__init__(env=env)
        self.db.script(VAULT_TABLES)
        self.vault = Vault(self.db, settings.master_key_bytes)
        # In-process wake-up for followers of the log (the SQLite recorder cannot subscribe).
        self.saved = threading.Condition()
        self._claims: dict[UUID, Index] = {}
        self._claims_lock = threading.Lock()
        self.last_saved_position = 0
        self._grouped = GroupSave(self)
        self._groups: dict[float, GroupSave] = {0.0: self._grouped}
        self._groups_lock = threading.Lock()
        self._read_at: dict[UUID, float] = {}  # when `recent` last brought an aggregate up to date
        # Which cached aggregates are known current without a query, for read-only lookups
        # (PostgreSQL: every save's NOTIFY names its aggregates; events/freshness.py).
        self.freshness = (
            Freshness(settings.database_url, self.recorder.channel_name)  # type: ignore[attr-defined]
            if settings.is_postgres and settings.trust_notified_cache
            else None
        )

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON format, decoded with orjson (`events/codec.py`)."""
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        transcoder.register(FastUUIDAsHex())  # replaces the library's `uuid_hex` reader
        return transcoder

    def close(self) -> None:
        if self.freshness is not None:
            self.freshness.stop()
        super().close()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        try:
            recordings = super().save(*objs, **kwargs)
        except RecordConflictError:
            if self.freshness is not None:
                self.freshness.distrust()
            raise
        if self.freshness is not None:  # read our own writes
            self.freshness.saved(
                getattr(o, "originator_id", None) or o.id for o in objs if o is not None
            )
        if recordings:
            with self.saved:
                self.last_saved_position = max(
                    self.last_saved_position, recordings[-1].notification.id
                )
                self.saved.notify_all()
        return recordings

    def save_grouped(self, *aggregates: Any) -> None:
        """`save`, in one transaction with the concurrent saves of this process's other
        threads (`events.group_save`): under load one table lock, commit and wake-up of
        every follower for several requests or actors. Returns once committed; raises as
        `save` (only for this thread's own aggregates)."""
        self._grouped.save(*aggregates)

    def group(self, linger: float) -> GroupSave:
        """The process's group commit that waits `linger` s for more saves to join a batch."""
        with self._groups_lock:
            found = self._groups.get(linger)
            if found is None:
                found = self._groups[linger] = GroupSave(self, linger=linger)
            return found

    def _get_trusted(self, aggregate_id: UUID) -> Any:
        """The cached aggregate itself (raises AggregateNotFoundError), without the
        fast-forward query when it is known current (`events.freshness`)."""
        freshness = self.freshness
        if freshness is None:
            return self.repository.get(aggregate_id, deepcopy_from_cache=False)
        if freshness.trusted(aggregate_id):
            try:
                return self.repository.cache.get(aggregate_id)  # type: ignore[union-attr]
            except KeyError:
                pass
        token = freshness.reading()
        found: Any = self.repository.get(aggregate_id, deepcopy_from_cache=False)
        if token is not None:
            freshness.read(aggregate_id, token)
        return found

    def current(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        """The cached current aggregate itself, not a copy: for reading only.

        `find` deep-copies the cached aggregate so a handler may change it; a request or
        an actor that only reads spent a fair share of its CPU on those copies. The cache
        is fast-forwarded (one query), so what is read is current.
        """
        try:
            found: Any = self.repository.get(aggregate_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, kind) else None

    def cached(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        """`current`, without its query while no save has named the aggregate since it was
        last read (`events.freshness`): for the lookups of every API request (the API
        key's organization, the user, the workflow to run), where a change made through
        another process shows once its NOTIFY has arrived and this process's own saves
        show at once. Not for what follows the log (the dispatcher, the actors): the log
        can be read before its NOTIFY is heard, and their answers must not be older.
        """
        try:
            found: Any = self._get_trusted(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, kind) else None

    def recent(self, aggregate_id: UUID, kind: type[A], max_age: float) -> A | None:
        """`current`, brought up to date at most every `max_age` s (no query in between):
        for a check that is re-made with `current` before it refuses anything, such as the
        balance an execution request is first checked against."""
        now = time.monotonic()
        cache = self.repository.cache
        if cache is not None and now - self._read_at.get(aggregate_id, -max_age) < max_age:
            try:
                found: Any = cache.get(aggregate_id)
            except KeyError:
                pass
            else:
                return found if isinstance(found, kind) else None
        found = self.current(aggregate_id, kind)
        if len(self._read_at) > 50_000:
            self._read_at.clear()
        self._read_at[aggregate_id] = now
        return found

    def load(self, aggregate_id: UUID, kind: type[A], what: str = "resource") -> A:
        """Get an aggregate of an expected type, or raise NotFound."""
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{what} not found")
        return aggregate

    def read_many(self, aggregate_ids: Sequence[UUID], kind: type[A]) -> dict[UUID, A]:
        """Several aggregates from their events alone, in one query on PostgreSQL, bypassing
        the cache; the ones found (of the right kind) by id.

        For aggregates this process rarely holds and that are never snapshotted (the runs a
        worker starts, created by another process): through the repository, each cache miss
        would cost a snapshot query and then an events query. Fresh objects of the caller's
        own, free to change, not put in the cache.
        """
        ids = list(dict.fromkeys(aggregate_ids))
        events: dict[UUID, list[Any]] = {i: [] for i in ids}
        if isinstance(self.recorder, FlowledgerRecorder) and len(ids) > 1:
            to_event = self.mapper.to_domain_event
            for stored in self.recorder.select_events_of(ids):
                events[stored.originator_id].append(to_event(stored))
        else:
            for i in ids:
                events[i] = list(self.events.get(i))
        found: dict[UUID, A] = {}
        for i, history in events.items():
            aggregate: Any = project_aggregate(None, history) if history else None
            if isinstance(aggregate, kind):
                found[i] = aggregate
        return found

    def claim(self, kind: str, key: str) -> Index | None:
        """The claim of a unique key. Claims never change once made, so a found one is
        kept in memory: API-key and tenant lookups on every request cost no query."""
        claim_id = index_id(kind, key)
        found = self._claims.get(claim_id)
        if found is None:
            found = self.find(claim_id, Index)
            if found is not None:
                with self._claims_lock:
                    if len(self._claims) > 50_000:
                        self._claims.clear()
                    self._claims[claim_id] = found
        return found

    def owned(
        self,
        aggregate_id: UUID,
        kind: type[A],
        org_id: UUID,
        what: str,
        read: Callable[[UUID, type[A]], A | None] | None = None,
    ) -> A:
        """An aggregate of this organization that is not archived; any other (another
        tenant's included) is not found, so ids of other tenants reveal nothing. `read` is
        how it is read: `find` (a copy, the default), or `current`/`cached` to only read it."""
        found: Any = (read or self.find)(aggregate_id, kind)
        if found is None or found.organization_id != org_id or getattr(found, "archived", False):
            raise NotFound(f"{what} not found", **{f"{what.split()[-1]}_id": str(aggregate_id)})
        return found

    def find(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        try:
            found: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, kind) else None
