"""Integration fixtures: a unique topic prefix, app id and data dir per test; real services.

``DRIPDROP_KEEP_TOPICS=1`` keeps a test's topics after it ends, to read them when debugging.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.mailsink import SmtpSink
from streams.pump.localrun import PumpProcess
from streams.settings import Settings
from tests.integration.mail_fixtures import mail_server  # noqa: F401 - the fixture
from tests.integration.support import WorkerProcess

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            assert isinstance(item, pytest.Function), item  # only test functions live here
            item.fixturenames.insert(0, "services")


@pytest.fixture
def settings(services: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings isolated for one test: own topics, consumer group, RocksDB dir."""
    run = uuid.uuid4().hex[:10]
    isolated = services.model_copy(
        update={
            "topic_prefix": f"t{run}.",
            "app_id": f"dripdrop-t{run}",
            "data_dir": str(tmp_path / "worker-data"),
        }
    )
    yield isolated
    if not os.environ.get("DRIPDROP_KEEP_TOPICS"):
        delete_topics_with_prefix(isolated)


@pytest.fixture
def topics(settings: Settings) -> Callable[..., list[str]]:
    """Create topics (public ones by default) for this test's prefix."""

    def create(*names: str) -> list[str]:
        return create_topics(settings, names) if names else create_topics(settings)

    return create


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) recording what it receives."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def client(settings: Settings, topics: Callable[..., list[str]]) -> Iterator[DripDrop]:
    """The host API on this test's topics (all created)."""
    topics()
    with DripDrop(settings) as dd:
        yield dd


@pytest.fixture
def worker_factory(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; every one still running at teardown is stopped."""
    started: list[WorkerProcess] = []

    def start(
        worker_settings: Settings | None = None, *, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(worker_settings or settings, log, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.alive():
            worker.stop()


@pytest.fixture
def pump_factory(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., PumpProcess]]:
    """Starts ``dripdrop pump`` processes (``--refresh-seconds 0.5`` and the given args);
    stops them at the end."""
    started: list[PumpProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> PumpProcess:
        pump = PumpProcess(
            settings,
            tmp_path / f"pump-{len(started)}.log",
            args=("--refresh-seconds", "0.5", *args),
            env=env,
        )
        started.append(pump)
        return pump

    yield start
    for pump in started:
        pump.stop()  # also closes the log of one that died by itself (a crash point)
