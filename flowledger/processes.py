"""The long-running loops of each process, shared by the CLI and the embedded mode."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

import structlog

from events.application import Flowledger
from projections.runner import ProjectionGroup

log = structlog.get_logger()


class Loop(Protocol):
    """A long-running loop with one active copy: a `Follower`, a `ProjectionGroup` or the
    `Scheduler`."""

    name: str
    stopped: threading.Event

    def run(self) -> None: ...

    def stop(self) -> None: ...


def projection_followers(app: Flowledger, names: Iterable[str] = ()) -> list[ProjectionGroup]:
    """The projector's loop: ONE follower (a `ProjectionGroup`) for the projections `names`
    (all when empty), which reads the log once per batch and applies them all in one
    transaction. A list, so it runs beside the dispatcher's follower the same way."""
    from projections import all_projections  # the read models, imported when needed

    wanted = set(names)
    projections = [p for p in all_projections() if not wanted or p.name in wanted]
    unknown = wanted - {p.name for p in projections}
    if unknown:
        raise ValueError(f"no such projection: {', '.join(sorted(unknown))}")
    if not projections:
        return []
    return [ProjectionGroup(app, projections, pace=app.settings.projection_pace_ms / 1000)]


def run_followers(followers: Sequence[Loop]) -> list[threading.Thread]:
    """Each follower in its own daemon thread; a crash is logged and the loop restarted."""
    threads = []
    for follower in followers:
        thread = threading.Thread(
            target=_keep_running, args=(follower,), name=f"follower-{follower.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def _keep_running(follower: Loop) -> None:
    while not follower.stopped.is_set():
        try:
            follower.run()
        except Exception:
            log.exception("follower.crashed", name=follower.name)
            follower.stopped.wait(1.0)


def stop_on_signals(followers: Sequence[Loop]) -> threading.Event:
    """SIGTERM / SIGINT stop every follower; returns an event set when that happens."""
    done = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("process.stopping", signal=signum)
        for follower in followers:
            follower.stop()
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return done
