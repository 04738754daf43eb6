from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dripdrop_core.circuit import Circuit, CircuitState
from dripdrop_core.decisions import Defer, Hold, Pause, Reassign, Send, Skip
from dripdrop_core.dispatch import DueStep, decide_dispatch, terminal_reason
from dripdrop_core.health import ExternalHealth, apply_external, count_outcome, fire_health_timer
from dripdrop_core.models import (
    Adapter,
    EnrollmentState,
    HealthState,
    Mode,
    PinPolicy,
    SendingWindow,
    Step,
)
from dripdrop_core.pacing import earliest_send_at, record_send
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.pools import reserve_pin
from dripdrop_core.ramp import effective_cap, local_day
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState

from .conftest import T0

POLICY = OutboundPolicy()


def _due(step: Step, **kw: Any) -> DueStep:
    fields: dict[str, Any] = {
        "enrollment_id": "e1",
        "step_execution_id": "x1",
        "tenant_key": "t1",
        "step": step,
        "mode": Mode.OUTBOUND,
        "pin_policy": PinPolicy.PAUSE,
    }
    fields.update(kw)
    return DueStep(**fields)


def _active(**kw: Any) -> AdapterState:
    return AdapterState(adapter_id="a1", health_state=HealthState.ACTIVE, **kw)


def test_dispatch_fresh_adapter_sends(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    decision = decide_dispatch(
        _due(step_factory()), adapter_factory(), _active(), T0, policy=POLICY
    )
    assert (
        isinstance(decision, Send)
        and decision.adapter_id == "a1"
        and decision.reason is Reason.READY
    )


def test_dispatch_cap_reached_defers_to_next_local_midnight(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    adapter = adapter_factory(daily_cap=8, timezone="Europe/Berlin")
    now = datetime(2026, 11, 28, 15, tzinfo=UTC)
    state = _active(day=local_day("Europe/Berlin", now), sent_today=8)
    decision = decide_dispatch(_due(step_factory()), adapter, state, now, policy=POLICY)
    assert isinstance(decision, Defer) and decision.reason is Reason.CAP
    assert decision.until == datetime(2026, 11, 28, 23, tzinfo=UTC)
    assert (decision.facts.cap, decision.facts.sent_today) == (8, 8)


def test_dispatch_cap_counted_in_adapter_local_day(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    # 23:30 UTC is already the next day in Berlin: yesterday's 8 sends no longer count.
    adapter = adapter_factory(daily_cap=8, timezone="Europe/Berlin")
    state = _active(day=datetime(2026, 11, 28).date(), sent_today=8)
    assert isinstance(
        decide_dispatch(
            _due(step_factory()),
            adapter,
            state,
            datetime(2026, 11, 28, 22, 59, tzinfo=UTC),
            policy=POLICY,
        ),
        Defer,
    )
    late = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
    assert isinstance(
        decide_dispatch(_due(step_factory()), adapter, state, late, policy=POLICY), Send
    )


@pytest.mark.parametrize(
    ("tz", "now", "midnight"),
    [
        (
            "Europe/Berlin",
            datetime(2026, 3, 28, 20, tzinfo=UTC),
            datetime(2026, 3, 28, 23, tzinfo=UTC),
        ),
        (
            "Europe/Berlin",
            datetime(2026, 10, 25, 20, tzinfo=UTC),
            datetime(2026, 10, 25, 23, tzinfo=UTC),
        ),
        (
            "America/New_York",
            datetime(2026, 3, 8, 20, tzinfo=UTC),
            datetime(2026, 3, 9, 4, tzinfo=UTC),
        ),
        (
            "America/New_York",
            datetime(2026, 11, 1, 20, tzinfo=UTC),
            datetime(2026, 11, 2, 5, tzinfo=UTC),
        ),
    ],
)
def test_dispatch_cap_on_dst_day_defers_to_local_midnight(
    adapter_factory: Callable[..., Adapter],
    step_factory: Callable[..., Step],
    tz: str,
    now: datetime,
    midnight: datetime,
) -> None:
    adapter = adapter_factory(daily_cap=1, timezone=tz)
    state = _active(day=local_day(tz, now), sent_today=1)
    decision = decide_dispatch(_due(step_factory()), adapter, state, now, policy=POLICY)
    assert isinstance(decision, Defer) and decision.until == midnight


def test_dispatch_gap_defers_to_exact_last_send_plus_gap(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    adapter = adapter_factory(min_gap_seconds=90)
    state = _active(last_sent_at=T0)
    decision = decide_dispatch(
        _due(step_factory()), adapter, state, T0 + timedelta(seconds=30), policy=POLICY
    )
    assert isinstance(decision, Defer) and decision.reason is Reason.GAP
    assert decision.until == T0 + timedelta(seconds=90)
    at_gap = decide_dispatch(
        _due(step_factory()), adapter, state, T0 + timedelta(seconds=90), policy=POLICY
    )
    assert isinstance(at_gap, Send)
    assert earliest_send_at(adapter_factory(), state) is None


def test_dispatch_resting_not_terminal_defers_until_rest_end(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    state = AdapterState(
        adapter_id="a1", health_state=HealthState.RESTING, resting_until=T0 + timedelta(days=2)
    )
    decision = decide_dispatch(_due(step_factory()), adapter_factory(), state, T0, policy=POLICY)
    assert isinstance(decision, Defer) and decision.reason is Reason.RESTING
    assert decision.until == T0 + timedelta(days=2)
    elapsed = decide_dispatch(
        _due(step_factory()), adapter_factory(), state, T0 + timedelta(days=3), policy=POLICY
    )
    assert isinstance(elapsed, Defer) and elapsed.until == T0 + timedelta(days=3, seconds=60)


@pytest.mark.parametrize(
    ("adapter_kw", "state", "reason"),
    [
        ({"active": False}, _active(), Reason.ADAPTER_INACTIVE),
        (
            {},
            AdapterState(
                adapter_id="a1",
                health_state=HealthState.RESTING,
                resting_until=T0 + timedelta(days=8),
            ),
            Reason.RESTING_BEYOND_HORIZON,
        ),
    ],
)
def test_dispatch_terminal_pin_pause_or_reassign_by_policy(
    adapter_factory: Callable[..., Adapter],
    step_factory: Callable[..., Step],
    adapter_kw: dict[str, Any],
    state: AdapterState,
    reason: Reason,
) -> None:
    adapter = adapter_factory(**adapter_kw)
    paused = decide_dispatch(_due(step_factory()), adapter, state, T0, policy=POLICY)
    assert isinstance(paused, Pause) and paused.reason is reason and paused.adapter_id == "a1"
    moved = decide_dispatch(
        _due(step_factory(), pin_policy=PinPolicy.REASSIGN), adapter, state, T0, policy=POLICY
    )
    assert (
        isinstance(moved, Reassign)
        and moved.old_adapter_id == "a1"
        and moved.new_adapter_id is None
    )


def test_dispatch_removed_adapter_lifecycle_skips_override_pauses(
    step_factory: Callable[..., Step],
) -> None:
    lifecycle = decide_dispatch(
        _due(step_factory(), mode=Mode.LIFECYCLE), None, None, T0, policy=POLICY
    )
    assert isinstance(lifecycle, Skip) and lifecycle.reason is Reason.ADAPTER_MISSING
    override = decide_dispatch(
        _due(step_factory(adapter_override_id="o1")), None, None, T0, policy=POLICY
    )
    assert isinstance(override, Pause) and override.reason is Reason.OVERRIDE_UNAVAILABLE


def test_terminal_reason_resting_within_horizon_not_terminal(
    adapter_factory: Callable[..., Adapter],
) -> None:
    state = AdapterState(
        adapter_id="a1", health_state=HealthState.RESTING, resting_until=T0 + timedelta(days=7)
    )
    assert terminal_reason(adapter_factory(), state, T0, policy=POLICY) is None


def test_dispatch_enrollment_states_hold_or_skip(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    held = decide_dispatch(
        _due(step_factory(), enrollment_state=EnrollmentState.PAUSED),
        adapter_factory(),
        _active(),
        T0,
        policy=POLICY,
    )
    assert isinstance(held, Hold) and held.reason is Reason.PAUSED
    replied = decide_dispatch(
        _due(step_factory(), enrollment_state=EnrollmentState.REPLIED),
        adapter_factory(),
        _active(),
        T0,
        policy=POLICY,
    )
    assert isinstance(replied, Skip) and replied.reason is Reason.ENROLLMENT_INACTIVE
    suppressed = decide_dispatch(
        _due(step_factory(), suppressed=True), adapter_factory(), _active(), T0, policy=POLICY
    )
    assert isinstance(suppressed, Skip) and suppressed.reason is Reason.SUPPRESSED


def test_dispatch_outside_sending_window_defers_to_its_opening(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    step = step_factory(sending_window=SendingWindow(start_hour=9, end_hour=17))
    now = datetime(2026, 11, 2, 20, tzinfo=UTC)  # 15:00 in New York, 21:00 in Berlin
    assert isinstance(
        decide_dispatch(
            _due(step, recipient_timezone="America/New_York"),
            adapter_factory(),
            _active(),
            now,
            policy=POLICY,
        ),
        Send,
    )
    decision = decide_dispatch(
        _due(step, recipient_timezone="Europe/Berlin"),
        adapter_factory(),
        _active(),
        now,
        policy=POLICY,
    )
    assert isinstance(decision, Defer) and decision.reason is Reason.OUTSIDE_SENDING_WINDOW
    assert decision.until == datetime(2026, 11, 3, 8, tzinfo=UTC)


def test_record_send_first_of_pin_releases_reservation(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(daily_cap=5)
    state = reserve_pin(adapter, _active(), T0)
    assert state.pinned_waiting_today == 1
    sent = record_send(adapter, state, T0, policy=POLICY.health, first_send_of_pin=True).state
    assert (sent.sent_today, sent.pinned_waiting_today, sent.last_sent_at) == (1, 0, T0)
    late = record_send(
        adapter, sent, T0 - timedelta(days=1), policy=POLICY.health, first_send_of_pin=True
    ).state
    assert (late.sent_today, late.pinned_waiting_today, late.last_sent_at) == (1, 0, T0)


_DUE = st.tuples(st.sampled_from(["due", "follow"]), st.just(0))
OPS = st.lists(
    st.one_of(
        *[_DUE] * 8,
        *[st.tuples(st.just("advance"), st.integers(min_value=1, max_value=7200))] * 3,
        st.tuples(st.just("health"), st.sampled_from([1, 2])),
        st.tuples(st.just("advance"), st.integers(min_value=1, max_value=2 * 86400)),
        st.tuples(st.just("pin"), st.just(0)),
        st.tuples(st.just("bounce"), st.just(0)),
        st.tuples(st.just("timer"), st.just(0)),
        st.tuples(st.just("health"), st.integers(min_value=0, max_value=4)),
        st.tuples(st.just("rest"), st.integers(min_value=1, max_value=10 * 86400)),
    ),
    min_size=30,
    max_size=150,
)
HEALTH = [None, HealthState.ACTIVE, HealthState.RAMPING, HealthState.PROBING, HealthState.RESTING]


@settings(max_examples=150, deadline=None)
@given(
    ops=OPS,
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    cap=st.integers(min_value=1, max_value=6),
    gap=st.sampled_from([0, 1, 90, 3600]),
    ramp=st.booleans(),
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
    ),
)
def test_dispatch_random_interleavings_never_exceed_cap_or_gap(
    ops: list[tuple[str, int]], tz: str, cap: int, gap: int, ramp: bool, start: datetime
) -> None:
    ramp_kw: dict[str, Any] = (
        {"ramp_floor": 1, "ramp_increment": 1, "ramp_started_at": start} if ramp else {}
    )
    adapter = Adapter(
        id="a1",
        tenant_key="t1",
        name="m",
        timezone=tz,
        daily_cap=cap,
        min_gap_seconds=gap,
        health_state=HealthState.ACTIVE,
        **ramp_kw,
    )
    due = _due(Step(id="s1", version_id="v1", tenant_key="t1", key="k", position=0))
    state, now, last = AdapterState(adapter_id="a1", health_state=HealthState.ACTIVE), start, None
    sends: list[tuple[datetime, int | None]] = []
    for op, arg in ops:
        if op == "advance":
            now += timedelta(seconds=arg)
        elif op == "follow" and isinstance(last, Defer):
            now = max(now, last.until)
        elif op == "pin":
            state = reserve_pin(adapter, state, now)
        elif op == "bounce":
            state = count_outcome(
                adapter, state, "bounce", at=now, now=now, policy=POLICY.health
            ).state
        elif op == "timer":
            state = fire_health_timer(state, now, policy=POLICY.health).state
        elif op in ("health", "rest"):
            target = HEALTH[arg] if op == "health" else HealthState.RESTING
            until = now + timedelta(seconds=arg) if op == "rest" else None
            signal = ExternalHealth(health_state=target, resting_until=until)
            state = apply_external(state, signal, now, policy=POLICY.health).state
        if op in ("due", "follow"):
            last = decide_dispatch(due, adapter, state, now, policy=POLICY)
            event(f"{last.kind}:{getattr(last, 'reason', '')}")
            if isinstance(last, Send):
                sends.append((now, effective_cap(adapter, state, now, policy=POLICY.health)))
                state = record_send(
                    adapter, state, now, policy=POLICY.health, first_send_of_pin=True
                ).state
    event(f"sends>={min(len(sends), 5)}")
    for i, (at, cap_then) in enumerate(sends):
        same_day = [s for s, _ in sends[:i] if local_day(tz, s) == local_day(tz, at)]
        assert cap_then is None or len(same_day) < cap_then
        if i:
            assert at - sends[i - 1][0] >= timedelta(seconds=gap)


def test_only_an_ambiguous_send_holds_its_enrollment() -> None:
    from dripdrop_core import holds_enrollment

    assert holds_enrollment("ambiguous")
    assert not any(holds_enrollment(s) for s in ("sent", "failed", "cancelled", "skipped"))


def test_dispatch_open_circuit_holds_the_adapter_until_its_probe(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    until = T0 + timedelta(minutes=5)
    opened = _active(circuit=Circuit(state=CircuitState.OPEN, opens=1, until=until))
    held = decide_dispatch(_due(step_factory()), adapter_factory(), opened, T0, policy=POLICY)
    assert isinstance(held, Defer) and held.reason is Reason.CIRCUIT_OPEN and held.until == until
    # The cool-down is over: the next due step is the probe.
    probe = decide_dispatch(_due(step_factory()), adapter_factory(), opened, until, policy=POLICY)
    assert isinstance(probe, Send)


def test_dispatch_gap_slot_within_the_lookahead_is_sent_for_that_slot(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    """Between two ticks a slot is taken ahead (``Send.at``), not lost to the next tick."""
    adapter = adapter_factory(min_gap_seconds=90)
    state = _active(last_sent_at=T0)
    ahead = decide_dispatch(
        _due(step_factory()), adapter, state, T0, policy=POLICY, lookahead=timedelta(minutes=5)
    )
    assert isinstance(ahead, Send) and ahead.at == T0 + timedelta(seconds=90)
    beyond = decide_dispatch(
        _due(step_factory()), adapter, state, T0, policy=POLICY, lookahead=timedelta(seconds=60)
    )
    assert isinstance(beyond, Defer) and beyond.reason is Reason.GAP
    now = decide_dispatch(_due(step_factory()), adapter, _active(), T0, policy=POLICY)
    assert isinstance(now, Send) and now.at is None


def test_dispatch_lookahead_never_crosses_the_local_day(
    adapter_factory: Callable[..., Adapter], step_factory: Callable[..., Step]
) -> None:
    """A slot past midnight would count toward a day whose cap was not checked: it waits."""
    adapter = adapter_factory(min_gap_seconds=90)
    late = datetime(2026, 11, 28, 23, 59, tzinfo=UTC)
    decision = decide_dispatch(
        _due(step_factory()),
        adapter,
        _active(last_sent_at=late),
        late,
        policy=POLICY,
        lookahead=timedelta(hours=1),
    )
    assert isinstance(decision, Defer) and decision.reason is Reason.GAP


@pytest.mark.parametrize(
    ("hour", "sends", "opens"),
    [
        (12, False, datetime(2026, 11, 2, 22, tzinfo=UTC)),  # midday: outside, waits for 22:00
        (21, False, datetime(2026, 11, 2, 22, tzinfo=UTC)),
        (22, True, None),  # the window opens at its start hour
        (3, True, None),  # and runs through the night
        (7, False, datetime(2026, 11, 2, 22, tzinfo=UTC)),  # closed from its end hour
    ],
)
def test_dispatch_window_22_to_7_sends_only_at_night(
    adapter_factory: Callable[..., Adapter],
    step_factory: Callable[..., Step],
    hour: int,
    sends: bool,
    opens: datetime | None,
) -> None:
    """The window is when the step MAY send (SPEC §13): 22/7 is a night window, not quiet
    hours from 22:00 to 07:00."""
    step = step_factory(sending_window=SendingWindow(start_hour=22, end_hour=7))
    now = datetime(2026, 11, 2, hour, tzinfo=UTC)
    decision = decide_dispatch(_due(step), adapter_factory(), _active(), now, policy=POLICY)
    if sends:
        assert isinstance(decision, Send)
    else:
        assert isinstance(decision, Defer) and decision.reason is Reason.OUTSIDE_SENDING_WINDOW
        assert decision.until == opens
