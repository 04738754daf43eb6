"""Clocks (SPEC §11): every decision takes ``now`` from one of these, never ``datetime.now()``.

``ScaledClock`` maps real time onto simulated time so a 14-day ramp runs through the real
pipeline in seconds: ``simulated = epoch + (real - origin) * scale``. Worker processes of one
test or demo share ``origin`` and ``epoch`` through the environment, so they agree on "now".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from streams.settings import Settings


class Clock(Protocol):
    def now(self) -> datetime: ...

    def real_seconds(self, simulated_seconds: float) -> float:
        """How long a simulated duration lasts in real seconds."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def real_seconds(self, simulated_seconds: float) -> float:
        return simulated_seconds


class ScaledClock:
    def __init__(self, *, scale: float, epoch: float, origin: float) -> None:
        self.scale = scale
        self.epoch = epoch
        self.origin = origin

    def now(self) -> datetime:
        simulated = self.epoch + (time.time() - self.origin) * self.scale
        return datetime.fromtimestamp(simulated, UTC)

    def real_seconds(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.scale


def clock_from(settings: Settings) -> Clock:
    """The clock the settings ask for: scaled when ``clock_scale != 1`` or an epoch is set."""
    if settings.clock_scale == 1.0 and settings.clock_epoch is None:
        return SystemClock()
    origin = settings.clock_origin if settings.clock_origin is not None else time.time()
    epoch = settings.clock_epoch if settings.clock_epoch is not None else origin
    return ScaledClock(scale=settings.clock_scale, epoch=epoch, origin=origin)
