"""Pool policies at enrollment, on a terminally unavailable pin, and on repin (SPEC §5.3).

Every outcome is a decision with reasons; the only exceptions are for invalid
operator input to ``decide_repin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from dripdrop_core.decisions import (
    Eviction,
    Pause,
    Pin,
    PinDecision,
    PinUnavailableDecision,
    Reassign,
    Reject,
    Wait,
)
from dripdrop_core.errors import ConflictError, TenantMismatchError
from dripdrop_core.models import Adapter, Frozen, HealthState, PinPolicy, Pool
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.reasons import Reason
from dripdrop_core.selection import PINNABLE, Candidate, pick, split_eligible
from dripdrop_core.state import AdapterState, SelectionState, roll_day

WAITS_FOR = frozenset({Reason.NO_HEADROOM, Reason.RESTING})
"""Eviction reasons that pass by themselves (the next local day, the end of a rest): a
pool whose members are only held by these makes new enrollments wait, not fail."""


class PinOutcome(Frozen):
    """New WDRR counters and the decision (``Pin``, ``Wait``, ``Reject``, ``Pause``...)."""

    selection: SelectionState
    decision: Pin | Wait | Reject | Pause | Reassign


def decide_pin(
    selection: SelectionState,
    pool: Pool,
    candidates: Sequence[Candidate],
    now: datetime,
    *,
    policy: HealthPolicy,
    horizon: timedelta = timedelta(days=7),
) -> PinOutcome:
    """Choose the sender of a new outbound enrollment (SPEC §5.2, §5.3).

    Capacity waits, it does not reject: when nobody is eligible but some member only
    lacks headroom today or rests for now (``WAITS_FOR``; a rest ending within
    ``horizon``), the decision is ``Wait``. Both pool policies reject with
    ``pool_exhausted`` only when no member could send at all (a member resting beyond the
    horizon cannot); either decision lists every evicted member and its reason for
    ``dispatch.pool_exhausted``.

    Returns:
        ``Pin(pinned)`` with the new counters, or ``Wait(capacity)`` /
        ``Reject(pool_exhausted)`` with the counters unchanged.
    """
    eligible, evicted = split_eligible(candidates, now, policy=policy)
    if not eligible:
        rests = {c.member.adapter_id: c.state for c in candidates}
        if any(_passes(e, rests.get(e.adapter_id), now, horizon) for e in evicted):
            waits = Wait(pool_id=pool.id, evicted=evicted)
            return PinOutcome(selection=selection, decision=waits)
        return PinOutcome(
            selection=selection,
            decision=Reject(reason=Reason.POOL_EXHAUSTED, pool_id=pool.id, evicted=evicted),
        )
    new, adapter_id = pick(selection, eligible)
    decided: PinDecision = Pin(adapter_id=adapter_id, evicted=evicted)
    return PinOutcome(selection=new, decision=decided)


def _passes(
    eviction: Eviction, state: AdapterState | None, now: datetime, horizon: timedelta
) -> bool:
    """The member's eviction ends by itself soon enough to wait for it (``WAITS_FOR``)."""
    if eviction.reason not in WAITS_FOR:
        return False
    if eviction.reason is Reason.RESTING and state is not None:
        until = state.resting_until
        return until is None or until <= now + horizon
    return True


def decide_pin_unavailable(
    selection: SelectionState,
    pool: Pool,
    candidates: Sequence[Candidate],
    now: datetime,
    *,
    pinned_adapter_id: str,
    policy: HealthPolicy,
) -> PinOutcome:
    """Handle an in-flight enrollment whose pinned sender is terminally unavailable.

    ``pause`` pools pause it (``pin_unavailable``); ``reassign`` pools move the pin
    to a WDRR pick that excludes the old sender (``reassigned``; the shell breaks
    the thread), or pause with ``pool_exhausted`` when nobody is eligible.
    """
    if pool.on_pin_unavailable is PinPolicy.PAUSE:
        decided: PinUnavailableDecision = Pause(
            reason=Reason.PIN_UNAVAILABLE, adapter_id=pinned_adapter_id
        )
        return PinOutcome(selection=selection, decision=decided)
    eligible, evicted = split_eligible(candidates, now, policy, exclude=pinned_adapter_id)
    if not eligible:
        decided = Pause(reason=Reason.POOL_EXHAUSTED, adapter_id=pinned_adapter_id, evicted=evicted)
        return PinOutcome(selection=selection, decision=decided)
    new, adapter_id = pick(selection, eligible)
    decided = Reassign(
        reason=Reason.REASSIGNED,
        old_adapter_id=pinned_adapter_id,
        new_adapter_id=adapter_id,
        evicted=evicted,
    )
    return PinOutcome(selection=new, decision=decided)


def decide_member_returned(
    selection: SelectionState,
    pool: Pool,
    candidates: Sequence[Candidate],
    now: datetime,
    *,
    pinned_adapter_id: str,
    policy: HealthPolicy,
    horizon: timedelta,
) -> PinOutcome | None:
    """Re-decide an enrollment a ``reassign`` pool paused because no member was eligible,
    now that a member may send again (SPEC §5.3: "behave as pause until one returns").

    Its own sender back (still a member, active, not resting beyond ``horizon``): ``Pin``
    to it, the thread kept. Else a WDRR pick that excludes it: ``Reassign``. Nobody
    eligible yet, or a ``pause`` pool (an operator resumes those): ``None``, it stays
    paused.
    """
    if pool.on_pin_unavailable is not PinPolicy.REASSIGN:
        return None
    own = next((c for c in candidates if c.member.adapter_id == pinned_adapter_id), None)
    if own is not None and own.adapter is not None and own.member.active and own.adapter.active:
        state = own.state
        resting = state is not None and state.health_state is HealthState.RESTING
        until = state.resting_until if state is not None else None
        if not resting or until is None or until <= now + horizon:
            return PinOutcome(selection=selection, decision=Pin(adapter_id=pinned_adapter_id))
    outcome = decide_pin_unavailable(
        selection, pool, candidates, now, pinned_adapter_id=pinned_adapter_id, policy=policy
    )
    return outcome if isinstance(outcome.decision, Reassign) else None


def decide_repin(
    tenant_key: str,
    old_adapter_id: str | None,
    new_adapter: Adapter,
    new_state: AdapterState | None,
) -> Reassign:
    """Validate an operator's explicit repin and return the move (breaks the thread).

    Raises:
        TenantMismatchError: The adapter belongs to another tenant.
        ConflictError: The adapter is inactive (``adapter_inactive``) or resting
            (``adapter_resting``).
    """
    if new_adapter.tenant_key != tenant_key:
        raise TenantMismatchError(f"adapter {new_adapter.id} is not in tenant {tenant_key}")
    if not new_adapter.active:
        raise ConflictError(f"adapter {new_adapter.id} is inactive", code="adapter_inactive")
    health = new_state.health_state if new_state is not None else new_adapter.health_state
    if health is not None and health not in PINNABLE:
        raise ConflictError(f"adapter {new_adapter.id} is {health}", code="adapter_resting")
    return Reassign(
        reason=Reason.REPINNED, old_adapter_id=old_adapter_id, new_adapter_id=new_adapter.id
    )


def reserve_pin(adapter: Adapter, state: AdapterState, now: datetime) -> AdapterState:
    """Count a new pin as waiting for its first send today (headroom, SPEC §5.2)."""
    rolled = roll_day(state, adapter, now)
    return rolled.model_copy(update={"pinned_waiting_today": rolled.pinned_waiting_today + 1})
