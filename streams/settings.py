"""Settings: the only place that reads the environment (prefix ``DRIPDROP_``).

Everything else receives a ``Settings`` instance explicitly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.topics import PUBLIC

TOPIC_NAMES = PUBLIC
"""Public topics (SPEC §3), without the prefix: ``streams.topics.PUBLIC``."""


class Settings(BaseSettings):
    """Runtime configuration. Defaults match ``make services`` (ports 19092 / 15432)."""

    model_config = SettingsConfigDict(env_prefix="DRIPDROP_", extra="ignore", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://dripdrop@127.0.0.1:15432/dripdrop"
    topic_prefix: str = "dripdrop."
    partitions: int = Field(default=8, gt=0)
    replication_factor: int = Field(default=1, gt=0)
    schema_registry_url: str | None = None
    app_id: str = "dripdrop"
    data_dir: str = ".dripdrop/worker-data"
    # Scaled clock (SPEC §11): simulated seconds per real second, from clock_epoch.
    clock_scale: float = Field(default=1.0, gt=0)
    clock_epoch: float | None = None  # simulated unix time at clock_origin
    clock_origin: float | None = None  # real unix time the simulation starts from
    tick_interval_seconds: float = Field(default=1.0, gt=0)
    metrics_port: int | None = None
    log_format: Literal["text", "json"] = "text"  # json: JSON-lines logs (streams/jsonlog.py)
    sink_batch_size: int = Field(default=500, gt=0)
    sink_batch_seconds: float = Field(default=0.05, gt=0)
    # One-click unsubscribe (streams/web.py): the HMAC key as a secret reference
    # (env:NAME or file:/path, streams/secrets.py), never the key itself.
    unsubscribe_key: str | None = None
    # Where recipients reach that endpoint: sends link to {unsubscribe_base_url}/u/{token}
    # (RFC 8058 wants https), with a mailto: alternative when unsubscribe_mailto is set.
    unsubscribe_base_url: str | None = None
    unsubscribe_mailto: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, gt=0)
    # The per-adapter circuit breaker of adapter-level send failures (SPEC §7): opens after
    # this many consecutive ones, holds the adapter's sends this long (real seconds, doubled
    # after each failed probe up to 12 times as long), then lets one probe through.
    circuit_threshold: int = Field(default=5, gt=0)
    circuit_cooldown_seconds: float = Field(default=300.0, gt=0)
    # A recipient the receiving server keeps deferring (4xx) is retried this long
    # (simulated hours), then the step fails and the enrollment stops (SPEC §7).
    recipient_retry_hours: float = Field(default=24.0, gt=0)
    # How long (real seconds) the sender trusts the adapter rows it read: an adapter update
    # (another host, another secret reference) reaches a running worker within this.
    adapter_refresh_seconds: float = Field(default=30.0, gt=0)
    # A reply no id matches (a client that drops In-Reply-To and References) is correlated
    # to the last live enrollment its adapter sent to the reply's From (SPEC §8).
    correlate_participants: bool = True

    def topic(self, name: str) -> str:
        """Full topic name for one of ``TOPIC_NAMES`` (or an internal topic)."""
        return f"{self.topic_prefix}{name}"

    @property
    def sqlalchemy_url(self) -> str:
        """SQLAlchemy URL for psycopg 3 (``postgresql+psycopg://``)."""
        url = self.database_url
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url
