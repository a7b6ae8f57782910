"""Following the notification log: projections (exactly-once rows) and the dispatcher.

The library's `ProjectionRunner` commits once per event (about 830 events/s measured here)
and its SQLite recorder cannot `subscribe`. So a `Follower` reads the log in batches of up
to 500 with the recorder's own `select_notifications`, hands each batch to its handler, and
records its position in the `tracking` table: a projection writes its rows and the position
in one transaction (exactly-once), the dispatcher records the position after sending
(at-least-once). It wakes on the recorder's Postgres NOTIFY (`LISTEN stored_events`) or, in
the embedded mode, on the application's in-process condition; the timeout below is only a
safety net. One active copy per name holds a Postgres advisory lock; others wait as standby.

The projector runs all its projections as one `ProjectionGroup`: one read of the log per
batch (the union of their topics), each event decoded once, every projection applied and
every projection's own tracking row written in ONE transaction. Eight followers each doing
their own reads and commits, all woken by every NOTIFY, spent half their time waiting for
PostgreSQL round trips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

import structlog
from eventsourcing.persistence import Notification

from events.application import Flowledger
from events.recorder import FlowledgerRecorder
from flowledger.db import Cursor, Database
from flowledger.leader import leadership, try_locks
from projections.formats import iso

log = structlog.get_logger()

TRACKING = ["CREATE TABLE IF NOT EXISTS tracking (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"]
BATCH = 500


def log_after(app: Flowledger) -> Callable[[int, int], Sequence[Notification]]:
    """`read(after, limit)`: the next events of the whole log, for the followers: our
    recorder's constant statement on PostgreSQL, the library's `select_notifications`
    elsewhere."""
    recorder = app.recorder
    if isinstance(recorder, FlowledgerRecorder):
        return recorder.select_notifications_after
    return lambda after, limit: recorder.select_notifications(
        start=after, limit=limit, inclusive_of_start=False
    )


def next_batch(
    app: Flowledger,
    read: Callable[[int, int], Sequence[Notification]],
    after: int,
    limit: int,
    topics: Sequence[str] = (),
) -> tuple[Sequence[Notification], int] | None:
    """The next events of the log after position `after` and the position the batch
    reaches; None when nothing is new.

    With `topics`, only theirs, filtered in SQL below the log's top: a short batch then
    reaches the top (nothing below it can appear later: ids are committed in order, under
    the recorder's table lock), so read-your-writes waits on any position end. Without,
    the whole log with `read` (`log_after`), and a short batch ends at its last event,
    which is the top: no query for the top is needed.
    """
    if not topics:
        found = read(after, limit)
        return (found, found[-1].id) if found else None
    top = app.recorder.max_notification_id() or 0
    if top <= after:
        return None
    found = app.recorder.select_notifications(
        start=after, limit=limit, stop=top, topics=list(topics), inclusive_of_start=False
    )
    return found, (found[-1].id if len(found) == limit else top)


def pace_after(stopped: threading.Event, started: float, pace: float) -> None:
    """Wait until `pace` seconds after `started` (or until stopped).

    A follower that caught up waits this long before its next batch, so under load each
    batch carries the events of several saves: every batch costs the same few statements
    (the log's top, the read, the tracking row) whatever its size, and at one batch per
    save those were most of the dispatcher's and the projector's work. An idle follower
    is not delayed: the first save after a pause is handled as soon as its NOTIFY arrives.
    """
    remaining = started + pace - time.monotonic()
    if pace and remaining > 0:
        stopped.wait(remaining)


@dataclass(frozen=True)
class Item:
    """One event of the log, its position (notification id) and the stored record.

    `notification` is the row as the recorder keeps it (topic and state bytes), for readers
    such as the audit hash chain that must cover exactly what was stored.
    """

    position: int
    event: Any
    notification: Notification | None = None
    #: Decodes `notification` on demand, for a projection that does not have its events
    #: decoded (`Projection.decodes`): `event` may then be None.
    decoder: Callable[[Notification], Any] | None = None

    def domain_event(self) -> Any:
        """The decoded event, decoding it now if it was not."""
        if self.event is None and self.decoder is not None and self.notification is not None:
            return self.decoder(self.notification)
        return self.event


class Projection:
    """A read model: its tables, its handlers, and (beside it) its queries.

    Subclasses set `name`, `tables` and register handlers with `@handles(EventClass)`.
    """

    name: ClassVar[str]
    tables: ClassVar[list[str]] = []
    handlers: ClassVar[dict[type, Callable[..., None]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handlers = {}
        for value in cls.__dict__.values():
            for event_class in getattr(value, "_handles", ()):
                cls.handlers[event_class] = value
        cls.topics = frozenset(topic_of(c) for c in cls.handlers)

    topics: ClassVar[frozenset[str]] = frozenset()

    #: For parallel rebuilds (`projections/rebuild.py`): a projection whose rows each depend
    #: on the events of one key names the event classes keyed by their own aggregate here
    #: (a rebuild partition then reads only its share of those, filtered in SQL), and
    #: `partition_key` gives every handled event's key. Empty: replayed in one process.
    by_originator: ClassVar[frozenset[type]] = frozenset()
    #: The same for a projection of the whole log (no topics) whose every row depends on
    #: the events of one aggregate: a partition reads only its aggregates' events (the
    #: SQL filter alone decides; `partition_key` is not asked).
    keyed_by_originator: ClassVar[bool] = False
    #: False for a read model of the stored records alone (`Item.notification`), such as
    #: the audit hash chain: its followers and rebuilds do not decode the events for it.
    decodes: ClassVar[bool] = True

    def partition_key(self, event: Any) -> UUID | None:
        """The key whose rows `event` changes; None for rows every key shares (replayed by
        the first partition only)."""
        return None

    def process(self, cur: Cursor, items: Sequence[Item]) -> None:
        for item in items:
            handler = self.handlers.get(type(item.event))
            if handler is not None:
                handler(self, cur, item.event, item.position)


def handles(*event_classes: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def mark(func: Callable[..., None]) -> Callable[..., None]:
        func._handles = event_classes  # type: ignore[attr-defined]
        return func

    return mark


def update_row(cur: Cursor, table: str, event: Any, position: int, **columns: Any) -> None:
    """Set `columns`, `updated_at` (the event's time) and `position` on the row of the event's
    aggregate, unless the row has already seen `position` (a replay changes nothing)."""
    columns = {**columns, "updated_at": iso(event.timestamp), "position": position}
    assignments = ", ".join(f"{name} = %s" for name in columns)
    cur.execute(
        f"UPDATE {table} SET {assignments} WHERE id = %s AND position < %s",
        (*columns.values(), str(event.originator_id), position),
    )


def topic_of(cls: type) -> str:
    """The topic the library stores an event class under (what SQL filters match)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def position(db: Database, name: str) -> int:
    row = db.one("SELECT position FROM tracking WHERE name = %s", (name,))
    return int(row["position"]) if row else 0


RECORD_POSITION = (
    "INSERT INTO tracking (name, position) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)


def record_position(cur: Cursor, name: str, pos: int) -> None:
    cur.execute(RECORD_POSITION, (name, pos))


def record_positions(cur: Cursor, positions: dict[str, int]) -> None:
    """Several tracking rows in one statement (a projector group's batch)."""
    if not positions:
        return
    rows = ", ".join(["(%s, %s)"] * len(positions))
    cur.execute(
        f"INSERT INTO tracking (name, position) VALUES {rows} "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        [value for pair in positions.items() for value in pair],
    )


def wait_for(db: Database, name: str, pos: int, timeout: float) -> bool:
    """Read-your-writes: block until `name` has processed `pos`, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while position(db, name) < pos:
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 1.5, 0.02)
    return True


class Follower:
    """Feeds batches of the log to `handle(items, last_position)` until stopped."""

    def __init__(
        self,
        app: Flowledger,
        name: str,
        handle: Callable[[list[Item], int], None],
        topics: frozenset[str] | None = None,
        batch: int = BATCH,
        decode: bool = True,
        pace: float = 0.0,
        filter_in_sql: bool = True,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.db = app.db
        self.name = name
        self.handle = handle
        self.topics = topics
        self.batch = batch
        self.decode = decode
        # False: read every event and drop the others here, for a follower that wants most
        # of the log (the dispatcher): no query for the log's top per batch (see `step`).
        self.filter_in_sql = filter_in_sql
        # Called when the follower has caught up and is about to wait for the next save.
        self.idle: Callable[[], None] | None = idle
        self._read = log_after(app)
        self.pace = pace  # seconds from one batch to the next while not behind
        self.behind = False  # the last batch was full: more is waiting
        self.stopped = threading.Event()
        self.active = threading.Event()  # set while this copy holds the lock
        self._position: int | None = None  # kept in memory while this copy leads
        self.db.script(TRACKING)

    def stop(self) -> None:
        self.stopped.set()
        with self.app.saved:
            self.app.saved.notify_all()

    def run(self) -> None:
        """Take the lock, then follow; returns when stopped."""
        with self._leadership() as wake:
            self._position = None  # another copy may have led meanwhile
            self.active.set()
            log.info("follower.active", name=self.name, position=position(self.db, self.name))
            try:
                while not self.stopped.is_set():
                    started = time.monotonic()
                    if self.step():
                        if self.behind:
                            continue  # a full batch: more is waiting
                        pace_after(self.stopped, started, self.pace)
                    if wake(0.0):  # a save was notified meanwhile
                        continue
                    if self.idle is not None:
                        self.idle()
                    wake(1.0)
            finally:
                self.active.clear()

    def step(self) -> bool:
        """Process one batch (`next_batch`); False when the log had nothing new.

        Only the events of `topics` are handled: filtered in SQL, or (`filter_in_sql=False`)
        read with the rest of the log and dropped here.
        """
        if self._position is None:
            self._position = position(self.db, self.name)
        in_sql = sorted(self.topics or ()) if self.filter_in_sql else []  # empty: the whole log
        got = next_batch(self.app, self._read, self._position, self.batch, in_sql)
        if got is None:
            return False
        notifications, last = got
        self.behind = len(notifications) == self.batch
        if self.topics and not in_sql:
            notifications = [n for n in notifications if n.topic in self.topics]
        self.handle([_item(self.app, n, self.decode) for n in notifications], last)
        self._position = last
        return True

    def catch_up(self) -> None:
        while self.step():
            pass

    @contextmanager
    def _leadership(self) -> Iterator[Callable[[float], bool]]:
        if self.db.dialect != "postgres":
            yield self._wait_in_process
            return
        with leadership(self.db, self.name, self.stopped) as conn:
            conn.execute(f"LISTEN {self.app.recorder.channel_name}")  # type: ignore[attr-defined]

            def wake(timeout: float) -> bool:
                return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))

            yield wake

    def _wait_in_process(self, timeout: float) -> bool:
        with self.app.saved:
            if self.app.last_saved_position <= (self._position or 0) and timeout:
                self.app.saved.wait(timeout)
            return self.app.last_saved_position > (self._position or 0)


def projection_follower(app: Flowledger, projection: Projection) -> Follower:
    """A follower that writes the projection's rows and its position in one transaction."""
    app.db.script(projection.tables)

    def handle(items: list[Item], last: int) -> None:
        with app.db.transaction() as cur:
            projection.process(cur, items)
            record_position(cur, projection.name, last)

    return Follower(
        app, projection.name, handle, topics=projection.topics, decode=projection.decodes
    )


class ProjectionGroup:
    """Every projection of a projector process, fed by one follower.

    Per batch: one read of the log from the lowest position of the projections this copy
    leads (the union of their topics, all topics if one of them follows the whole log), each
    event decoded once; then ONE transaction in which each projection gets the events after
    its own position within its own topics, and each records its own tracking row. So
    `wait_for`, `projections status` and `rebuild` see the same rows as before, and a crash
    in one handler rolls back every projection's rows and positions (the loop restarts).

    Leadership stays per projection: the group's one connection takes the advisory lock of
    each member it can (the same lock a single `Follower` of that name takes) and retries the
    others about once a second, so two projectors never write the same projection and a
    second projector waits as a hot standby. `active` is set while it leads every member.
    """

    def __init__(
        self,
        app: Flowledger,
        projections: Sequence[Projection],
        name: str = "projector",
        batch: int = BATCH,
        pace: float = 0.0,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"a projection appears twice in {names}")
        self.app = app
        self.db = app.db
        self.name = name
        self.projections = list(projections)
        self.batch = batch
        self.pace = pace  # seconds from one batch to the next while not behind (pace_after)
        self.behind = False
        self._read = log_after(app)
        self.stopped = threading.Event()
        self.active = threading.Event()  # set while this copy leads every member
        self.leading: frozenset[str] = frozenset()  # the members whose lock this copy holds
        self._positions: dict[str, int] = {}  # in memory while this copy leads them
        self._standby: frozenset[str] = frozenset()  # led by another copy, last we tried
        self.db.script(TRACKING)
        for projection in self.projections:
            self.db.script(projection.tables)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.projections]

    def stop(self) -> None:
        self.stopped.set()
        with self.app.saved:
            self.app.saved.notify_all()

    def run(self) -> None:
        """Lead what it can, then follow; returns when stopped."""
        self._positions = {}  # another copy may have led meanwhile
        with self._connection() as conn:
            try:
                retry_at = 0.0
                while not self.stopped.is_set():
                    if time.monotonic() >= retry_at and len(self.leading) < len(self.names):
                        self._lead(conn)
                        retry_at = time.monotonic() + 1.0
                    started = time.monotonic()
                    if self.step():
                        if self.behind:
                            continue  # a full batch: more is waiting
                        pace_after(self.stopped, started, self.pace)
                    self._wake(conn, 1.0)  # at once if a save was notified meanwhile
            finally:
                self.leading = frozenset()
                self.active.clear()

    def step(self) -> bool:
        """Process one batch for the members this copy leads; False when nothing was new.

        When the batch is short, every event up to the log's top was read, so each member
        moves to the top (as `Follower.step`); a member already past the batch's end is left
        alone. Ids are committed in order (the recorder's table lock), so nothing below the
        top can appear later.
        """
        members = [p for p in self.projections if p.name in self.leading]
        if not members:
            return False
        self._load_positions([p.name for p in members if p.name not in self._positions])
        start = min(self._positions[p.name] for p in members)
        got = next_batch(self.app, self._read, start, self.batch, _union_topics(members))
        if got is None:
            return False
        notifications, last = got
        self.behind = len(notifications) == self.batch
        decode = any(p.decodes for p in members)
        items = [(n.topic, _item(self.app, n, decode)) for n in notifications]  # decoded once
        moved: dict[str, int] = {}
        with self.db.transaction() as cur:
            for projection in members:
                at, topics = self._positions[projection.name], projection.topics
                if at >= last:
                    continue
                mine = [i for t, i in items if i.position > at and (not topics or t in topics)]
                projection.process(cur, mine)
                moved[projection.name] = last
            record_positions(cur, moved)
        self._positions.update(moved)
        return True

    def catch_up(self) -> None:
        """Process the log to its top, for the members whose lock is free (all, on SQLite)."""
        self._positions = {}
        with self._connection() as conn:
            try:
                self._lead(conn)
                while self.step():
                    pass
            finally:
                self.leading = frozenset()
                self.active.clear()

    def _load_positions(self, names: list[str]) -> None:
        if not names:
            return
        marks = ", ".join(["%s"] * len(names))
        rows = self.db.query(f"SELECT name, position FROM tracking WHERE name IN ({marks})", names)
        found = {row["name"]: int(row["position"]) for row in rows}
        self._positions.update({name: found.get(name, 0) for name in names})

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection that holds the locks and LISTENs (None on SQLite)."""
        if self.db.dialect != "postgres":
            yield None
            return
        with self.db.dedicated_connection() as conn:
            conn.execute(f"LISTEN {self.app.recorder.channel_name}")  # type: ignore[attr-defined]
            yield conn

    def _lead(self, conn: Any) -> None:
        """Take the locks of the members not led yet (all of them, on SQLite)."""
        missing = [n for n in self.names if n not in self.leading]
        taken = missing if conn is None else try_locks(conn, missing)
        if taken:
            for name in taken:
                self._positions.pop(name, None)  # another copy may have led it meanwhile
            self._load_positions(taken)
            self.leading = self.leading | frozenset(taken)
            log.info(
                "follower.active",
                name=self.name,
                projections=taken,
                positions=[self._positions[n] for n in taken],
            )
        others = frozenset(missing) - frozenset(taken)
        if others and others != self._standby:
            log.info("leader.standby", name=self.name, projections=sorted(others))
        self._standby = others
        if not others:
            self.active.set()

    def _wake(self, conn: Any, timeout: float) -> None:
        if conn is not None:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                pass
            return
        lowest = min(self._positions.values(), default=0)
        with self.app.saved:
            if self.stopped.is_set():
                return
            if self.app.last_saved_position <= lowest:
                self.app.saved.wait(timeout)


def _union_topics(members: Sequence[Projection]) -> list[str]:
    """The topics to read for `members`: none (the whole log) if one of them follows
    everything (its `topics` is empty, as the audit projection's)."""
    if any(not p.topics for p in members):
        return []
    return sorted(frozenset().union(*(p.topics for p in members)))


def _item(app: Flowledger, notification: Notification, decode: bool = True) -> Item:
    if decode:
        return Item(notification.id, app.mapper.to_domain_event(notification), notification)
    return Item(notification.id, None, notification, app.mapper.to_domain_event)
