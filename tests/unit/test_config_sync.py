from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from dripdrop_core.config_sync import apply_adapter_update
from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState

from .conftest import T0

POLICY = HealthPolicy()


def test_apply_adapter_update_new_adapter_seeds_state(
    adapter_factory: Callable[..., Adapter],
) -> None:
    outcome = apply_adapter_update(
        None, adapter_factory(health_state=HealthState.RAMPING), None, T0, policy=POLICY
    )
    assert outcome.state.health_state is HealthState.RAMPING and outcome.transitions == ()


def test_apply_adapter_update_unrelated_edit_keeps_runtime_health(
    adapter_factory: Callable[..., Adapter],
) -> None:
    resting = AdapterState(
        adapter_id="a1", health_state=HealthState.RESTING, resting_until=T0, sent_today=3
    )
    old = adapter_factory()
    outcome = apply_adapter_update(old, adapter_factory(name="renamed"), resting, T0, policy=POLICY)
    assert outcome.state == resting and outcome.transitions == ()


def test_apply_adapter_update_health_change_emits_config_transition(
    adapter_factory: Callable[..., Adapter],
) -> None:
    state = AdapterState(adapter_id="a1", health_state=HealthState.ACTIVE)
    until = T0 + timedelta(days=2)
    new = adapter_factory(health_state=HealthState.RESTING, resting_until=until)
    outcome = apply_adapter_update(adapter_factory(), new, state, T0, policy=POLICY)
    (change,) = outcome.transitions
    assert (change.to_state, change.reason, change.source) == (
        HealthState.RESTING,
        Reason.EXTERNAL_SIGNAL,
        "config",
    )
    assert outcome.state.resting_until == until


def test_apply_adapter_update_ramp_anchor_moved(adapter_factory: Callable[..., Adapter]) -> None:
    state = AdapterState(adapter_id="a1", health_state=HealthState.RAMPING, ramp_started_at=T0)
    later = T0 + timedelta(days=3)
    outcome = apply_adapter_update(
        adapter_factory(ramp_started_at=T0),
        adapter_factory(ramp_started_at=later),
        state,
        T0,
        policy=POLICY,
    )
    assert outcome.state.ramp_started_at == later and outcome.transitions == ()
