"""Due times, recipient sending windows, OOO returns and tick buckets (SPEC §7, §8, §13).

Every local time is resolved with zoneinfo, so windows stay right across DST.
No state lives here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dripdrop_core.errors import InvariantError
from dripdrop_core.models import DelayFrom, SendingWindow, Step
from dripdrop_core.ramp import local_instant


def step_due_at(
    step: Step, *, enrolled_at: datetime, previous_sent_at: datetime | None
) -> datetime:
    """Return when ``step`` becomes due (SPEC §7).

    ``delay_from=previous_send`` counts from the previous send, or from the
    enrollment for the first step (there is no previous send yet).
    """
    anchor = enrolled_at
    if step.delay_from is DelayFrom.PREVIOUS_SEND and previous_sent_at is not None:
        anchor = previous_sent_at
    return anchor + timedelta(seconds=step.delay_seconds)


def is_in_sending_window(window: SendingWindow, tz: str, at: datetime) -> bool:
    """Return whether local hour of ``at`` in ``tz`` is inside the sending window."""
    hour = at.astimezone(ZoneInfo(tz)).hour
    if window.start_hour < window.end_hour:
        return window.start_hour <= hour < window.end_hour
    return hour >= window.start_hour or hour < window.end_hour


def next_window_start(window: SendingWindow, tz: str, now: datetime) -> datetime:
    """Return ``now`` if sending is allowed, else the next instant the window opens.

    A start hour skipped by DST opens at the instant clocks jump to (03:00 CEST
    for a 02:00 start on the spring-forward day); a repeated one at its first
    occurrence. A window entirely inside a skipped hour is skipped that day.
    """
    if is_in_sending_window(window, tz, now):
        return now
    today = now.astimezone(ZoneInfo(tz)).date()
    # Two days always suffice (a start hour is skipped on one day at most); a
    # week also covers zones that once skipped a whole calendar day.
    for offset in range(8):
        candidate = local_instant(tz, today + timedelta(days=offset), time(window.start_hour))
        if candidate > now and is_in_sending_window(window, tz, candidate):
            return candidate
    raise InvariantError(
        f"sending window {window.start_hour}-{window.end_hour} never opens in {tz}"
    )  # pragma: no cover


def ooo_resume_at(return_date: date, tz: str, *, morning_hour: int, now: datetime) -> datetime:
    """Return the recipient's local morning of ``return_date``, never before ``now``."""
    return max(local_instant(tz, return_date, time(morning_hour)), now)


def tick_bucket(due_at: datetime, bucket_seconds: int = 60) -> int:
    """Return the due-time index bucket (epoch seconds) that fires ``due_at``.

    The bucket is the first tick boundary at or after the due time, so firing a
    bucket never sends early; equal inputs give equal buckets, so a repeated
    tick is idempotent.
    """
    epoch = int((due_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1))
    exact = (due_at - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(seconds=1) == timedelta(0)
    if not exact:
        epoch += 1
    return -(-epoch // bucket_seconds) * bucket_seconds


def bucket_start(bucket: int) -> datetime:
    """Return the UTC instant of a tick bucket."""
    return datetime.fromtimestamp(bucket, tz=UTC)
