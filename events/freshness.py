"""Which cached aggregates are known to be unchanged, from the log's own NOTIFY.

Every save NOTIFYs the events table's channel (the followers of the log wake on it), and our
recorder names the saved aggregates in the payload (`events/recorder.py`). A listener thread
in each process hears every save of every process, so a cached aggregate that no payload has
named since it was last read from the store is current, and reading it again needs no
query. Each API request read its API key's organization and its workflow that way, one
fast-forward query each, about a third of the request's CPU. Only the read-only lookups of
API requests trust it (`Flowledger.cached`): commands load what they change with a query, as
before, and what follows the log (the dispatcher, the actors) reads with a query too, since
it can read an event before that event's NOTIFY is heard.

A reader takes a token (`reading`) before it reads an aggregate from the store and hands it
back with the aggregate's id (`read`); the cached object is then `trusted` while no
notification naming it (or naming everything: a payload too long for PostgreSQL's 8000
bytes, the listener's reconnection, its memory starting over) has been heard since, and
this process has not saved it since (`saved`: its own writes are read at once, even by a
read that began before the save and ended after it). Notifications are delivered after
their transaction commits, so a change either was seen by the read or is heard after the
mark. What this cannot see is a change committed but not yet heard: a process trusts a
cached aggregate for that long (well under a millisecond when the process is not starved
of CPU). Writers lose nothing by it: a save made on a stale aggregate fails its version
check, and the application then trusts nothing until it has read again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from uuid import UUID

import structlog

log = structlog.get_logger()

#: Aggregates remembered as changed; beyond this the memory starts over (all read again).
MAX_REMEMBERED = 100_000
#: The payload naming every aggregate (a save too large to list its aggregates).
EVERYTHING = "*"
#: PostgreSQL's limit for a NOTIFY payload is 8000 bytes.
MAX_PAYLOAD = 7900


def payload(aggregate_ids: list[UUID]) -> str:
    """The NOTIFY payload of a save: its aggregates' ids, or `EVERYTHING` if too many."""
    text = ",".join(dict.fromkeys(str(i) for i in aggregate_ids))
    return text if len(text) <= MAX_PAYLOAD else EVERYTHING


#: A read's token: (notifications heard, this process's saves) when it began.
Token = tuple[int, int]


class Freshness:
    """A LISTEN connection's account of which aggregates changed, and since when; and which
    cached aggregates of this process are trusted to be current."""

    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._heard = 0  # notifications heard (and connections made) so far
        self._changed: dict[UUID, int] = {}  # aggregate id → `_heard` when last named
        self._everything_at = 0  # `_heard` when everything was last taken as changed
        self._listening = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None  # started by the first `mark`
        self._start_lock = threading.Lock()
        self._reads: dict[UUID, Token] = {}  # aggregate id → the token of its last read
        self._own_saves = 0  # saves this process completed
        self._saved_at: dict[UUID, int] = {}  # aggregate id → `_own_saves` after its last save
        self._own_lock = threading.Lock()

    def trusted(self, aggregate_id: UUID) -> bool:
        """Whether the cached aggregate is current: read since anything (a notification, a
        save of this process) last named it."""
        token = self._reads.get(aggregate_id)
        return (
            token is not None
            and self.fresh(aggregate_id, token[0])
            and self._saved_at.get(aggregate_id, 0) <= token[1]
        )

    def reading(self) -> Token | None:
        """Take before reading an aggregate from the store; None: nothing can be trusted."""
        mark = self.mark()
        return None if mark is None else (mark, self._own_saves)

    def read(self, aggregate_id: UUID, token: Token) -> None:
        """The aggregate was read from the store after `token` was taken."""
        if len(self._reads) >= MAX_REMEMBERED:
            self._reads.clear()
        self._reads[aggregate_id] = token

    def saved(self, aggregate_ids: Iterable[UUID]) -> None:
        """This process saved these: no read begun before counts for them any more."""
        with self._own_lock:
            if len(self._saved_at) >= MAX_REMEMBERED:
                self._saved_at.clear()
                self._reads.clear()
            self._own_saves += 1
            for aggregate_id in aggregate_ids:
                self._saved_at[aggregate_id] = self._own_saves

    def distrust(self) -> None:
        """Something read as current was not (a save lost a version race): trust no read
        made so far."""
        self._reads.clear()

    def mark(self) -> int | None:
        """Take before reading an aggregate from the store; None: trust nothing now.

        The first call starts the listener (a process that never asks holds no connection
        for it); until it listens, nothing is trusted."""
        if self._thread is None:
            self._start()
        return self._heard if self._listening else None

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._listen, name="freshness", daemon=True)
                self._thread.start()

    def fresh(self, aggregate_id: UUID, mark: int | None) -> bool:
        """Whether nothing has named the aggregate since `mark` was taken."""
        return (
            mark is not None
            and self._listening
            and self._everything_at <= mark
            and self._changed.get(aggregate_id, -1) <= mark
        )

    def stop(self) -> None:
        self._stopped.set()

    def _listen(self) -> None:
        import psycopg

        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    self._everything()  # what happened while not listening is unknown
                    self._listening = True
                    while not self._stopped.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self._hear(notify.payload)
            except Exception as e:  # the database restarted, most likely: listen again
                if not self._stopped.is_set():
                    log.warning("freshness.disconnected", error=f"{type(e).__name__}: {e}")
            finally:
                self._listening = False
            self._stopped.wait(1.0)

    def _hear(self, text: str) -> None:
        self._heard += 1
        if not text or text == EVERYTHING:
            self._everything()
            return
        if len(self._changed) >= MAX_REMEMBERED:
            self._everything()
            self._changed = {}
        heard = self._heard
        for part in text.split(","):
            try:
                self._changed[UUID(part)] = heard
            except ValueError:  # not ours: take it as everything
                self._everything()

    def _everything(self) -> None:
        self._heard += 1
        self._everything_at = self._heard
