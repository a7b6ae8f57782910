"""One active copy per name: a PostgreSQL session advisory lock, held by a dedicated connection.

The dispatcher, the projector and the scheduler each run one active copy; other copies wait
here as hot standbys and take over within about a second of the active copy's connection
closing (the lock dies with its session, so a `kill -9` frees it too). On SQLite (the
embedded mode, one process) there is nothing to elect.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from flowledger.db import Database

log = structlog.get_logger()


def lock_key(name: str) -> int:
    return zlib.crc32(f"flowledger:{name}".encode())


@contextmanager
def leadership(
    db: Database, name: str, stopped: threading.Event, retry_every: float = 1.0
) -> Iterator[Any]:
    """Wait for the lock of `name`, then hold it for the block.

    Yields the connection holding the lock (None on SQLite). If `stopped` is set while this
    copy waits, the block runs without the lock: callers check `stopped` first.
    """
    if db.dialect != "postgres":
        yield None
        return
    with db.dedicated_connection() as conn:
        while not stopped.is_set():
            if conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),)).fetchone()[0]:
                break
            log.info("leader.standby", name=name)
            stopped.wait(retry_every)
        yield conn


def try_locks(conn: Any, names: Iterable[str]) -> list[str]:
    """Take whichever of the locks of `names` are free, in one round trip on `conn` (which
    then holds them for its session), in sorted order; returns the names taken.

    A projector group leads each of its projections separately: a projection led by another
    copy (or held by an offline rebuild) stays with it, and the group retries it later.
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    rows = conn.execute(
        "SELECT pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(k, i) "
        "ORDER BY i",
        ([lock_key(n) for n in wanted],),
    ).fetchall()
    return [name for name, row in zip(wanted, rows, strict=True) if row[0]]
