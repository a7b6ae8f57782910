"""`flowledger projections status` and `rebuild`: each read model's lag, and zero-downtime
rebuilds of any `Projection` from position 0.

PostgreSQL: the new version is built BESIDE the live one, in a schema of its own
(`flowledger_rebuild_<name>`): the rebuild's connection sets `search_path` to that schema
first, so the projection's own unqualified DDL and DML land there and no projection needs
rebuild code. The log is replayed in big transactions (commit off the WAL's critical path,
since a crash only loses the shadow) while the live projector and the API go on with the
live tables. Rows the shadow cannot hold yet go in by `COPY`, known from a `RowMemory` of
what this replay wrote (so no batch waits on a `SELECT`). A projection whose rows each
depend on one key (`Projection.by_originator`, `partition_key`) is replayed by
`rebuild_workers` processes at once, each over its share of the keys (`Partition`), when
the log is long enough to repay starting them (`rebuild_parallel_min`).
The switch is ONE transaction: `LOCK TABLE ... ACCESS EXCLUSIVE` on the live
tables (it waits for the live projector's transaction in flight and holds readers for the
few milliseconds the switch takes), the live tracking position P read under `FOR UPDATE`,
the shadow caught up to exactly P, then the live tables moved out
(`ALTER TABLE ... SET SCHEMA flowledger_retired_<name>`) and the new ones in. The live
projector keeps its position P in memory and continues on the new tables (its statements
name tables, not table ids); the tracking row is not touched. When no projector runs (its
leadership lock is free), the rebuild holds that lock itself, builds to the head of the log
and records the head as the position in the same switch transaction.

Crashes: until the switch commits, nothing live changed; a killed rebuild leaves a shadow
schema that the next run drops first. A second rebuild of the same name is refused (an
advisory lock). Leftover retired tables (a kill between the switch and the drop) are dropped
by the next run too.

SQLite (embedded, one file for the log and the read models): the tables are dropped,
recreated and replayed up to the tracking position inside ONE write transaction. Readers
(WAL) keep reading the old rows until it commits; writers, including commands appending
events, wait for it (up to their busy timeout), so run it when the application is quiet.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import structlog
from eventsourcing.persistence import Notification

from events.application import Flowledger
from events.recorder import notification
from flowledger import failpoints, logs
from flowledger.db import Cursor, PgCursor, pg_cursor
from flowledger.leader import lock_key
from flowledger.settings import Settings
from projections.rows import RowMemory
from projections.runner import TRACKING, Item, Projection, position, topic_of

log = structlog.get_logger()

READ_BATCH = 5000  # notifications per read of the log
COMMIT_EVERY = 50_000  # positions replayed per transaction into the shadow
SWITCH_GAP = 5000  # catch up outside the lock until the live model is this close
SWITCH_ATTEMPTS = 10
SWITCH_LOCK_TIMEOUT = "2s"
DISPATCHER = "dispatcher"

Progress = Callable[[int], Any]  # called with positions advanced


class RebuildBusy(RuntimeError):
    """Another rebuild of the same read model is running."""


@dataclass(frozen=True)
class Result:
    name: str
    position: int  # the tracking position the new tables were switched in at
    events: int  # events of the projection's topics replayed
    seconds: float
    mode: str  # "online" (a live projector continued), "offline" (none ran), "sqlite"

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


# -- status ----------------------------------------------------------------------------------


def status(app: Flowledger, projections: Sequence[Projection]) -> dict[str, Any]:
    """Each follower's tracking position and its lag behind the head of the log."""
    app.db.script(TRACKING)
    head = int(app.recorder.max_notification_id() or 0)
    rows = app.db.query("SELECT name, position FROM tracking")
    positions = {row["name"]: int(row["position"]) for row in rows}
    followers = [(p.name, "projection") for p in projections] + [(DISPATCHER, "dispatcher")]
    known = {name for name, _ in followers}
    followers += [(name, "follower") for name in sorted(positions) if name not in known]
    return {
        "head": head,
        "followers": [
            {
                "name": name,
                "kind": kind,
                "position": positions.get(name, 0),
                "lag": max(0, head - positions.get(name, 0)),
            }
            for name, kind in followers
        ],
    }


def format_status(report: dict[str, Any]) -> str:
    lines = [f"head of the log: {report['head']:,}", ""]
    lines.append(f"{'name':<24} {'kind':<11} {'position':>12} {'lag':>10}")
    for f in report["followers"]:
        lines.append(f"{f['name']:<24} {f['kind']:<11} {f['position']:>12,} {f['lag']:>10,}")
    return "\n".join(lines)


# -- reading the log -------------------------------------------------------------------------


Select = Callable[[int, int, int], Sequence[Notification]]  # (after, limit, stop) → a batch


def read_log(
    app: Flowledger,
    topics: Sequence[str],
    start: int,
    stop: int,
    batch: int = READ_BATCH,
    select: Select | None = None,
) -> Iterator[list[Notification]]:
    """The notifications of `topics` in (start, stop], in batches, read one batch ahead in a
    thread (psycopg waits for PostgreSQL without the GIL, so reading overlaps applying).
    `select` replaces the recorder's own read (a partition's share of the log)."""
    ahead: queue.Queue[list[Notification] | BaseException | None] = queue.Queue(maxsize=2)
    stopped = threading.Event()

    def recorder_select(after: int, limit: int, until: int) -> Sequence[Notification]:
        return app.recorder.select_notifications(
            start=after, limit=limit, stop=until, topics=list(topics), inclusive_of_start=False
        )

    read = select or recorder_select

    def reader() -> None:
        at = start
        try:
            while at < stop and not stopped.is_set():
                got = read(at, batch, stop)
                if not got:
                    break
                ahead.put(list(got))
                at = got[-1].id
            ahead.put(None)
        except BaseException as e:  # handed to the consumer
            ahead.put(e)

    thread = threading.Thread(target=reader, name="rebuild-reader", daemon=True)
    thread.start()
    try:
        while (got := ahead.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stopped.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            with suppress(queue.Empty):
                ahead.get(timeout=0.05)


def replay(
    app: Flowledger,
    projection: Projection,
    cur: Cursor,
    start: int,
    stop: int,
    progress: Progress | None = None,
    commit: Callable[[], None] | None = None,
    partition: Partition | None = None,
) -> int:
    """Apply the events in (start, stop] to `cur`'s tables; returns how many were applied.

    `commit()` is called about every `COMMIT_EVERY` positions (big transactions). With a
    `partition`, only the events of its keys are read and applied.
    """
    with log_reader(app, projection, partition) as select:
        batches = read_log(app, sorted(projection.topics), start, stop, select=select)
        applied, done = _apply(app, projection, cur, batches, start, progress, commit, partition)
    if progress is not None and stop > done:
        progress(stop - done)
    return applied


def _apply(
    app: Flowledger,
    projection: Projection,
    cur: Cursor,
    batches: Iterator[list[Notification]],
    start: int,
    progress: Progress | None,
    commit: Callable[[], None] | None,
    partition: Partition | None,
) -> tuple[int, int]:
    """The loop of `replay`: (events applied, last position done)."""
    to_domain_event = app.mapper.to_domain_event
    applied = 0
    done = start
    since_commit = 0
    for notifications in batches:
        if projection.decodes:
            items = [Item(n.id, to_domain_event(n), n) for n in notifications]
        else:
            items = [Item(n.id, None, n, to_domain_event) for n in notifications]
        if partition is not None:
            items = [item for item in items if partition.owns(projection, item.event)]
        projection.process(cur, items)
        applied += len(items)
        last = notifications[-1].id
        since_commit += last - done
        if progress is not None:
            progress(last - done)
        done = last
        if partition is None:  # a partition process is not the rebuild: its parent is
            failpoints.hit("rebuild.after_batch")  # crash tests: killed in the middle
        if commit is not None and since_commit >= COMMIT_EVERY:
            commit()
            since_commit = 0
    return applied, done


# -- partitions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One of `count` shares of a projection's keys, replayed by a process of its own.

    A key belongs to partition `last byte of the UUID % count`: the same rule in SQL (so a
    partition reads only its share of the events keyed by their own aggregate) and here (for
    events whose key is in their data, such as a refund naming its execution, which every
    partition reads and each keeps only its own). Events of no key go to partition 0.
    """

    index: int
    count: int

    def owns(self, projection: Projection, event: Any) -> bool:
        """Whether this partition applies `event`, one of what its reader gave it: events
        the SQL chose by their own aggregate are its own already (`event` may then be None:
        a projection that does not decode)."""
        if projection.keyed_by_originator or type(event) in projection.by_originator:
            return True
        key = projection.partition_key(event)
        if key is None:
            return self.index == 0
        return key.bytes[15] % self.count == self.index


@contextmanager
def log_reader(
    app: Flowledger, projection: Projection, partition: Partition | None = None
) -> Iterator[Select | None]:
    """The replay's read of the log on PostgreSQL (None elsewhere: the recorder's own):
    plain tuple rows on a connection of its own, made into notifications without the
    recorder's dict rows (the reader's CPU is the replay's too). With a `partition`, only
    its share: every event of the topics keyed by their data (refunds), only its keys'
    events of the topics keyed by their own aggregate (or of every event, for a projection
    `keyed_by_originator`)."""
    if app.db.dialect != "postgres":
        yield None
        return
    table = app.recorder.events_table_name  # type: ignore[attr-defined]
    where: list[str] = []
    topics: list[Any] = []
    if partition is None:
        if projection.topics:
            where.append("topic = ANY(%s)")
            topics.append(sorted(projection.topics))
    else:
        keyed = sorted(topic_of(c) for c in projection.by_originator)
        shared = sorted(projection.topics - set(keyed))
        mine = "get_byte(uuid_send(originator_id), 15) %% %s = %s"
        if projection.keyed_by_originator:  # the whole log, every event by its aggregate
            where.append(mine)
        else:
            where.append(f"(topic = ANY(%s) OR (topic = ANY(%s) AND {mine}))")
            topics += [shared, keyed]
        topics += [partition.count, partition.index]
    sql = (
        "SELECT notification_id, originator_id, originator_version, topic, state"
        f" FROM {table} WHERE notification_id > %s::bigint AND notification_id <= %s::bigint"
        f"{''.join(f' AND {w}' for w in where)} ORDER BY notification_id LIMIT %s"
    )
    # A window of positions per query: PostgreSQL cannot estimate a partition's filter,
    # nor a topic filter before the table is analysed (a freshly written log), and over an
    # open range it then scans and sorts all that is left, for every batch. A window that
    # gave fewer than half a batch grows (sparse topics), one that filled a batch shrinks.
    span = 1 if partition is None else partition.count
    window = 0  # positions per query: from a batch's worth (times `span`) to 64 times that
    scanned = 0  # positions up to here hold nothing more for this reader
    with app.db.dedicated_connection() as conn:

        def select(after: int, limit: int, until: int) -> list[Notification]:
            nonlocal window, scanned
            narrowest = limit * span
            window = window or narrowest
            after = max(after, scanned)
            rows: list[tuple[Any, ...]] = []
            while not rows and after < until:
                upper = min(until, after + window)
                rows = conn.execute(sql, (after, upper, *topics, limit)).fetchall()
                if len(rows) < limit:
                    scanned = upper  # the window is exhausted
                    if len(rows) < limit // 2:
                        window = min(window * 2, narrowest * 64)
                else:
                    window = max(narrowest, window // 2)
                after = upper
            return [notification(*row) for row in rows]

        yield select


def partitions_for(app: Flowledger, projection: Projection, positions: int) -> int:
    """How many processes should replay `positions` positions of `projection`: 1 unless it
    can be split by key and the replay is long enough to repay spawning the processes."""
    settings = app.settings
    keyed = projection.by_originator or projection.keyed_by_originator
    if not keyed or positions < settings.rebuild_parallel_min:
        return 1
    return settings.rebuild_workers


def _replay_partition(
    settings: Settings,
    name: str,
    search_path: str,
    start: int,
    stop: int,
    partition: Partition,
    positions: Any,
    applied: Any,
    parent: int,
) -> None:
    """A partition process (spawned): replay its share of (start, stop] into the shadow."""
    from projections import all_projections

    logs.configure(settings.log_format, settings.log_level)
    app = Flowledger(settings)
    projection = next(p for p in all_projections() if p.name == name)

    def progress(advanced: int) -> None:
        positions[partition.index] += advanced
        if os.getppid() != parent:  # the rebuild died: its shadow is dropped by the next run
            os._exit(1)

    try:
        with app.db.dedicated_connection(dict_rows=True) as conn:
            conn.execute(
                "SELECT set_config('application_name', %s, false)",
                (f"flowledger-rebuild-{name}-{partition.index}",),
            )
            conn.execute(f"SET search_path TO {search_path}")
            conn.execute("SET synchronous_commit TO off")
            with _transactions(conn) as commit:
                # From position 0 the shadow's tables were empty and its keys are its alone.
                cur = _RebuildCursor(conn, RowMemory() if start == 0 else None, partition)
                count = replay(app, projection, cur, start, stop, progress, commit, partition)
            applied[partition.index] = count
    except BaseException:
        log.exception("rebuild.partition_failed", name=name, partition=partition.index)
        raise
    finally:
        app.close()
        app.db.close()


# -- rebuild ---------------------------------------------------------------------------------


def rebuild(app: Flowledger, projection: Projection, progress: Progress | None = None) -> Result:
    """Build `projection` anew from position 0 and switch to it atomically."""
    started = time.monotonic()
    if app.db.dialect == "postgres":
        position_, events, mode = _PgRebuild(app, projection, progress).run()
    else:
        position_, events, mode = _sqlite_rebuild(app, projection, progress)
    result = Result(projection.name, position_, events, time.monotonic() - started, mode)
    log.info(
        "projection.rebuilt",
        name=result.name,
        position=result.position,
        events=result.events,
        seconds=round(result.seconds, 2),
        mode=result.mode,
    )
    return result


def shadow_schema(name: str) -> str:
    return f"flowledger_rebuild_{name}"


def retired_schema(name: str) -> str:
    return f"flowledger_retired_{name}"


class _PgRebuild:
    def __init__(self, app: Flowledger, projection: Projection, progress: Progress | None):
        self.app = app
        self.db = app.db
        self.projection = projection
        self.name = projection.name
        self.progress = progress
        self.shadow = shadow_schema(self.name)
        self.retired = retired_schema(self.name)

    def run(self) -> tuple[int, int, str]:
        self.db.script(TRACKING)
        with self.db.dedicated_connection(dict_rows=True) as conn:
            if not _try_lock(conn, f"rebuild:{self.name}"):
                raise RebuildBusy(f"another rebuild of {self.name} is running")
            live = conn.execute("SELECT current_schema() AS s").fetchone()["s"]
            tables = self._prepare(conn, live)
            offline = _try_lock(conn, self.name)  # no live projector: keep it away meanwhile
            target = self._head() if offline else position(self.db, self.name)
            built, events = 0, 0
            memory: RowMemory | None = RowMemory()  # every row of the fresh shadow tables
            indexes: list[str] | None = self._defer_indexes(conn)
            while True:
                count = partitions_for(self.app, self.projection, target - built)
                if count > 1:
                    events += self._replay_parallel(live, built, target, count)
                    memory = None  # the partitions wrote rows this process never saw
                else:
                    with _transactions(conn) as commit:
                        cur = _RebuildCursor(conn, memory)
                        events += replay(
                            self.app, self.projection, cur, built, target, self.progress, commit
                        )
                built = target
                if indexes is not None:  # once, after the bulk of the rows
                    self._create_indexes(conn, indexes, tables)
                    indexes = None
                if offline:
                    break
                target = position(self.db, self.name)  # the live projector went on meanwhile
                if target - built <= SWITCH_GAP:
                    break
            switched, more = self._switch_retrying(conn, live, tables, built, offline)
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.retired}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.shadow}" CASCADE')
        return switched, events + more, "offline" if offline else "online"

    def _head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def _prepare(self, conn: Any, live: str) -> list[str]:
        """A fresh shadow schema with the projection's tables; their names."""
        conn.execute(f'DROP SCHEMA IF EXISTS "{self.retired}" CASCADE')  # a previous run's
        conn.execute(f'DROP SCHEMA IF EXISTS "{self.shadow}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{self.shadow}"')
        conn.execute(f"SET search_path TO {self._search_path(live)}")
        conn.execute("SET synchronous_commit TO off")  # a lost shadow is rebuilt, never read
        with conn.transaction():
            for statement in self.projection.tables:
                conn.execute(statement)
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " ORDER BY table_name",
            (self.shadow,),
        ).fetchall()
        return [row["table_name"] for row in rows]

    def _search_path(self, live: str) -> str:
        """The shadow first: the projection's unqualified tables are the shadow's."""
        return f'"{self.shadow}", "{live}"'

    def _replay_parallel(self, live: str, start: int, stop: int, count: int) -> int:
        """Replay (start, stop] into the shadow in `count` partition processes; the events
        applied. Progress is the slowest partition's position; a failed partition fails the
        rebuild (the others are killed; nothing live changed)."""
        ctx = multiprocessing.get_context("spawn")
        positions = ctx.Array("q", [start] * count, lock=False)
        applied = ctx.Array("q", [0] * count, lock=False)
        shared = (self.app.settings, self.name, self._search_path(live), start, stop)
        processes = [
            ctx.Process(
                target=_replay_partition,
                args=(*shared, Partition(i, count), positions, applied, os.getpid()),
                name=f"rebuild-{self.name}-{i}",
                daemon=True,
            )
            for i in range(count)
        ]
        log.info("rebuild.parallel", name=self.name, partitions=count, start=start, stop=stop)
        for process in processes:
            process.start()
        failpoints.hit("rebuild.partitions_started")  # crash tests: orphans must stop
        reported = start
        try:
            while any(p.is_alive() for p in processes):
                failed = [p for p in processes if p.exitcode not in (None, 0)]
                if failed:
                    break
                multiprocessing.connection.wait([p.sentinel for p in processes], timeout=0.2)
                low = min(positions)
                if low > reported:
                    if self.progress is not None:
                        self.progress(low - reported)
                    reported = low
                    failpoints.hit("rebuild.after_batch")  # crash tests: killed in the middle
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                process.join()
        codes = [p.exitcode for p in processes]
        if any(code != 0 for code in codes):
            raise RuntimeError(f"a partition of the rebuild of {self.name} failed: exits {codes}")
        if self.progress is not None and stop > reported:
            self.progress(stop - reported)
        return sum(applied)

    def _defer_indexes(self, conn: Any) -> list[str]:
        """Drop the shadow's secondary indexes, to be created once the rows are in (much
        cheaper than maintaining them row by row); their definitions."""
        rows = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = %s"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_namespace n"
            " ON n.oid = c.connamespace WHERE n.nspname = %s AND c.conname = i.indexname)",
            (self.shadow, self.shadow),
        ).fetchall()
        for row in rows:
            conn.execute(f'DROP INDEX "{self.shadow}"."{row["indexname"]}"')
        return [row["indexdef"] for row in rows]

    def _create_indexes(self, conn: Any, indexes: list[str], tables: list[str]) -> None:
        conn.execute("SET maintenance_work_mem TO '256MB'")
        for statement in indexes:  # pg_indexes names the shadow schema
            conn.execute(statement)
        for table in tables:  # fresh statistics, so the switched-in tables plan well at once
            conn.execute(f'ANALYZE "{self.shadow}"."{table}"')

    def _switch_retrying(
        self, conn: Any, live: str, tables: list[str], built: int, offline: bool
    ) -> tuple[int, int]:
        """The switch, tried again when it lost a deadlock to the live projector (which
        takes its tables in its own order) or waited too long for a lock: it rolled back
        whole, so trying again is safe."""
        import psycopg.errors

        for attempt in range(1, SWITCH_ATTEMPTS + 1):
            try:
                return self._switch(conn, live, tables, built, offline)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable) as e:
                if attempt == SWITCH_ATTEMPTS:
                    raise
                log.info("rebuild.switch_retry", name=self.name, attempt=attempt, error=str(e))
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    def _switch(
        self, conn: Any, live: str, tables: list[str], built: int, offline: bool
    ) -> tuple[int, int]:
        """One transaction: lock the live tables, catch up to P, swap the tables."""
        cur = pg_cursor(conn)
        with conn.transaction():
            # Readers queue behind a waiting ACCESS EXCLUSIVE request: never wait long.
            conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT}'")
            existing = [
                t
                for t in tables
                if conn.execute("SELECT to_regclass(%s) AS r", (f'"{live}"."{t}"',)).fetchone()["r"]
            ]
            if existing:
                names = ", ".join(f'"{live}"."{t}"' for t in existing)
                conn.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
            row = conn.execute(
                f'SELECT position FROM "{live}".tracking WHERE name = %s FOR UPDATE',
                (self.name,),
            ).fetchone()
            target = self._head() if offline else (int(row["position"]) if row else 0)
            if target < built:
                raise RuntimeError(
                    f"the tracking position of {self.name} went back from {built} to {target}"
                )
            events = replay(self.app, self.projection, cur, built, target, self.progress)
            conn.execute(f'CREATE SCHEMA "{self.retired}"')
            for t in existing:
                conn.execute(f'ALTER TABLE "{live}"."{t}" SET SCHEMA "{self.retired}"')
            for t in tables:
                conn.execute(f'ALTER TABLE "{self.shadow}"."{t}" SET SCHEMA "{live}"')
            failpoints.hit("rebuild.before_switch_commit")  # crash tests: the worst moment
            if offline:
                conn.execute(
                    f'INSERT INTO "{live}".tracking (name, position) VALUES (%s, %s)'
                    " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    (self.name, target),
                )
        return target, events


class _RebuildCursor(PgCursor):
    """The rebuild's `Cursor` on its dedicated connection, with the `RowMemory` that lets
    `Rows` skip reading rows back and `COPY` the new ones (psycopg pipelines the upserts
    of the few rows seen before by itself), and the `partition` it writes for, if any
    (its tables then also hold the other partitions' rows)."""

    def __init__(
        self, conn: Any, row_memory: RowMemory | None = None, partition: Partition | None = None
    ) -> None:
        super().__init__(conn)
        # Only for tables this cursor's rebuild alone has written since they were created.
        self.row_memory = row_memory
        self.partition = partition


@contextmanager
def _transactions(conn: Any) -> Iterator[Callable[[], None]]:
    """Big transactions: `commit()` ends one and begins the next."""
    conn.execute("BEGIN")
    try:

        def commit() -> None:
            conn.execute("COMMIT")
            conn.execute("BEGIN")

        yield commit
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _try_lock(conn: Any, name: str) -> bool:
    """A session advisory lock (freed when the connection closes, even on SIGKILL)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (lock_key(name),)).fetchone()
    return bool(row["ok"] if isinstance(row, dict) else row[0])


def _sqlite_rebuild(
    app: Flowledger, projection: Projection, progress: Progress | None
) -> tuple[int, int, str]:
    app.db.script(TRACKING)
    tables = _table_names(projection)
    with app.db.transaction() as cur:  # BEGIN IMMEDIATE: writers wait, WAL readers do not
        row = cur.execute("SELECT position FROM tracking WHERE name = %s", (projection.name,))
        target = int(row[0]["position"]) if row else 0
        for table in tables:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        for statement in projection.tables:
            cur.execute(statement)
        events = replay(app, projection, cur, 0, target, progress)
    return target, events, "sqlite"


def _table_names(projection: Projection) -> list[str]:
    """The tables the projection's DDL creates (run on an empty in-memory database)."""
    scratch = sqlite3.connect(":memory:")
    try:
        for statement in projection.tables:
            scratch.execute(statement)
        rows = scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return [r[0] for r in rows]
    finally:
        scratch.close()
