from __future__ import annotations

from collections.abc import Callable

from dripdrop_core.lifecycle import RotationState, choose_lifecycle_adapter
from dripdrop_core.models import Adapter, Step
from dripdrop_core.reasons import Reason


def test_lifecycle_step_adapter_wins_rotation_untouched(
    step_factory: Callable[..., Step], adapter_factory: Callable[..., Adapter]
) -> None:
    rotation = RotationState()
    new, choice = choose_lifecycle_adapter(
        step_factory(adapter_id="own"), [adapter_factory()], rotation
    )
    assert (choice.adapter_id, choice.reason, new) == ("own", Reason.STEP_ADAPTER, rotation)


def test_lifecycle_rotation_over_active_tenant_channel_adapters(
    step_factory: Callable[..., Step], adapter_factory: Callable[..., Adapter]
) -> None:
    adapters = [
        adapter_factory(id="b"),
        adapter_factory(id="a"),
        adapter_factory(id="c", active=False),
        adapter_factory(id="d", tenant_key="t2"),
        adapter_factory(id="e", channel="sms"),
    ]
    rotation, picks = RotationState(), []
    for _ in range(4):
        rotation, choice = choose_lifecycle_adapter(step_factory(), adapters, rotation)
        assert choice.reason is Reason.ROTATION
        picks.append(choice.adapter_id)
    assert picks == ["a", "b", "a", "b"]
    assert RotationState.model_validate_json(rotation.model_dump_json()) == rotation


def test_lifecycle_no_candidate_returns_no_adapter(step_factory: Callable[..., Step]) -> None:
    _, choice = choose_lifecycle_adapter(step_factory(), [], RotationState())
    assert choice.adapter_id is None and choice.reason is Reason.NO_ADAPTER
