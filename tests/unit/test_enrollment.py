"""The enrollment transition table, walked row by row and pair by pair (as health.TRANSITIONS)."""

from __future__ import annotations

import itertools

import pytest

from dripdrop_core.enrollment import (
    LIVE,
    REQUIRES_REASON,
    TERMINAL,
    TRANSITIONS,
    Event,
    Transition,
    TransitionError,
    applies,
    next_generation,
    transition,
)
from dripdrop_core.models import EnrollmentState
from dripdrop_core.models import EnrollmentState as S

EXPECTED = {
    (S.ACTIVE, Event.WAIT): S.WAITING,
    (S.WAITING, Event.PIN): S.ACTIVE,
    (S.WAITING, Event.REJECT): S.REJECTED,
    (S.ACTIVE, Event.REJECT): S.REJECTED,
    (S.ACTIVE, Event.PAUSE): S.PAUSED,
    (S.PAUSED, Event.RESUME): S.ACTIVE,
    **{
        (live, event): end
        for live in (S.ACTIVE, S.PAUSED, S.WAITING)
        for event, end in {
            Event.COMPLETE: S.COMPLETED,
            Event.REPLY: S.REPLIED,
            Event.BOUNCE: S.BOUNCED,
            Event.STOP: S.STOPPED,
            Event.FAIL: S.FAILED,
            Event.UNENROLL: S.UNENROLLED,
        }.items()
    },
}


def test_table_is_exactly_the_documented_machine() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("pair", "target"), sorted(EXPECTED.items()))
def test_every_row_applies(pair: tuple[S, Event], target: S) -> None:
    state, event = pair
    change = transition(state, event, "why")
    assert change is not None and change.state is target
    assert change.terminal is (target in TERMINAL)
    assert applies(state, event)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, Event)))
def test_every_other_pair_changes_nothing(state: S, event: Event) -> None:
    if (state, event) in EXPECTED:
        return
    assert transition(state, event, "why") is None
    assert not applies(state, event)


def test_terminal_states_are_never_left_and_live_states_all_end() -> None:
    assert {state for state, _ in TRANSITIONS} == set(LIVE)
    assert not LIVE & TERMINAL
    assert set(S) == LIVE | TERMINAL
    for live in LIVE:
        assert {TRANSITIONS[(live, e)] for e in (Event.REPLY, Event.BOUNCE)} <= TERMINAL


@pytest.mark.parametrize("event", sorted(REQUIRES_REASON))
def test_events_that_need_a_reason_refuse_none(event: Event) -> None:
    state = S.WAITING if event is Event.REJECT else S.ACTIVE
    with pytest.raises(TransitionError):
        transition(state, event)


def test_resume_and_pin_clear_the_reason_and_name_their_telemetry() -> None:
    assert transition(S.PAUSED, Event.RESUME, "operator") == Transition(
        state=S.ACTIVE, reason=None, terminal=False, telemetry="enrollment.resumed"
    )
    pinned = transition(S.WAITING, Event.PIN)
    assert pinned is not None and pinned.telemetry == "enrollment.capacity_pinned"
    bounced = transition(S.PAUSED, Event.BOUNCE, "bounce")
    assert bounced == Transition(
        state=S.BOUNCED, reason="bounce", terminal=True, telemetry="enrollment.bounced"
    )


@pytest.mark.parametrize(
    ("latest", "allowed", "expected"),
    [
        (None, False, 0),
        (None, True, 0),
        *((state, False, 2) for state in EnrollmentState),  # never re-enrolled: the same one
        *((state, True, 3 if state in TERMINAL else 2) for state in EnrollmentState),
    ],
)
def test_next_generation_new_only_after_a_finished_one_when_allowed(
    latest: EnrollmentState | None, allowed: bool, expected: int
) -> None:
    assert next_generation(latest, 2, allow_reenrollment=allowed) == expected
