"""The process's one Flowledger application, shared by every actor thread."""

from __future__ import annotations

import threading

from events.application import Flowledger
from flowledger.settings import Settings

_app: Flowledger | None = None
_lock = threading.Lock()


def use(app: Flowledger) -> None:
    """Embedded mode and tests hand their own application to the actors."""
    global _app
    _app = app


def app() -> Flowledger:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = Flowledger(Settings())
    return _app
