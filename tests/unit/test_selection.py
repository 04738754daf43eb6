from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dripdrop_core.errors import ConflictError, InputError, InvariantError, TenantMismatchError
from dripdrop_core.models import Adapter, HealthState, MemberClass, Pool, PoolMember
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.reasons import Reason
from dripdrop_core.selection import (
    Candidate,
    eligibility,
    pick,
    pool_warnings,
    split_eligible,
    validate_member,
)
from dripdrop_core.state import AdapterState, SelectionState

from .conftest import T0

POLICY = HealthPolicy()


def _members(weights: dict[str, int]) -> list[PoolMember]:
    return [
        PoolMember(pool_id="p1", adapter_id=a, tenant_key="t1", weight=w)
        for a, w in weights.items()
    ]


def _run(
    state: SelectionState, members: list[PoolMember], n: int
) -> tuple[SelectionState, list[str]]:
    picks: list[str] = []
    for _ in range(n):
        state, chosen = pick(state, members)
        picks.append(chosen)
    return state, picks


def _fresh() -> SelectionState:
    return SelectionState(pool_id="p1", sequence_version_id="v1")


def test_pick_weights_3_1_every_window_of_4_exact() -> None:
    _, picks = _run(_fresh(), _members({"A": 3, "B": 1}), 400)
    assert picks[:4] == ["A", "A", "B", "A"]
    for i in range(len(picks) - 3):
        assert Counter(picks[i : i + 4]) == {"A": 3, "B": 1}


def test_pick_weights_5_3_2_over_1000_exact_and_every_window_of_10() -> None:
    _, picks = _run(_fresh(), _members({"a": 5, "b": 3, "c": 2}), 1000)
    assert Counter(picks) == {"a": 500, "b": 300, "c": 200}
    for i in range(len(picks) - 9):
        assert Counter(picks[i : i + 10]) == {"a": 5, "b": 3, "c": 2}


def test_pick_state_json_restored_midway_continues_identical_sequence() -> None:
    members = _members({"a": 5, "b": 3, "c": 2})
    _, straight = _run(_fresh(), members, 37)
    middle, first = _run(_fresh(), members, 13)
    restored = SelectionState.model_validate_json(middle.model_dump_json())
    assert restored == middle
    _, rest = _run(restored, members, 24)
    assert first + rest == straight


def test_pick_filtered_member_counters_untouched() -> None:
    members = _members({"a": 2, "b": 1})
    state, _ = _run(_fresh(), members, 1)
    kept = state.current["b"]
    state, picks = _run(state, members[:1], 5)
    assert picks == ["a"] * 5
    assert state.current["b"] == kept


def test_pick_equal_weights_tie_broken_by_adapter_id() -> None:
    _, picks = _run(_fresh(), _members({"z": 1, "m": 1}), 4)
    assert picks == ["m", "z", "m", "z"]


def test_pick_no_members_raises_invariant() -> None:
    with pytest.raises(InvariantError):
        pick(_fresh(), [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5), st.integers(0, 30))
def test_pick_any_weights_every_window_exact(weights: list[int], warmup: int) -> None:
    members = _members({f"m{i}": w for i, w in enumerate(weights)})
    total = sum(weights)
    _, picks = _run(_fresh(), members, warmup + 3 * total)
    expected = {m.adapter_id: m.weight for m in members}
    for i in range(warmup, warmup + 2 * total):
        assert Counter(picks[i : i + total]) == expected


def test_validate_member_other_tenant_raises(
    pool_factory: Callable[..., Pool],
    adapter_factory: Callable[..., Adapter],
    member_factory: Callable[..., PoolMember],
) -> None:
    with pytest.raises(TenantMismatchError) as info:
        validate_member(pool_factory(), adapter_factory(tenant_key="t2"), member_factory())
    assert info.value.code == "tenant_mismatch"


def test_validate_member_esp_as_mailbox_class_mismatch(
    pool_factory: Callable[..., Pool],
    adapter_factory: Callable[..., Adapter],
    member_factory: Callable[..., PoolMember],
) -> None:
    with pytest.raises(ConflictError) as info:
        validate_member(pool_factory(), adapter_factory(provider="sendgrid"), member_factory())
    assert info.value.code == "class_mismatch"
    validate_member(
        pool_factory(),
        adapter_factory(provider="sendgrid"),
        member_factory(member_class=MemberClass.ESP_API),
    )


def test_validate_member_wrong_adapter_or_weight_raises_input(
    pool_factory: Callable[..., Pool],
    adapter_factory: Callable[..., Adapter],
    member_factory: Callable[..., PoolMember],
) -> None:
    with pytest.raises(InputError):
        validate_member(pool_factory(), adapter_factory(), member_factory(adapter_id="other"))
    zero = PoolMember.model_construct(
        pool_id="p1",
        adapter_id="a1",
        tenant_key="t1",
        weight=0,
        active=True,
        member_class=MemberClass.MAILBOX,
    )
    with pytest.raises(InputError) as info:
        validate_member(pool_factory(), adapter_factory(), zero)
    assert info.value.code == "invalid_weight"
    with pytest.raises(ValueError):
        PoolMember(pool_id="p1", adapter_id="a1", tenant_key="t1", weight=0)


def test_pool_warnings_mixed_classes_reported(member_factory: Callable[..., PoolMember]) -> None:
    same = [member_factory("a"), member_factory("b")]
    assert pool_warnings(same) == ()
    mixed = [*same, member_factory("c", member_class=MemberClass.ESP_API)]
    assert pool_warnings(mixed) == (Reason.MIXED_CLASSES,)


def test_eligibility_each_condition_returns_reason(
    adapter_factory: Callable[..., Adapter], member_factory: Callable[..., PoolMember]
) -> None:
    m = member_factory()
    capped = adapter_factory(daily_cap=2)
    cases = [
        (Candidate(member=m, adapter=None), Reason.ADAPTER_MISSING),
        (Candidate(member=member_factory(active=False), adapter=capped), Reason.MEMBER_INACTIVE),
        (Candidate(member=m, adapter=adapter_factory(active=False)), Reason.ADAPTER_INACTIVE),
        (Candidate(member=m, adapter=adapter_factory(health_state=None)), Reason.HEALTH_UNMANAGED),
        (
            Candidate(member=m, adapter=adapter_factory(health_state=HealthState.RESTING)),
            Reason.RESTING,
        ),
        (
            Candidate(
                member=m,
                adapter=capped,
                state=AdapterState(
                    adapter_id="a1",
                    health_state=HealthState.ACTIVE,
                    day=T0.date(),
                    sent_today=1,
                    pinned_waiting_today=1,
                ),
            ),
            Reason.NO_HEADROOM,
        ),
        (Candidate(member=m, adapter=capped), Reason.ELIGIBLE),
    ]
    for candidate, reason in cases:
        assert eligibility(candidate, T0, policy=POLICY) is reason


def test_eligibility_new_local_day_restores_headroom(
    adapter_factory: Callable[..., Adapter], member_factory: Callable[..., PoolMember]
) -> None:
    state = AdapterState(
        adapter_id="a1", health_state=HealthState.ACTIVE, day=T0.date(), sent_today=2
    )
    candidate = Candidate(
        member=member_factory(), adapter=adapter_factory(daily_cap=2), state=state
    )
    assert eligibility(candidate, T0, policy=POLICY) is Reason.NO_HEADROOM
    assert eligibility(candidate, T0 + timedelta(days=1), policy=POLICY) is Reason.ELIGIBLE


def test_split_eligible_excluded_adapter_evicted(
    adapter_factory: Callable[..., Adapter], member_factory: Callable[..., PoolMember]
) -> None:
    candidates = [
        Candidate(member=member_factory("a1"), adapter=adapter_factory(id="a1")),
        Candidate(member=member_factory("a2"), adapter=adapter_factory(id="a2", active=False)),
    ]
    eligible, evicted = split_eligible(candidates, T0, POLICY, exclude="a1")
    assert eligible == ()
    assert [(e.adapter_id, e.reason) for e in evicted] == [
        ("a1", Reason.PIN_UNAVAILABLE),
        ("a2", Reason.ADAPTER_INACTIVE),
    ]
