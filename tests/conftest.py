"""Fixtures shared by every kind of test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest

from flowledger.settings import Settings

# An existing database on the PostgreSQL server the integration tests may use to create theirs.
PG_ADMIN_URL = os.environ.get(
    "FLOWLEDGER_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def fresh_database(prefix: str = "flowledger_test") -> Iterator[str]:
    """A new PostgreSQL database for the duration of the block; its URL.

    No server is a failure, not a skip: these tests are the proof.
    """
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunparse(urlparse(PG_ADMIN_URL)._replace(path=f"/{name}"))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_app(url: str, var_dir: Any, **settings: Any) -> Iterator[Any]:
    """A Flowledger application on the PostgreSQL database `url`, closed after the block."""
    from events.application import Flowledger

    secret = "test-jwt-secret-" + uuid.uuid4().hex
    application = Flowledger(
        Settings(database_url=url, jwt_secret=secret, var_dir=var_dir, **settings)
    )
    try:
        yield application
    finally:
        application.close()
        application.db.close()


@pytest.fixture(scope="session")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for a fresh PostgreSQL database, created for this test session."""
    with fresh_database() as url:
        yield Settings(
            database_url=url,
            jwt_secret="test-jwt-secret-" + uuid.uuid4().hex,
            var_dir=tmp_path_factory.mktemp("var"),
        )
