from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import (
    effective_cap,
    headroom,
    local_day,
    local_instant,
    start_of_next_local_day,
)
from dripdrop_core.state import AdapterState

from .conftest import T0

POLICY = HealthPolicy()
SEED_TABLE = [5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 40, 40]


@pytest.mark.parametrize(("day", "cap"), list(enumerate(SEED_TABLE, start=1)))
def test_effective_cap_seed_ramp_day_matches_table(
    adapter_factory: Callable[..., Adapter], day: int, cap: int
) -> None:
    adapter = adapter_factory(daily_cap=40, ramp_floor=5, ramp_increment=3, ramp_started_at=T0)
    state = AdapterState(adapter_id="a1", health_state=HealthState.RAMPING)
    now = T0 + timedelta(days=day - 1, hours=23, minutes=59)
    assert effective_cap(adapter, state, now, policy=POLICY) == cap


def test_effective_cap_before_ramp_start_uses_floor(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(daily_cap=40, ramp_floor=5, ramp_increment=3, ramp_started_at=T0)
    assert (
        effective_cap(adapter, AdapterState(adapter_id="a1"), T0 - timedelta(days=3), policy=POLICY)
        == 5
    )


def test_effective_cap_probing_returns_probe_budget(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(daily_cap=None)
    state = AdapterState(adapter_id="a1", health_state=HealthState.PROBING)
    assert effective_cap(adapter, state, T0, policy=HealthPolicy(probe_budget=7)) == 7


def test_effective_cap_no_daily_cap_returns_none(adapter_factory: Callable[..., Adapter]) -> None:
    assert (
        effective_cap(adapter_factory(), AdapterState(adapter_id="a1"), T0, policy=POLICY) is None
    )


def test_effective_cap_partial_ramp_fields_returns_daily_cap(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(daily_cap=50, ramp_floor=5)
    assert effective_cap(adapter, AdapterState(adapter_id="a1"), T0, policy=POLICY) == 50


def test_effective_cap_state_anchor_overrides_adapter(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(daily_cap=40, ramp_floor=5, ramp_increment=3, ramp_started_at=T0)
    state = AdapterState(adapter_id="a1", ramp_started_at=T0 + timedelta(days=10))
    assert effective_cap(adapter, state, T0 + timedelta(days=10, hours=1), policy=POLICY) == 5


def test_headroom_counts_sent_and_waiting_pins(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory(daily_cap=10)
    state = AdapterState(adapter_id="a1", sent_today=4, pinned_waiting_today=5)
    assert headroom(adapter, state, T0, policy=POLICY) == 1
    full = state.model_copy(update={"pinned_waiting_today": 9})
    assert headroom(adapter, full, T0, policy=POLICY) == 0
    assert headroom(adapter_factory(), state, T0, policy=POLICY) is None


def test_local_day_timezone_differs_from_utc() -> None:
    late = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    assert local_day("UTC", late) == date(2026, 11, 2)
    assert local_day("Europe/Berlin", late) == date(2026, 11, 3)
    assert local_day("America/New_York", datetime(2026, 11, 3, 3, 0, tzinfo=UTC)) == date(
        2026, 11, 2
    )


@pytest.mark.parametrize(
    ("tz", "now", "expected"),
    [
        # Berlin spring forward (29 Mar 2026): midnight after 28 Mar is still CET (+01:00).
        (
            "Europe/Berlin",
            datetime(2026, 3, 28, 12, tzinfo=UTC),
            datetime(2026, 3, 28, 23, tzinfo=UTC),
        ),
        # The day after the jump starts at CEST midnight (+02:00).
        (
            "Europe/Berlin",
            datetime(2026, 3, 29, 12, tzinfo=UTC),
            datetime(2026, 3, 29, 22, tzinfo=UTC),
        ),
        # Berlin fall back (25 Oct 2026): the 25th is 25 hours long.
        (
            "Europe/Berlin",
            datetime(2026, 10, 25, 12, tzinfo=UTC),
            datetime(2026, 10, 25, 23, tzinfo=UTC),
        ),
        # New York spring forward (8 Mar 2026) and fall back (1 Nov 2026).
        (
            "America/New_York",
            datetime(2026, 3, 8, 12, tzinfo=UTC),
            datetime(2026, 3, 9, 4, tzinfo=UTC),
        ),
        (
            "America/New_York",
            datetime(2026, 11, 1, 12, tzinfo=UTC),
            datetime(2026, 11, 2, 5, tzinfo=UTC),
        ),
        ("UTC", datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)),
    ],
)
def test_start_of_next_local_day_dst_lands_on_local_midnight(
    tz: str, now: datetime, expected: datetime
) -> None:
    assert start_of_next_local_day(tz, now) == expected


def test_local_instant_skipped_time_maps_after_jump() -> None:
    # 02:30 does not exist in Berlin on 29 Mar 2026; clocks jump 02:00 CET → 03:00 CEST.
    at = local_instant("Europe/Berlin", date(2026, 3, 29), datetime(2026, 1, 1, 2, 30).time())
    assert at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
