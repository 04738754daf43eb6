from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.state import (
    AdapterState,
    DayBucket,
    add_to_bucket,
    initial_adapter_state,
    roll_day,
)

from .conftest import T0


def test_initial_adapter_state_seeds_health_from_adapter(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(
        health_state=HealthState.RESTING, resting_until=T0, health_score=0.4, ramp_started_at=T0
    )
    state = initial_adapter_state(adapter)
    assert (state.health_state, state.resting_until, state.health_score, state.ramp_started_at) == (
        HealthState.RESTING,
        T0,
        0.4,
        T0,
    )


def test_roll_day_new_local_day_resets_counters_late_event_keeps(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory()
    state = AdapterState(adapter_id="a1", day=T0.date(), sent_today=3, pinned_waiting_today=2)
    assert roll_day(state, adapter, T0) is state
    assert roll_day(state, adapter, T0 - timedelta(days=1)) is state
    rolled = roll_day(state, adapter, T0 + timedelta(days=1))
    assert (rolled.day, rolled.sent_today, rolled.pinned_waiting_today) == (
        T0.date() + timedelta(days=1),
        0,
        0,
    )


def test_add_to_bucket_keeps_date_order() -> None:
    later, earlier = T0.date(), T0.date() - timedelta(days=2)
    buckets = add_to_bucket(add_to_bucket((), later, sends=1), earlier, bounces=1)
    buckets = add_to_bucket(buckets, later, complaints=1)
    assert buckets == (
        DayBucket(day=earlier, bounces=1),
        DayBucket(day=later, sends=1, complaints=1),
    )


@settings(max_examples=50, deadline=None)
@given(
    st.builds(
        AdapterState,
        adapter_id=st.text(min_size=1, max_size=8),
        sent_today=st.integers(0, 100),
        last_sent_at=st.none() | st.datetimes(timezones=st.timezones()),
        health_state=st.none() | st.sampled_from(HealthState),
        cooldown=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=7)),
        buckets=st.lists(
            st.builds(DayBucket, day=st.dates(), sends=st.integers(0, 9)), max_size=3
        ).map(tuple),
    )
)
def test_adapter_state_json_round_trip_equal(state: AdapterState) -> None:
    assert AdapterState.model_validate(state.model_dump(mode="json")) == state
    assert AdapterState.model_validate_json(state.model_dump_json()) == state


def test_outbound_policy_json_round_trip_defaults() -> None:
    policy = OutboundPolicy()
    assert policy.health.bounce_rate == 0.02 and policy.health.complaint_rate == 0.003
    assert policy.health.cooldown_cap == timedelta(
        days=7
    ) and policy.terminal_resting_horizon == timedelta(days=7)
    assert OutboundPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_adapter_naive_datetime_rejected() -> None:
    with pytest.raises(ValidationError):
        Adapter(id="a1", tenant_key="t1", name="m", ramp_started_at=datetime(2026, 1, 1))


def test_utc_datetime_other_offset_normalised_to_utc() -> None:
    berlin = datetime(2026, 7, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))
    state = AdapterState(adapter_id="a1", last_sent_at=berlin)
    assert state.last_sent_at == berlin and state.last_sent_at is not None
    assert state.last_sent_at.tzinfo is UTC
