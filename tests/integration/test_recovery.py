"""A lost message (Redis restarted, embedded process stopped) is re-sent by the sweep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from events.application import Flowledger
from flowledger.settings import Settings
from projections.runner import wait_for
from tests.integration.test_pipeline import backend, run_one, running, until_terminal
from tests.support.fake_n8n import FakeN8n
from workers.recovery import sweep

__all__ = ["backend"]  # the parametrised fixture, shared with the pipeline tests


@pytest.fixture
def undispatched(backend: Settings) -> Iterator[Flowledger]:
    """A worker and the executions read model, but no dispatcher: every message is lost."""
    yield from running(backend, with_dispatcher=False)


def _projected(app: Flowledger) -> None:
    assert wait_for(app.db, "executions", app.recorder.max_notification_id() or 0, timeout=10)


def test_sweep_resends_a_lost_call(undispatched: Flowledger) -> None:
    with FakeN8n() as n8n:
        _, execution_id = run_one(undispatched, n8n.webhook_url("sync"))
        _projected(undispatched)
        assert str(execution_id) not in sweep(undispatched)  # too recent to be called lost
        later = datetime.now(UTC) + timedelta(seconds=40)
        assert str(execution_id) in sweep(undispatched, now=later)
        assert until_terminal(undispatched, execution_id).status == "completed"


def test_sweep_times_out_a_run_past_its_deadline(undispatched: Flowledger) -> None:
    with FakeN8n() as n8n:
        _, execution_id = run_one(undispatched, n8n.webhook_url("sync"), timeout_seconds=1)
        _projected(undispatched)
        later = datetime.now(UTC) + timedelta(seconds=60)
        assert str(execution_id) in sweep(undispatched, now=later)
        assert until_terminal(undispatched, execution_id).status == "timed_out"
