from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from dripdrop_core.decisions import Pause, Pin, Reassign, Reject, Wait
from dripdrop_core.errors import ConflictError, TenantMismatchError
from dripdrop_core.models import Adapter, HealthState, PinPolicy, Pool, PoolMember
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.pools import (
    decide_member_returned,
    decide_pin,
    decide_pin_unavailable,
    decide_repin,
    reserve_pin,
)
from dripdrop_core.reasons import Reason
from dripdrop_core.selection import Candidate
from dripdrop_core.state import AdapterState, SelectionState

from .conftest import T0

POLICY = HealthPolicy()
SEL = SelectionState(pool_id="p1", sequence_version_id="v1")


@pytest.fixture
def candidates(
    adapter_factory: Callable[..., Adapter], member_factory: Callable[..., PoolMember]
) -> list[Candidate]:
    return [
        Candidate(member=member_factory("a1", weight=2), adapter=adapter_factory(id="a1")),
        Candidate(
            member=member_factory("a2"),
            adapter=adapter_factory(id="a2", health_state=HealthState.RESTING),
        ),
        Candidate(member=member_factory("a3"), adapter=adapter_factory(id="a3")),
    ]


@pytest.mark.parametrize("policy", list(PinPolicy))
def test_decide_pin_eligible_member_pins_and_lists_evicted(
    pool_factory: Callable[..., Pool], candidates: list[Candidate], policy: PinPolicy
) -> None:
    outcome = decide_pin(
        SEL, pool_factory(on_pin_unavailable=policy), candidates, T0, policy=POLICY
    )
    assert isinstance(outcome.decision, Pin) and outcome.decision.adapter_id == "a1"
    assert [(e.adapter_id, e.reason) for e in outcome.decision.evicted] == [("a2", Reason.RESTING)]
    assert outcome.selection.current == {"a1": -1, "a3": 1}


@pytest.mark.parametrize("policy", list(PinPolicy))
def test_decide_pin_nobody_with_headroom_waits_for_capacity(
    pool_factory: Callable[..., Pool],
    adapter_factory: Callable[..., Adapter],
    member_factory: Callable[..., PoolMember],
    policy: PinPolicy,
) -> None:
    """SPEC §5.2 (amended): capacity waits, it does not reject."""
    full = AdapterState(
        adapter_id="a1", health_state=HealthState.ACTIVE, day=T0.date(), sent_today=3
    )
    held = [
        Candidate(member=member_factory("a1"), adapter=adapter_factory(daily_cap=3), state=full),
        Candidate(member=member_factory("a2"), adapter=None),
    ]
    outcome = decide_pin(SEL, pool_factory(on_pin_unavailable=policy), held, T0, policy=POLICY)
    assert isinstance(outcome.decision, Wait) and outcome.decision.reason is Reason.CAPACITY
    assert outcome.decision.pool_id == "p1" and outcome.selection == SEL
    assert [(e.adapter_id, e.reason) for e in outcome.decision.evicted] == [
        ("a1", Reason.NO_HEADROOM),
        ("a2", Reason.ADAPTER_MISSING),
    ]


@pytest.mark.parametrize("policy", list(PinPolicy))
def test_decide_pin_no_member_could_send_at_all_rejects_pool_exhausted(
    pool_factory: Callable[..., Pool],
    adapter_factory: Callable[..., Adapter],
    member_factory: Callable[..., PoolMember],
    policy: PinPolicy,
) -> None:
    dead = [
        Candidate(member=member_factory("a1"), adapter=adapter_factory(active=False)),
        Candidate(member=member_factory("a2"), adapter=None),
    ]
    outcome = decide_pin(SEL, pool_factory(on_pin_unavailable=policy), dead, T0, policy=POLICY)
    assert isinstance(outcome.decision, Reject) and outcome.decision.reason is Reason.POOL_EXHAUSTED
    assert outcome.decision.pool_id == "p1" and outcome.selection == SEL
    assert [(e.adapter_id, e.reason) for e in outcome.decision.evicted] == [
        ("a1", Reason.ADAPTER_INACTIVE),
        ("a2", Reason.ADAPTER_MISSING),
    ]


def test_decide_pin_unavailable_pause_pool_pauses(
    pool_factory: Callable[..., Pool], candidates: list[Candidate]
) -> None:
    outcome = decide_pin_unavailable(
        SEL,
        pool_factory(on_pin_unavailable=PinPolicy.PAUSE),
        candidates,
        T0,
        pinned_adapter_id="a1",
        policy=POLICY,
    )
    assert isinstance(outcome.decision, Pause) and outcome.decision.reason is Reason.PIN_UNAVAILABLE


def test_decide_pin_unavailable_reassign_picks_other_member(
    pool_factory: Callable[..., Pool], candidates: list[Candidate]
) -> None:
    outcome = decide_pin_unavailable(
        SEL, pool_factory(), candidates, T0, pinned_adapter_id="a1", policy=POLICY
    )
    decision = outcome.decision
    assert isinstance(decision, Reassign) and decision.reason is Reason.REASSIGNED
    assert (decision.old_adapter_id, decision.new_adapter_id) == ("a1", "a3")


def test_decide_pin_unavailable_reassign_none_eligible_pauses(
    pool_factory: Callable[..., Pool], candidates: list[Candidate]
) -> None:
    outcome = decide_pin_unavailable(
        SEL, pool_factory(), candidates[:2], T0, pinned_adapter_id="a1", policy=POLICY
    )
    assert isinstance(outcome.decision, Pause) and outcome.decision.reason is Reason.POOL_EXHAUSTED
    assert outcome.selection == SEL


def test_decide_repin_valid_adapter_breaks_thread_move(
    adapter_factory: Callable[..., Adapter],
) -> None:
    decision = decide_repin("t1", "a1", adapter_factory(id="a9"), None)
    assert (decision.reason, decision.old_adapter_id, decision.new_adapter_id) == (
        Reason.REPINNED,
        "a1",
        "a9",
    )
    assert (
        decide_repin("t1", "a1", adapter_factory(id="a9", health_state=None), None).new_adapter_id
        == "a9"
    )


def test_decide_repin_invalid_target_raises_typed_errors(
    adapter_factory: Callable[..., Adapter],
) -> None:
    with pytest.raises(TenantMismatchError):
        decide_repin("t1", "a1", adapter_factory(tenant_key="t2"), None)
    with pytest.raises(ConflictError) as inactive:
        decide_repin("t1", "a1", adapter_factory(active=False), None)
    assert inactive.value.code == "adapter_inactive"
    resting = AdapterState(adapter_id="a1", health_state=HealthState.RESTING)
    with pytest.raises(ConflictError) as rest:
        decide_repin("t1", "a1", adapter_factory(), resting)
    assert rest.value.code == "adapter_resting"


def test_reserve_pin_counts_waiting_pin_today(adapter_factory: Callable[..., Adapter]) -> None:
    state = reserve_pin(adapter_factory(), AdapterState(adapter_id="a1"), T0)
    state = reserve_pin(adapter_factory(), state, T0)
    assert (state.day, state.pinned_waiting_today) == (T0.date(), 2)


def test_decide_pin_a_rest_beyond_the_horizon_cannot_make_an_enrollment_wait(
    pool_factory: Callable[..., Pool],
    adapter_factory: Callable[..., Adapter],
    member_factory: Callable[..., PoolMember],
) -> None:
    """SPEC §5.3: a member resting beyond the horizon could not send at all (reject);
    one resting for a while only holds the enrollment (wait)."""

    def resting(days: int) -> AdapterState:
        return AdapterState(
            adapter_id="a1",
            health_state=HealthState.RESTING,
            resting_until=T0 + timedelta(days=days),
            day=T0.date(),
        )

    def decide(days: int) -> object:
        held = [
            Candidate(member=member_factory("a1"), adapter=adapter_factory(), state=resting(days))
        ]
        pool = pool_factory(on_pin_unavailable=PinPolicy.PAUSE)
        return decide_pin(SEL, pool, held, T0, policy=POLICY, horizon=timedelta(days=7)).decision

    assert isinstance(decide(2), Wait)
    rejected = decide(8)
    assert isinstance(rejected, Reject) and rejected.reason is Reason.POOL_EXHAUSTED


HORIZON = timedelta(days=7)


def test_decide_member_returned_keeps_the_pin_when_its_own_sender_is_back(
    pool_factory: Callable[..., Pool], candidates: list[Candidate]
) -> None:
    outcome = decide_member_returned(
        SEL, pool_factory(), candidates, T0, pinned_adapter_id="a1", policy=POLICY, horizon=HORIZON
    )
    assert outcome is not None and outcome.decision == Pin(adapter_id="a1")
    assert outcome.selection == SEL  # no WDRR turn spent on a pin kept


def test_decide_member_returned_moves_the_pin_when_another_member_is_back(
    pool_factory: Callable[..., Pool],
    candidates: list[Candidate],
    adapter_factory: Callable[..., Adapter],
) -> None:
    gone = Candidate(member=candidates[0].member, adapter=adapter_factory(id="a1", active=False))
    outcome = decide_member_returned(
        SEL,
        pool_factory(),
        [gone, *candidates[1:]],
        T0,
        pinned_adapter_id="a1",
        policy=POLICY,
        horizon=HORIZON,
    )
    assert outcome is not None and isinstance(outcome.decision, Reassign)
    assert outcome.decision.new_adapter_id == "a3"


def test_decide_member_returned_waits_while_nobody_can_take_it(
    pool_factory: Callable[..., Pool], candidates: list[Candidate]
) -> None:
    long_rest = AdapterState(
        adapter_id="a1", health_state=HealthState.RESTING, resting_until=T0 + HORIZON * 2
    )
    own = Candidate(member=candidates[0].member, adapter=candidates[0].adapter, state=long_rest)
    for pool, members in (
        (pool_factory(), [own, candidates[1]]),  # its own rests too long, a2 rests
        (pool_factory(on_pin_unavailable=PinPolicy.PAUSE), candidates),  # an operator resumes
    ):
        assert (
            decide_member_returned(
                SEL, pool, members, T0, pinned_adapter_id="a1", policy=POLICY, horizon=HORIZON
            )
            is None
        )
