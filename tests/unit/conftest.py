"""The API on an embedded app (temp SQLite, projections in threads), and a first tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_api_harness import Harness, fast_passwords


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    fast_passwords(monkeypatch)
    with Harness.start(tmp_path) as harness:
        yield harness


@pytest.fixture
def acme(api: Harness) -> dict[str, Any]:
    """An owner logged in (`token`) with the organization `acme` (the create answer)."""
    token = api.user("owner@example.com")
    return {**api.organization(token, "acme"), "token": token}
