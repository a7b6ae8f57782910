"""Every knob of Flowledger, read once from `FLOWLEDGER_*` environment variables.

Defaults give the embedded mode (SQLite file, in-process broker). A bad value stops the
process with pydantic's message, which names the variable.
"""

from __future__ import annotations

import base64
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VERSION = "0.1.0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWLEDGER_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./var/flowledger.db"
    redis_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    port: int = Field(8000, validation_alias=AliasChoices("PORT", "FLOWLEDGER_PORT"))
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_ttl_seconds: int = Field(3600, ge=60)
    refresh_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    master_key: str | None = None
    internal_secret: str | None = None
    operator_emails: Annotated[frozenset[str], NoDecode] = frozenset()
    stripe_webhook_secret: str | None = None
    log_format: Literal["console", "json"] | None = None
    log_level: str = "info"
    ip_rate_limit: int = Field(120, ge=1)
    rate_limit_scale: float = Field(1.0, gt=0)
    # Multiplies the outgoing webhooks' retry delays (5 s, 30 s, 2 min, ...); tests shrink it.
    webhook_backoff_scale: float = Field(1.0, gt=0)
    # How long a command waits for its read model to catch up (read-your-writes).
    read_your_writes_timeout: float = Field(2.0, ge=0)
    # Followers of the log: at most one batch per this many ms while caught up, so under load
    # a batch carries several saves' events (projections/runner.py `pace_after`).
    dispatch_pace_ms: int = Field(5, ge=0, le=1000)
    projection_pace_ms: int = Field(20, ge=0, le=5000)
    # Dramatiq: longest idle wait of a Redis consumer in ms; enqueues wake it at once
    # (workers/broker.py). Bounds how long a stopping worker takes to notice.
    worker_timeout_ms: int = Field(1000, ge=1)
    # Dramatiq: after this long without a heartbeat a worker's messages are redelivered.
    heartbeat_timeout_ms: int = Field(15000, ge=1000)
    # API requests' read-only lookups (the API key's organization, the user, the workflow
    # to run) trust a cached aggregate until a save's NOTIFY names it, instead of asking
    # PostgreSQL each time (events/freshness.py); off: every lookup asks.
    trust_notified_cache: bool = True
    # Largest number of PostgreSQL connections of each pool (event store, read side) per process.
    db_pool_max: int = Field(8, ge=2, le=100)
    # Redis key prefix of the Dramatiq queues (tests isolate themselves with it).
    broker_namespace: str = "flowledger"
    # Where the embedded mode keeps its generated secrets.
    var_dir: Path = Path("./var")
    # -- monitoring (api/health.py, api/metrics.py) --
    # Base URL of the n8n instance `/health` checks (GET <url>/healthz); unset: not_configured.
    n8n_url: str | None = None
    # Prometheus multiprocess files of gunicorn and Dramatiq workers; default <var_dir>/metrics.
    metrics_dir: Path | None = None
    # When set, `/metrics` wants `Authorization: Bearer <token>`; unset, it is open.
    metrics_token: str | None = None
    # -- projection rebuilds (projections/rebuild.py) --
    # Processes replaying a read model that can be split by key; 1 replays in one process.
    rebuild_workers: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1), ge=1, le=32)
    # Below this many positions a rebuild replays in one process (spawning costs ~1 s).
    rebuild_parallel_min: int = Field(50_000, ge=0)

    @field_validator("operator_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(e.strip().lower() for e in value.split(",") if e.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("master_key")
    @classmethod
    def _master_key_is_32_bytes(cls, value: str | None) -> str | None:
        if value is not None and len(base64.b64decode(value + "==")) != 32:
            raise ValueError("must be base64 of 32 bytes")
        return value

    @property
    def is_postgres(self) -> bool:
        return not self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        """Embedded mode: no Redis, so broker, rate limits and nonces live in-process."""
        return self.redis_url is None

    @property
    def metrics_path(self) -> Path:
        """The directory of the Prometheus multiprocess files (one subdirectory per server)."""
        return self.metrics_dir if self.metrics_dir is not None else self.var_dir / "metrics"

    @property
    def sqlite_path(self) -> str:
        path = self.database_url.removeprefix("sqlite:///").removeprefix("sqlite://")
        return path or ":memory:"

    @cached_property
    def jwt_key(self) -> str:
        """The HS256 key: from settings, else generated once and kept under `var_dir`."""
        if self.jwt_secret:
            return self.jwt_secret
        if self.is_postgres:
            raise ValueError("FLOWLEDGER_JWT_SECRET is required with PostgreSQL")
        return _kept_secret(self.var_dir / "jwt_secret")

    @cached_property
    def master_key_bytes(self) -> bytes:
        """32 bytes wrapping every data key; derived from the JWT key when unset."""
        if self.master_key:
            return base64.b64decode(self.master_key + "==")
        import hashlib

        return hashlib.sha256(b"flowledger-master:" + self.jwt_key.encode()).digest()

    def postgres_env(self) -> dict[str, str]:
        """The eventsourcing library's persistence settings for our database URL."""
        if not self.is_postgres:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.sqlite_path,
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        url = urlparse(self.database_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": str(self.db_pool_max - 2),
            "POSTGRES_CONN_MAX_AGE": "",
            "POSTGRES_LOCK_TIMEOUT": "5",
            # The library's recorder with its hot statements composed once (events/recorder.py).
            "APPLICATION_RECORDER_TOPIC": "events.recorder:FlowledgerRecorder",
        }


def _kept_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
