"""Adapter choice for lifecycle-mode steps (SPEC §6): no pin, no pool, no thread.

The step's own adapter wins; otherwise a round robin over the tenant's active
adapters of the step's channel, driven by an explicit counter state.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from dripdrop_core.models import Adapter, Frozen, Step
from dripdrop_core.reasons import Reason


class RotationState(Frozen):
    """Rotation counters keyed by ``"<tenant_key>:<channel>"``."""

    counters: dict[str, int] = Field(default_factory=dict)


class LifecycleChoice(Frozen):
    """The adapter for one lifecycle step, or ``None`` with reason ``no_adapter``."""

    adapter_id: str | None
    reason: Reason


def choose_lifecycle_adapter(
    step: Step, adapters: Iterable[Adapter], rotation: RotationState
) -> tuple[RotationState, LifecycleChoice]:
    """Choose the adapter of a lifecycle step; caps and gaps still apply afterwards.

    Args:
        step: Its ``adapter_id`` is used when set (reason ``step_adapter``).
        adapters: Candidate adapters; only the step's tenant, channel and active
            ones rotate, ordered by id so every worker agrees.
        rotation: Counter state, advanced only when the rotation is used.

    Returns:
        New rotation state and the choice (``rotation`` or ``no_adapter``).
    """
    if step.adapter_id is not None:
        return rotation, LifecycleChoice(adapter_id=step.adapter_id, reason=Reason.STEP_ADAPTER)
    pool = sorted(
        (
            a
            for a in adapters
            if a.tenant_key == step.tenant_key and a.channel == step.channel and a.active
        ),
        key=lambda a: a.id,
    )
    if not pool:
        return rotation, LifecycleChoice(adapter_id=None, reason=Reason.NO_ADAPTER)
    key = f"{step.tenant_key}:{step.channel}"
    count = rotation.counters.get(key, 0)
    chosen = pool[count % len(pool)]
    counters = {**rotation.counters, key: count + 1}
    return RotationState(counters=counters), LifecycleChoice(
        adapter_id=chosen.id, reason=Reason.ROTATION
    )
