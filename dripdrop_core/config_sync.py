"""Reconcile an adapter's runtime state with an authored update (SPEC §4, §5.7).

The config topic carries adapters as authored; the state table owns health at
runtime. Only fields the host changed are applied, so an unrelated edit (a
new name) never resets a rest or a ramp.
"""

from __future__ import annotations

from datetime import datetime

from dripdrop_core.health import ExternalHealth, HealthOutcome, apply_external
from dripdrop_core.models import Adapter
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.state import AdapterState, initial_adapter_state


def apply_adapter_update(
    old: Adapter | None,
    new: Adapter,
    state: AdapterState | None,
    now: datetime,
    *,
    policy: HealthPolicy,
) -> HealthOutcome:
    """Return the state after ``old`` became ``new`` on the config topic.

    A changed ``health_state``, ``resting_until`` or ``health_score`` is applied as
    an external signal with source ``config`` (one ``health.state_changed``); a
    changed ``ramp_started_at`` moves the ramp anchor. A first sighting seeds
    the state from the adapter.

    Args:
        old: The previously known version, ``None`` for a new adapter.
        new: The version just authored.
        state: The runtime state, ``None`` if none exists yet.
        now: Evaluation instant.
        policy: Cooldown for a rest without an end.
    """
    if old is None or state is None:
        return HealthOutcome(state=initial_adapter_state(new))
    outcome = HealthOutcome(state=state)
    health_changed = (old.health_state, old.resting_until, old.health_score) != (
        new.health_state,
        new.resting_until,
        new.health_score,
    )
    if health_changed:
        signal = ExternalHealth(
            health_state=new.health_state,
            resting_until=new.resting_until,
            score=new.health_score,
            source="config",
        )
        outcome = apply_external(state, signal, now, policy=policy)
    if old.ramp_started_at != new.ramp_started_at:
        moved = outcome.state.model_copy(update={"ramp_started_at": new.ramp_started_at})
        outcome = HealthOutcome(state=moved, transitions=outcome.transitions)
    return outcome
