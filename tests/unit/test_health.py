from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import pytest

from dripdrop_core.health import (
    TRANSITIONS,
    ExternalHealth,
    HealthOutcome,
    HealthSignal,
    HealthTransition,
    apply_external,
    breach_reason,
    count_outcome,
    evaluate_health,
    fire_health_timer,
    next_health_timer,
)
from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.pacing import record_send
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState, DayBucket

from .conftest import T0

POLICY = HealthPolicy()
DAY = timedelta(days=1)


def _state(health: HealthState | None = HealthState.ACTIVE, **kw: Any) -> AdapterState:
    return AdapterState(adapter_id="a1", health_state=health, **kw)


def _sends(adapter: Adapter, state: AdapterState, n: int) -> HealthOutcome:
    outcome = HealthOutcome(state=state)
    for i in range(n):
        outcome = record_send(adapter, outcome.state, T0 + timedelta(minutes=i), policy=POLICY)
    return outcome


def _bounces(
    adapter: Adapter, state: AdapterState, n: int, kind: Literal["bounce", "complaint"] = "bounce"
) -> HealthOutcome:
    outcome = HealthOutcome(state=state)
    transitions: list[HealthTransition] = []
    for _ in range(n):
        outcome = count_outcome(
            adapter, outcome.state, kind, at=T0, now=T0 + timedelta(hours=1), policy=POLICY
        )
        transitions.extend(outcome.transitions)
    return HealthOutcome(state=outcome.state, transitions=tuple(transitions))


def test_threshold_19_sends_5_bounces_below_min_sample_no_rest(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory()
    sent = _sends(adapter, _state(), 19)
    outcome = _bounces(adapter, sent.state, 5)
    assert outcome.transitions == ()
    assert outcome.state.health_state is HealthState.ACTIVE


def test_threshold_20_sends_1_bounce_inclusive_rests(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory()
    outcome = _bounces(adapter, _sends(adapter, _state(), 20).state, 1)
    (change,) = outcome.transitions
    assert (change.from_state, change.to_state, change.reason) == (
        HealthState.ACTIVE,
        HealthState.RESTING,
        Reason.BOUNCE_THRESHOLD,
    )
    assert outcome.state.resting_until == T0 + timedelta(hours=1) + DAY
    assert next_health_timer(outcome.state) == outcome.state.resting_until


def test_threshold_min_sample_reached_by_send_rests(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory()
    outcome = _bounces(adapter, _sends(adapter, _state(), 19).state, 5)
    assert outcome.state.health_state is HealthState.ACTIVE
    twentieth = record_send(adapter, outcome.state, T0 + timedelta(hours=2), policy=POLICY)
    assert twentieth.state.health_state is HealthState.RESTING


def test_breach_reason_complaint_checked_first() -> None:
    assert breach_reason(1000, 30, 3, policy=POLICY) is Reason.COMPLAINT_THRESHOLD
    assert breach_reason(1000, 19, 2, policy=POLICY) is None
    assert breach_reason(1000, 20, 0, policy=POLICY) is Reason.BOUNCE_THRESHOLD


def test_complaint_event_ramping_rests_with_complaint_reason(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory()
    sent = _sends(adapter, _state(HealthState.RAMPING), 400)
    outcome = _bounces(adapter, sent.state, 2, kind="complaint")
    assert [t.reason for t in outcome.transitions] == [Reason.COMPLAINT_THRESHOLD]


def test_delivery_event_changes_nothing(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory()
    state = _sends(adapter, _state(), 3).state
    outcome = count_outcome(adapter, state, "delivery", at=T0, now=T0, policy=POLICY)
    assert outcome.state == state and outcome.transitions == ()


def test_window_old_bounces_pruned_no_rest(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory()
    old = DayBucket(day=(T0 - timedelta(days=30)).date(), sends=0, bounces=50)
    state = _state(buckets=(old, DayBucket(day=T0.date(), sends=100)))
    outcome = evaluate_health(adapter, state, T0, policy=POLICY)
    assert outcome.transitions == ()
    assert outcome.state.buckets == (DayBucket(day=T0.date(), sends=100),)


def test_unmanaged_adapter_breach_no_transition(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory(health_state=None)
    outcome = _bounces(adapter, _sends(adapter, _state(None), 20).state, 5)
    assert outcome.transitions == () and outcome.state.health_state is None


def test_resting_further_bounces_do_not_slide_rest(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory()
    rested = _bounces(adapter, _sends(adapter, _state(), 20).state, 1)
    again = _bounces(adapter, rested.state, 3)
    assert again.transitions == ()
    assert again.state.resting_until == rested.state.resting_until


def test_timer_early_then_due_moves_to_probing() -> None:
    state = _state(HealthState.RESTING, resting_until=T0 + DAY, cooldown=DAY, probe_sends=3)
    assert fire_health_timer(state, T0, policy=POLICY).transitions == ()
    outcome = fire_health_timer(state, T0 + DAY, policy=POLICY)
    (change,) = outcome.transitions
    assert change.reason is Reason.RESTING_ELAPSED and change.to_state is HealthState.PROBING
    assert outcome.state.probe_sends == 0 and outcome.state.resting_until is None
    assert next_health_timer(outcome.state) is None
    assert fire_health_timer(outcome.state, T0 + 2 * DAY, policy=POLICY).transitions == ()


def test_probe_clean_budget_promotes_to_ramping_from_floor(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(
        daily_cap=40, ramp_floor=5, ramp_increment=3, ramp_started_at=T0 - 30 * DAY
    )
    state = _state(HealthState.PROBING, buckets=(DayBucket(day=T0.date(), sends=20, bounces=5),))
    outcome = _sends(adapter, state, 4)
    assert outcome.state.health_state is HealthState.PROBING
    fifth = record_send(adapter, outcome.state, T0 + timedelta(hours=1), policy=POLICY)
    (change,) = fifth.transitions
    assert (change.from_state, change.to_state, change.reason) == (
        HealthState.PROBING,
        HealthState.RAMPING,
        Reason.PROBE_CLEAN,
    )
    assert fifth.state.ramp_started_at == T0 + timedelta(hours=1)
    assert fifth.state.buckets == ()


def test_cooldowns_double_1d_2d_4d_7d_capped(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory()
    outcome = _bounces(adapter, _sends(adapter, _state(), 20).state, 1)
    cooldowns = [outcome.state.cooldown]
    for _ in range(4):
        probing = fire_health_timer(
            outcome.state, outcome.state.resting_until or T0, policy=POLICY
        ).state
        assert probing.health_state is HealthState.PROBING
        probed = record_send(adapter, probing, T0, policy=POLICY)
        outcome = count_outcome(adapter, probed.state, "bounce", at=T0, now=T0, policy=POLICY)
        (change,) = outcome.transitions
        assert change.reason is Reason.PROBE_BREACH and change.to_state is HealthState.RESTING
        assert outcome.state.resting_until == T0 + (outcome.state.cooldown or DAY)
        cooldowns.append(outcome.state.cooldown)
    assert cooldowns == [DAY, 2 * DAY, 4 * DAY, 7 * DAY, 7 * DAY]


def test_probe_breach_without_previous_cooldown_starts_at_double(
    adapter_factory: Callable[..., Adapter],
) -> None:
    outcome = count_outcome(
        adapter_factory(), _state(HealthState.PROBING), "complaint", at=T0, now=T0, policy=POLICY
    )
    assert outcome.state.cooldown == 2 * DAY


def test_external_resting_without_end_gets_cooldown() -> None:
    outcome = apply_external(
        _state(), ExternalHealth(health_state=HealthState.RESTING, score=0.2), T0, policy=POLICY
    )
    (change,) = outcome.transitions
    assert change.reason is Reason.EXTERNAL_SIGNAL and change.source == "external"
    assert outcome.state.resting_until == T0 + DAY
    assert outcome.state.health_score == 0.2


@pytest.mark.parametrize("target", [None, *HealthState])
@pytest.mark.parametrize("origin", [None, *HealthState])
def test_external_any_state_to_any_state_applied(
    origin: HealthState | None, target: HealthState | None
) -> None:
    signal = ExternalHealth(health_state=target, resting_until=T0 + 3 * DAY, source="postmaster")
    outcome = apply_external(_state(origin, probe_sends=2), signal, T0, policy=POLICY)
    assert outcome.state.health_state is target
    assert (
        outcome.transitions[0].from_state is origin
        and outcome.transitions[0].source == "postmaster"
    )
    assert (outcome.state.resting_until is not None) == (target is HealthState.RESTING)
    if target is HealthState.PROBING:
        assert outcome.state.probe_sends == 0
    if target is HealthState.RAMPING:
        assert outcome.state.ramp_started_at == T0


def test_transition_table_every_row_walked(adapter_factory: Callable[..., Adapter]) -> None:
    adapter = adapter_factory()
    triggers = {
        HealthSignal.THRESHOLD_BREACH: lambda s: _bounces(adapter, _sends(adapter, s, 20).state, 1),
        HealthSignal.RESTING_ELAPSED: lambda s: fire_health_timer(s, T0 + DAY, policy=POLICY),
        HealthSignal.PROBE_CLEAN: lambda s: _sends(adapter, s, 5),
        HealthSignal.PROBE_BREACH: lambda s: _bounces(adapter, s, 1),
    }
    for (origin, signal), target in TRANSITIONS.items():
        outcome = triggers[signal](
            _state(origin, resting_until=T0 + DAY if origin is HealthState.RESTING else None)
        )
        assert outcome.transitions[0].from_state is origin
        assert outcome.state.health_state is target
