"""Helpers for integration tests: worker subprocesses, producers, polling with timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Producer

from streams.api import Accepted
from streams.localrun import WorkerProcess, settings_env
from streams.settings import Settings

__all__ = ["WorkerProcess", "enrolled_id", "producer", "settings_env", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def enrolled_id(accepted: Accepted) -> str:
    """The enrollment id of an accepted ``enroll`` command (set for every enroll)."""
    assert accepted.enrollment_id is not None, accepted
    return accepted.enrollment_id


def wait_for(
    check: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what or check}: last={last!r}"
    )


def producer(settings: Settings) -> Producer:
    """A host-side producer as the docs tell hosts to configure it (murmur2, idempotent)."""
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
