"""Fixtures and helpers of the API/CLI/migration tests (to be merged into conftest.py).

Test modules import them with ``from tests.integration._api_fixtures import *``.
Every test gets its own topic prefix (``settings`` from conftest.py) and its own
tenant keys, so tests never see each other's rows or records.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, create_engine
from typer.testing import CliRunner

from streams.admin import create_topics
from streams.api import DripDrop
from streams.cli.main import app as cli_app
from streams.codecs import Codecs
from streams.db.tables import enrollments
from streams.settings import Settings
from tests.integration.support import settings_env

ROOT = Path(__file__).resolve().parents[2]
DRIPDROP_BIN = ROOT / ".venv" / "bin" / "dripdrop"

__all__ = [
    "CliResult",
    "Outbound",
    "build_outbound",
    "python_subprocess",
    "api",
    "cli",
    "consume",
    "db_engine",
    "insert_enrollment",
    "new_tenant",
    "run_cli",
]


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@pytest.fixture(scope="session")
def db_engine(services: Settings) -> Iterator[Engine]:
    """Engine on the real database, migrated to head."""
    command.upgrade(alembic_config(services.sqlalchemy_url), "head")
    engine = create_engine(services.sqlalchemy_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def api(settings: Settings, db_engine: Engine) -> Iterator[DripDrop]:
    """A client on this test's topic prefix, with every public topic created."""
    create_topics(settings)
    with DripDrop(settings, engine=db_engine) as client:
        yield client


@pytest.fixture
def new_tenant() -> Callable[[], str]:
    def make() -> str:
        return f"acct_{uuid.uuid4().hex[:12]}"

    return make


def insert_enrollment(
    engine: Engine,
    *,
    tenant_key: str,
    sequence_id: str,
    version_id: str,
    subscriber_id: str = "sub-1",
    enrollment_id: str | None = None,
    adapter_id: str | None = None,
    mode: str = "outbound",
    state: str = "active",
) -> str:
    """Write an enrollment row the way the stream processor would (it owns that write)."""
    enrollment_id = enrollment_id or str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            enrollments.insert().values(
                id=enrollment_id,
                tenant_key=tenant_key,
                sequence_id=sequence_id,
                sequence_version_id=version_id,
                subscriber_id=subscriber_id,
                mode=mode,
                adapter_id=adapter_id,
                state=state,
                reason="pool_exhausted" if state == "rejected" else None,
                recipient="prospect@example.com",
            )
        )
    return enrollment_id


def consume(
    settings: Settings, topic: str, *, expect: int, timeout: float = 20.0, settle: float = 1.0
) -> list[tuple[str, int, dict[str, Any], bytes]]:
    """Read a topic from the beginning: (key, partition, decoded value, raw value).

    Waits until at least ``expect`` records arrived, then ``settle`` seconds more so
    that unexpected extra records (duplicates) are seen too.
    """
    codec = Codecs(settings).for_topic(topic)
    name = settings.topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign(
            [
                TopicPartition(name, p, -2)  # -2 = OFFSET_BEGINNING
                for p in range(settings.partitions)
            ]
        )
        records: list[tuple[str, int, dict[str, Any], bytes]] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is None and len(records) >= expect:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            raw = msg.value() or b""
            key = (msg.key() or b"").decode()
            records.append((key, int(msg.partition() or 0), codec.decode(raw), raw))
        return records
    finally:
        consumer.close()


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(settings: Settings, *args: str, stdin: str | None = None) -> CliResult:
    """Run the installed ``dripdrop`` executable in a real subprocess."""
    proc = subprocess.run(
        [str(DRIPDROP_BIN), *args],
        cwd=ROOT,
        env=settings_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(settings: Settings, db_engine: Engine) -> Callable[..., CliResult]:
    """Run the CLI in-process with Typer's CliRunner and this test's settings."""
    create_topics(settings)
    runner = CliRunner()
    env = {k: v for k, v in settings_env(settings).items() if k.startswith("DRIPDROP_")}

    def invoke(*args: str) -> CliResult:
        result = runner.invoke(cli_app, list(args), env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke


def python_subprocess(settings: Settings, code: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet with this test's settings in the environment."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Outbound:
    """One tenant's outbound setup: a gmail adapter in a pause pool, an outbound version."""

    tenant_key: str
    adapter_id: str
    pool_id: str
    sequence_id: str
    version_id: str


def build_outbound(client: DripDrop, tenant_key: str) -> Outbound:
    adapter = client.create_channel_adapter(
        tenant_key=tenant_key, name="gmail-1", provider="gmail", from_address="rep@example.com"
    )
    pool = client.create_adapter_pool(
        tenant_key=tenant_key, name="sales_pool", on_pin_unavailable="pause"
    )
    client.add_pool_member(
        pool.id, tenant_key=tenant_key, adapter_id=adapter.id, member_class="mailbox", weight=1
    )
    sequence = client.create_sequence(tenant_key=tenant_key, key="cold")
    version = client.create_sequence_version(
        sequence.id,
        tenant_key=tenant_key,
        version=2,
        mode="outbound",
        config={"pool_id": pool.id},
    )
    return Outbound(tenant_key, adapter.id, pool.id, sequence.id, version.id)
