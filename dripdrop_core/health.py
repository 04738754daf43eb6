"""Adapter health state machine (SPEC §5.7); transitions are a table, not branches.

Pure: the shell feeds counted events, external signals and timer firings, and
stores the returned state and emits each ``HealthTransition`` as
``health.state_changed``. Unmanaged adapters (health ``None``) have no automatic
transitions; only an external signal moves them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from dripdrop_core.models import Adapter, Frozen, HealthState, UtcDatetime
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import local_day
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState, add_to_bucket, prune_buckets


class HealthSignal(StrEnum):
    """Automatic inputs of the machine; external signals bypass the table."""

    THRESHOLD_BREACH = "threshold_breach"
    RESTING_ELAPSED = "resting_elapsed"
    PROBE_CLEAN = "probe_clean"
    PROBE_BREACH = "probe_breach"


TRANSITIONS: dict[tuple[HealthState, HealthSignal], HealthState] = {
    (HealthState.ACTIVE, HealthSignal.THRESHOLD_BREACH): HealthState.RESTING,
    (HealthState.RAMPING, HealthSignal.THRESHOLD_BREACH): HealthState.RESTING,
    (HealthState.RESTING, HealthSignal.RESTING_ELAPSED): HealthState.PROBING,
    (HealthState.PROBING, HealthSignal.PROBE_CLEAN): HealthState.RAMPING,
    (HealthState.PROBING, HealthSignal.PROBE_BREACH): HealthState.RESTING,
}
"""(state, signal) → next state. A pair not listed means: no transition."""


class HealthTransition(Frozen):
    """One state change, written to Postgres and emitted as ``health.state_changed``."""

    adapter_id: str
    from_state: HealthState | None
    to_state: HealthState | None
    reason: Reason
    source: str
    at: UtcDatetime
    resting_until: UtcDatetime | None = None
    score: float | None = None


class HealthOutcome(Frozen):
    """New state plus the transitions that produced it (zero or one)."""

    state: AdapterState
    transitions: tuple[HealthTransition, ...] = ()


class ExternalHealth(Frozen):
    """``set_adapter_health`` / a health-signal command: set any state (SPEC §5.7)."""

    health_state: HealthState | None
    resting_until: UtcDatetime | None = None
    score: float | None = None
    source: str = "external"


def next_health_timer(state: AdapterState) -> datetime | None:
    """Return when the next automatic transition is due (rest end), else ``None``."""
    if state.health_state is HealthState.RESTING:
        return state.resting_until
    return None


def fire_health_timer(state: AdapterState, now: datetime, *, policy: HealthPolicy) -> HealthOutcome:
    """Move a resting adapter whose rest has elapsed to probing (timer, not lazily).

    Returns:
        The outcome; no transition when the timer fired early or was stale.
    """
    due = next_health_timer(state)
    if due is None or due > now:
        return HealthOutcome(state=state)
    return _apply(state, HealthSignal.RESTING_ELAPSED, now, policy, reason=Reason.RESTING_ELAPSED)


def apply_external(
    state: AdapterState, signal: ExternalHealth, now: datetime, *, policy: HealthPolicy
) -> HealthOutcome:
    """Set the state an operator or provider asked for, from any state.

    A rest without an end gets ``now + cooldown`` so it can never stick forever
    (Elixir §9.21). Entering probing resets the probe counters; entering ramping
    keeps an existing ramp anchor or starts one now.
    """
    target = signal.health_state
    update: dict[str, object] = {"health_state": target}
    if signal.score is not None:
        update["health_score"] = signal.score
    if target is HealthState.RESTING:
        update["resting_until"] = signal.resting_until or now + policy.cooldown
        update["cooldown"] = state.cooldown or policy.cooldown
    else:
        update["resting_until"] = None
    if target is HealthState.PROBING:
        update.update(probe_sends=0, probe_bounces=0, probe_complaints=0)
    if target is HealthState.RAMPING and state.ramp_started_at is None:
        update["ramp_started_at"] = now
    new = state.model_copy(update=update)
    return HealthOutcome(
        state=new,
        transitions=(_transition(state, new, Reason.EXTERNAL_SIGNAL, signal.source, now),),
    )


def count_send(
    adapter: Adapter, state: AdapterState, at: datetime, *, policy: HealthPolicy
) -> HealthOutcome:
    """Count one send in the window (and the probe) and re-evaluate health."""
    day = local_day(adapter.timezone, at)
    probing = state.health_state is HealthState.PROBING
    new = state.model_copy(
        update={
            "buckets": add_to_bucket(state.buckets, day, sends=1),
            "probe_sends": state.probe_sends + (1 if probing else 0),
        }
    )
    return evaluate_health(adapter, new, at, policy=policy)


def count_outcome(
    adapter: Adapter,
    state: AdapterState,
    kind: Literal["delivery", "bounce", "complaint"],
    *,
    at: datetime,
    now: datetime,
    policy: HealthPolicy,
) -> HealthOutcome:
    """Count a provider outcome of a send made at ``at`` and re-evaluate health.

    Deliveries change no rate; bounces and complaints count in the bucket of
    the send's local day and, while probing, against the probe.
    """
    if kind == "delivery":
        return evaluate_health(adapter, state, now, policy=policy)
    bounce, complaint = (1, 0) if kind == "bounce" else (0, 1)
    probing = state.health_state is HealthState.PROBING
    new = state.model_copy(
        update={
            "buckets": add_to_bucket(
                state.buckets, local_day(adapter.timezone, at), bounces=bounce, complaints=complaint
            ),
            "probe_bounces": state.probe_bounces + (bounce if probing else 0),
            "probe_complaints": state.probe_complaints + (complaint if probing else 0),
        }
    )
    return evaluate_health(adapter, new, now, policy=policy)


def window_counts(
    adapter: Adapter, state: AdapterState, now: datetime, *, policy: HealthPolicy
) -> tuple[int, int, int]:
    """Return (sends, bounces, complaints) over the sliding window ending today."""
    kept = prune_buckets(state.buckets, local_day(adapter.timezone, now), policy.window_days)
    return (
        sum(b.sends for b in kept),
        sum(b.bounces for b in kept),
        sum(b.complaints for b in kept),
    )


def breach_reason(
    sends: int, bounces: int, complaints: int, *, policy: HealthPolicy
) -> Reason | None:
    """Return the threshold a sample breaches (complaints first), or ``None``.

    Comparisons are inclusive (2 % of 20 sends is 0.4, so one bounce breaches);
    a sample below ``min_sample`` never breaches (SPEC §12).
    """
    if sends < policy.min_sample:
        return None
    if complaints / sends >= policy.complaint_rate:
        return Reason.COMPLAINT_THRESHOLD
    if bounces / sends >= policy.bounce_rate:
        return Reason.BOUNCE_THRESHOLD
    return None


def evaluate_health(
    adapter: Adapter, state: AdapterState, now: datetime, *, policy: HealthPolicy
) -> HealthOutcome:
    """Apply the rules that counts can trigger: thresholds, probe breach, clean probe.

    Reasons: ``bounce_threshold``, ``complaint_threshold``, ``probe_breach``,
    ``probe_clean``. Any bounce or complaint during a probe is a breach: with a
    budget of 5 a single one is 20 %, far over either threshold.
    """
    state = state.model_copy(
        update={
            "buckets": prune_buckets(
                state.buckets, local_day(adapter.timezone, now), policy.window_days
            )
        }
    )
    if state.health_state is HealthState.PROBING:
        if state.probe_bounces or state.probe_complaints:
            return _apply(state, HealthSignal.PROBE_BREACH, now, policy, reason=Reason.PROBE_BREACH)
        if state.probe_sends >= policy.probe_budget:
            return _apply(state, HealthSignal.PROBE_CLEAN, now, policy, reason=Reason.PROBE_CLEAN)
        return HealthOutcome(state=state)
    found = breach_reason(*window_counts(adapter, state, now, policy=policy), policy=policy)
    if found is None:
        return HealthOutcome(state=state)
    return _apply(state, HealthSignal.THRESHOLD_BREACH, now, policy, reason=found)


def _apply(
    state: AdapterState,
    signal: HealthSignal,
    now: datetime,
    policy: HealthPolicy,
    *,
    reason: Reason,
) -> HealthOutcome:
    """Look the pair up in ``TRANSITIONS`` and apply the target state's entry rules."""
    if state.health_state is None:
        return HealthOutcome(state=state)
    target = TRANSITIONS.get((state.health_state, signal))
    if target is None:
        return HealthOutcome(state=state)
    update: dict[str, object] = {"health_state": target, "resting_until": None}
    if target is HealthState.RESTING:
        cooldown = _next_cooldown(state.cooldown, signal, policy=policy)
        update.update(cooldown=cooldown, resting_until=now + cooldown)
    elif target is HealthState.PROBING:
        update.update(probe_sends=0, probe_bounces=0, probe_complaints=0)
    else:
        # Clean probes: restart the ramp from the floor and judge the adapter on
        # fresh traffic, or the old breach in the window would rest it again.
        update.update(ramp_started_at=now, buckets=(), probe_sends=0)
    new = state.model_copy(update=update)
    return HealthOutcome(state=new, transitions=(_transition(state, new, reason, "policy", now),))


def _next_cooldown(
    previous: timedelta | None, signal: HealthSignal, *, policy: HealthPolicy
) -> timedelta:
    """A threshold breach starts at the base cooldown; a probe breach doubles it, capped."""
    if signal is HealthSignal.PROBE_BREACH and previous is not None:
        return min(previous * 2, policy.cooldown_cap)
    if signal is HealthSignal.PROBE_BREACH:
        return min(policy.cooldown * 2, policy.cooldown_cap)
    return policy.cooldown


def _transition(
    old: AdapterState, new: AdapterState, reason: Reason, source: str, now: datetime
) -> HealthTransition:
    return HealthTransition(
        adapter_id=old.adapter_id,
        from_state=old.health_state,
        to_state=new.health_state,
        reason=reason,
        source=source,
        at=now,
        resting_until=new.resting_until,
        score=new.health_score,
    )
