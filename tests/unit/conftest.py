"""An embedded application (temp SQLite, no servers); the API around one, and a first tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.application import Flowledger
from flowledger.settings import Settings
from tests.unit.test_api_harness import Harness, fast_passwords


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flowledger]:
    """The application on a SQLite file of its own, closed after the test."""
    application = Flowledger(Settings(database_url=f"sqlite:///{tmp_path}/es.db", var_dir=tmp_path))
    yield application
    application.close()
    application.db.close()


@pytest.fixture
def harness_options() -> dict[str, Any]:
    """Settings the `api` harness starts with; a test module overrides this fixture."""
    return {}


@pytest.fixture
def api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harness_options: dict[str, Any]
) -> Iterator[Harness]:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path, **harness_options) as harness:
        yield harness


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    """An owner logged in (`token`) with the organization `acme` (the create answer)."""
    return api.tenant("acme")
