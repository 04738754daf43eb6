from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from dripdrop_core.models import DelayFrom, SendingWindow, Step
from dripdrop_core.scheduling import (
    bucket_start,
    is_in_sending_window,
    next_window_start,
    ooo_resume_at,
    step_due_at,
    tick_bucket,
)

from .conftest import T0


def test_step_due_at_delay_from_previous_send_or_enrollment(
    step_factory: Callable[..., Step],
) -> None:
    step = step_factory(delay_seconds=3600)
    assert step_due_at(step, enrolled_at=T0, previous_sent_at=None) == T0 + timedelta(hours=1)
    later = T0 + timedelta(days=2)
    assert step_due_at(step, enrolled_at=T0, previous_sent_at=later) == later + timedelta(hours=1)
    fixed = step_factory(delay_seconds=60, delay_from=DelayFrom.ENROLLMENT)
    assert step_due_at(fixed, enrolled_at=T0, previous_sent_at=later) == T0 + timedelta(minutes=1)


NINE_TO_FIVE = SendingWindow(start_hour=9, end_hour=17)
TWO_TO_FOUR = SendingWindow(start_hour=2, end_hour=4)
ONE_TO_THREE = SendingWindow(start_hour=1, end_hour=3)


@pytest.mark.parametrize(
    ("window", "tz", "now", "expected"),
    [
        # Berlin spring forward, 29 Mar 2026 (CET +1 → CEST +2 at 02:00 local).
        (
            NINE_TO_FIVE,
            "Europe/Berlin",
            datetime(2026, 3, 28, 20, tzinfo=UTC),
            datetime(2026, 3, 29, 7, tzinfo=UTC),
        ),
        # Window start 02:00 does not exist that day: it opens at the jump, 03:00 CEST.
        (
            TWO_TO_FOUR,
            "Europe/Berlin",
            datetime(2026, 3, 28, 20, tzinfo=UTC),
            datetime(2026, 3, 29, 1, tzinfo=UTC),
        ),
        # Berlin fall back, 25 Oct 2026 (CEST +2 → CET +1 at 03:00 local).
        (
            NINE_TO_FIVE,
            "Europe/Berlin",
            datetime(2026, 10, 24, 20, tzinfo=UTC),
            datetime(2026, 10, 25, 8, tzinfo=UTC),
        ),
        # 02:00 happens twice; the window opens at the first one (CEST).
        (
            TWO_TO_FOUR,
            "Europe/Berlin",
            datetime(2026, 10, 24, 20, tzinfo=UTC),
            datetime(2026, 10, 25, 0, tzinfo=UTC),
        ),
        # New York spring forward, 8 Mar 2026 (EST -5 → EDT -4 at 02:00 local).
        (
            NINE_TO_FIVE,
            "America/New_York",
            datetime(2026, 3, 8, 3, tzinfo=UTC),
            datetime(2026, 3, 8, 13, tzinfo=UTC),
        ),
        (
            TWO_TO_FOUR,
            "America/New_York",
            datetime(2026, 3, 8, 3, tzinfo=UTC),
            datetime(2026, 3, 8, 7, tzinfo=UTC),
        ),
        # New York fall back, 1 Nov 2026 (EDT -4 → EST -5 at 02:00 local); 01:00 repeats.
        (
            NINE_TO_FIVE,
            "America/New_York",
            datetime(2026, 11, 1, 3, tzinfo=UTC),
            datetime(2026, 11, 1, 14, tzinfo=UTC),
        ),
        (
            ONE_TO_THREE,
            "America/New_York",
            datetime(2026, 11, 1, 3, tzinfo=UTC),
            datetime(2026, 11, 1, 5, tzinfo=UTC),
        ),
    ],
)
def test_next_window_start_across_dst_opens_at_local_start(
    window: SendingWindow, tz: str, now: datetime, expected: datetime
) -> None:
    assert next_window_start(window, tz, now) == expected


def test_next_window_start_window_inside_skipped_hour_moves_to_next_day() -> None:
    only_two = SendingWindow(start_hour=2, end_hour=3)
    opens = next_window_start(only_two, "Europe/Berlin", datetime(2026, 3, 28, 20, tzinfo=UTC))
    assert opens == datetime(2026, 3, 30, 0, tzinfo=UTC)  # 02:00 CEST on the 30th


def test_next_window_start_inside_window_returns_now() -> None:
    now = datetime(2026, 3, 29, 10, tzinfo=UTC)  # 12:00 CEST
    assert next_window_start(NINE_TO_FIVE, "Europe/Berlin", now) == now


def test_sending_window_wrapping_midnight_allows_only_night_hours() -> None:
    night = SendingWindow(start_hour=22, end_hour=6)
    assert is_in_sending_window(night, "UTC", datetime(2026, 1, 1, 23, tzinfo=UTC))
    assert is_in_sending_window(night, "UTC", datetime(2026, 1, 1, 5, tzinfo=UTC))
    assert not is_in_sending_window(night, "UTC", datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert next_window_start(night, "UTC", datetime(2026, 1, 1, 12, tzinfo=UTC)) == datetime(
        2026, 1, 1, 22, tzinfo=UTC
    )


def test_ooo_resume_at_local_morning_never_in_past() -> None:
    assert ooo_resume_at(date(2027, 7, 1), "Europe/Berlin", morning_hour=9, now=T0) == datetime(
        2027, 7, 1, 7, tzinfo=UTC
    )
    assert ooo_resume_at(date(2020, 1, 1), "UTC", morning_hour=9, now=T0) == T0


def test_tick_bucket_never_before_due_time() -> None:
    exact = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert bucket_start(tick_bucket(exact)) == exact
    assert bucket_start(tick_bucket(exact + timedelta(seconds=1))) == exact + timedelta(minutes=1)
    assert bucket_start(tick_bucket(exact + timedelta(microseconds=1))) == exact + timedelta(
        minutes=1
    )
    assert tick_bucket(exact, 3600) == int(datetime(2026, 1, 1, 1, tzinfo=UTC).timestamp())
