"""Recipient-domain throttles (SPEC §13): how many sends a domain may take per UTC hour
and day, through one adapter or through all of a tenant's.

Fixed windows, so the deferral has an exact end (``domain_throttle`` until the next hour
or day). A send counts in the windows of its hand-off time; a counter read in a later
window starts again from zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from dripdrop_core.errors import InputError
from dripdrop_core.models import DomainThrottle, Frozen, UtcDatetime
from dripdrop_core.suppression import parse_entry


class ThrottleCounter(Frozen):
    """Sends counted under one throttle in its current hour and day (UTC)."""

    hour: UtcDatetime | None = None
    in_hour: int = 0
    day: date | None = None
    in_day: int = 0


class Throttled(Frozen):
    """A throttle that applies to a due send, with its counter."""

    throttle: DomainThrottle
    counter: ThrottleCounter = ThrottleCounter()


def parse_domain(text: str) -> str:
    """``gmail.com`` or ``@gmail.com`` → ``gmail.com``. Raises ``InputError``."""
    entry = parse_entry(text)
    if entry.kind != "domain":
        raise InputError(f"a throttle names a domain, not an address: {text[:80]!r}")
    return entry.value.removeprefix("@")


def applies(throttle: DomainThrottle, domain: str, adapter_id: str) -> bool:
    """``throttle`` governs a send to ``domain`` through ``adapter_id``."""
    return throttle.domain == domain and throttle.adapter_id in (None, adapter_id)


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rolled(counter: ThrottleCounter, at: datetime) -> ThrottleCounter:
    """``counter`` as seen at ``at``: a window that has passed counts zero."""
    hour, day = _hour(at), at.astimezone(UTC).date()
    return ThrottleCounter(
        hour=hour,
        in_hour=counter.in_hour if counter.hour == hour else 0,
        day=day,
        in_day=counter.in_day if counter.day == day else 0,
    )


def throttled_until(throttles: Iterable[Throttled], now: datetime) -> datetime | None:
    """The earliest time every applying throttle lets one more send go; ``None``: now."""
    until: datetime | None = None
    for t in throttles:
        counter = rolled(t.counter, now)
        ends = []
        if t.throttle.per_hour is not None and counter.in_hour >= t.throttle.per_hour:
            ends.append(_hour(now) + timedelta(hours=1))
        if t.throttle.per_day is not None and counter.in_day >= t.throttle.per_day:
            day = now.astimezone(UTC).date() + timedelta(days=1)
            ends.append(datetime(day.year, day.month, day.day, tzinfo=UTC))
        for end in ends:
            until = end if until is None else max(until, end)
    return until


def count_send(counter: ThrottleCounter, at: datetime) -> ThrottleCounter:
    """``counter`` after one send handed off at ``at``."""
    now = rolled(counter, at)
    return now.model_copy(update={"in_hour": now.in_hour + 1, "in_day": now.in_day + 1})
