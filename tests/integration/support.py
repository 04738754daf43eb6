"""Helpers for integration tests: worker subprocesses, producers, polling with timeouts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Producer

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


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


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to see the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPDROP_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"DRIPDROP_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A Faust worker in its own process (guides/faust-and-kafka.md §4.2)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.worker", "worker", "-l", "info", "--without-web"],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful stop (SIGTERM commits acked offsets); SIGKILL if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """Crash it: no commit, no flush."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


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
