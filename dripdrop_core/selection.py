"""Pool member validation, eligibility with reasons, and WDRR picks (SPEC §5.1, §5.2).

The "weighted deficit round robin" is the smooth weighted round robin update:
with a stable eligible set every window of ``sum(weights)`` consecutive picks
gives each member exactly its weight, interleaved. Counters are data
(``SelectionState``), so a restored state continues the identical sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from dripdrop_core.decisions import Eviction
from dripdrop_core.errors import ConflictError, InputError, InvariantError, TenantMismatchError
from dripdrop_core.models import (
    ESP_PROVIDERS,
    Adapter,
    Frozen,
    HealthState,
    MemberClass,
    Pool,
    PoolMember,
)
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import headroom
from dripdrop_core.reasons import Reason
from dripdrop_core.state import AdapterState, SelectionState, roll_day

PINNABLE = frozenset({HealthState.ACTIVE, HealthState.RAMPING, HealthState.PROBING})
"""Health states a new pin may use (SPEC §5.2); unmanaged (None) is not pinnable."""


class Candidate(Frozen):
    """A pool member with its adapter (``None`` if removed) and runtime state."""

    member: PoolMember
    adapter: Adapter | None
    state: AdapterState | None = None


def validate_member(pool: Pool, adapter: Adapter, member: PoolMember) -> None:
    """Check a member before it is added (SPEC §5.1).

    Raises:
        TenantMismatchError: Pool, member and adapter are not all in one tenant.
        InputError: The member names another adapter or pool, or weight <= 0.
        ConflictError: An ESP provider added as ``mailbox`` (code ``class_mismatch``).
    """
    if not (pool.tenant_key == adapter.tenant_key == member.tenant_key):
        raise TenantMismatchError(
            f"pool {pool.id} (tenant {pool.tenant_key}) cannot hold adapter {adapter.id} "
            f"(tenant {adapter.tenant_key})"
        )
    if member.adapter_id != adapter.id or member.pool_id != pool.id:
        raise InputError(f"member names adapter {member.adapter_id} of pool {member.pool_id}")
    if member.weight <= 0:  # pydantic already enforces it; kept for model_construct callers
        raise InputError(f"weight of adapter {adapter.id} must be > 0", code="invalid_weight")
    if member.member_class is MemberClass.MAILBOX and adapter.provider in ESP_PROVIDERS:
        raise ConflictError(
            f"adapter {adapter.id} uses ESP provider {adapter.provider}; add it as esp_api",
            code="class_mismatch",
        )


def pool_warnings(members: Iterable[PoolMember]) -> tuple[Reason, ...]:
    """Return validation warnings as data: ``mixed_classes`` when classes differ."""
    classes = {m.member_class for m in members if m.active}
    return (Reason.MIXED_CLASSES,) if len(classes) > 1 else ()


def eligibility(candidate: Candidate, now: datetime, *, policy: HealthPolicy) -> Reason:
    """Return ``eligible`` or the first reason the member cannot take a new pin.

    Reasons: ``adapter_missing``, ``member_inactive``, ``adapter_inactive``,
    ``health_unmanaged``, ``resting``, ``no_headroom``.
    """
    adapter, member = candidate.adapter, candidate.member
    if adapter is None:
        return Reason.ADAPTER_MISSING
    if not member.active:
        return Reason.MEMBER_INACTIVE
    if not adapter.active:
        return Reason.ADAPTER_INACTIVE
    state = roll_day(
        candidate.state or AdapterState(adapter_id=adapter.id, health_state=adapter.health_state),
        adapter,
        now,
    )
    if state.health_state is None:
        return Reason.HEALTH_UNMANAGED
    if state.health_state not in PINNABLE:
        return Reason.RESTING
    room = headroom(adapter, state, now, policy=policy)
    if room is not None and room <= 0:
        return Reason.NO_HEADROOM
    return Reason.ELIGIBLE


def split_eligible(
    candidates: Iterable[Candidate],
    now: datetime,
    policy: HealthPolicy,
    *,
    exclude: str | None = None,
) -> tuple[tuple[PoolMember, ...], tuple[Eviction, ...]]:
    """Partition candidates into eligible members and evictions with reasons.

    Args:
        candidates: Every member of the pool.
        now: Evaluation instant.
        policy: Probe budget for the cap.
        exclude: An adapter id never to choose (the sender being replaced).
    """
    eligible: list[PoolMember] = []
    evicted: list[Eviction] = []
    for candidate in candidates:
        reason = eligibility(candidate, now, policy=policy)
        if candidate.member.adapter_id == exclude:
            reason = Reason.PIN_UNAVAILABLE
        if reason is Reason.ELIGIBLE:
            eligible.append(candidate.member)
        else:
            evicted.append(Eviction(adapter_id=candidate.member.adapter_id, reason=reason))
    return tuple(eligible), tuple(evicted)


def pick(state: SelectionState, eligible: Sequence[PoolMember]) -> tuple[SelectionState, str]:
    """Choose one member by smooth weighted round robin and return the new counters.

    Every eligible counter grows by its weight; the largest wins (ties: larger
    weight, then smaller adapter id) and loses the eligible total. Counters of
    members not in ``eligible`` are left as they are.

    Raises:
        InvariantError: ``eligible`` is empty; callers decide ``pool_exhausted`` first.
    """
    if not eligible:
        raise InvariantError("pick needs at least one eligible member")
    current = dict(state.current)
    total = sum(m.weight for m in eligible)
    for member in eligible:
        current[member.adapter_id] = current.get(member.adapter_id, 0) + member.weight
    winner = min(eligible, key=lambda m: (-current[m.adapter_id], -m.weight, m.adapter_id))
    current[winner.adapter_id] -= total
    return state.model_copy(update={"current": current}), winner.adapter_id
