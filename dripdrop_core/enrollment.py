"""The enrollment state machine as a table (SPEC §5.2, §5.3, §7, §8), as h11's ``_state.py``.

Every change of an enrollment's ``state`` is an ``Event`` looked up in ``TRANSITIONS``; a pair
that is not in the table does not apply (a reply to an enrollment that already completed, a
pause of a paused one) and leaves the enrollment as it is. The shell never sets ``state``
itself: it calls ``transition`` and interprets the ``Transition`` it gets back.

::

    active (new) ──wait──▶ waiting ──pin──▶ active ◀──resume── paused
    active ──pause──▶ paused
    active | paused | waiting
        ├── complete ──▶ completed     (no step left)
        ├── reply ─────▶ replied       (a correlated reply, SPEC §8)
        ├── bounce ────▶ bounced       (recipient refused for good, §7)
        ├── stop ──────▶ stopped       (complaint, unsubscribe, company stop)
        ├── fail ──────▶ failed        (template error, retries exhausted)
        └── unenroll ──▶ unenrolled
    active (new) | waiting ──reject──▶ rejected   (pool exhausted, suppressed,
                                                   capacity wait expired)

``paused`` and ``waiting`` take the same terminal events as ``active`` (a reply or a bounce
stops a paused enrollment too). A new enrollment starts ``active``; at its first pin it may
``wait`` for capacity or be rejected (``reject``); a waiting one is pinned (``pin``) or
rejected when its wait expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from dripdrop_core.models import EnrollmentState, Frozen

S = EnrollmentState


class Event(StrEnum):
    """What can happen to an enrollment; the value names its telemetry (``enrollment.*``)."""

    WAIT = "wait"
    PIN = "pin"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    REPLY = "reply"
    BOUNCE = "bounce"
    STOP = "stop"
    FAIL = "fail"
    UNENROLL = "unenroll"
    REJECT = "reject"


TERMINAL: frozenset[EnrollmentState] = frozenset(
    {S.COMPLETED, S.REPLIED, S.BOUNCED, S.STOPPED, S.FAILED, S.UNENROLLED, S.REJECTED}
)
"""States an enrollment never leaves: no step is ever sent again."""

LIVE: frozenset[EnrollmentState] = frozenset({S.ACTIVE, S.PAUSED, S.WAITING})
"""States that hold the subscriber's one enrollment in a sequence (re-enrolling returns it)."""

_ENDINGS: Mapping[Event, EnrollmentState] = {
    Event.COMPLETE: S.COMPLETED,
    Event.REPLY: S.REPLIED,
    Event.BOUNCE: S.BOUNCED,
    Event.STOP: S.STOPPED,
    Event.FAIL: S.FAILED,
    Event.UNENROLL: S.UNENROLLED,
}

TRANSITIONS: Mapping[tuple[EnrollmentState, Event], EnrollmentState] = MappingProxyType(
    {
        (S.ACTIVE, Event.WAIT): S.WAITING,
        (S.WAITING, Event.PIN): S.ACTIVE,
        (S.WAITING, Event.REJECT): S.REJECTED,
        (S.ACTIVE, Event.REJECT): S.REJECTED,
        (S.ACTIVE, Event.PAUSE): S.PAUSED,
        (S.PAUSED, Event.RESUME): S.ACTIVE,
        **{(live, event): end for live in LIVE for event, end in _ENDINGS.items()},
    }
)
"""(state, event) → next state. The single source of every enrollment state change."""

REQUIRES_REASON: frozenset[Event] = frozenset(
    {Event.WAIT, Event.PAUSE, Event.BOUNCE, Event.STOP, Event.FAIL, Event.REJECT}
)
"""Events whose new state must say why (``enrollments.reason``): an operator reading
``stopped`` or ``failed`` needs the cause, and ``rejected`` has a database check for it."""


_TELEMETRY: Mapping[Event, str] = {
    Event.RESUME: "enrollment.resumed",
    Event.WAIT: "enrollment.waiting_capacity",
    Event.PIN: "enrollment.capacity_pinned",
}


class Transition(Frozen):
    """The result of one event: the new state and what the shell must record.

    Attributes:
        state: the state after the event.
        reason: ``enrollments.reason`` after the event (``None`` clears it).
        terminal: the enrollment is finished: nothing is scheduled, ``finished_at`` is set.
        telemetry: the telemetry event to emit (``enrollment.<state>``).
    """

    state: EnrollmentState
    reason: str | None
    terminal: bool
    telemetry: str


class TransitionError(ValueError):
    """An event that needs a reason came without one (a bug in the caller)."""


def transition(
    state: EnrollmentState, event: Event, reason: str | None = None
) -> Transition | None:
    """Apply ``event`` to an enrollment in ``state``; ``None`` when it does not apply.

    Raises:
        TransitionError: ``event`` is in ``REQUIRES_REASON`` and ``reason`` is empty.
    """
    target = TRANSITIONS.get((state, event))
    if target is None:
        return None
    if event in REQUIRES_REASON and not reason:
        raise TransitionError(f"{event} needs a reason")
    return Transition(
        state=target,
        reason=None if event in (Event.RESUME, Event.PIN) else reason,
        terminal=target in TERMINAL,
        telemetry=_TELEMETRY.get(event, f"enrollment.{target}"),
    )


def applies(state: EnrollmentState, event: Event) -> bool:
    """Whether ``event`` changes an enrollment in ``state`` (the table has the pair)."""
    return (state, event) in TRANSITIONS


def next_generation(
    latest: EnrollmentState | None, generation: int, *, allow_reenrollment: bool
) -> int:
    """Return the generation an ``enroll`` of a subscriber names (SPEC §7, §13).

    A subscriber's enrollments in a sequence are numbered 0, 1, …; each has its own id, so a
    re-enrollment is a new execution chain (new pin, new thread, new step executions).

    Args:
        latest: State of the subscriber's latest enrollment in the sequence; ``None``: none.
        generation: That enrollment's number (ignored when ``latest`` is ``None``).
        allow_reenrollment: The sequence's ``allow_reenrollment``.

    Returns:
        ``0`` for a first enrollment; ``generation + 1`` when the latest one has finished
        (any state of ``TERMINAL``) and the sequence allows re-enrollment; else
        ``generation``: the same enrollment, answered as a duplicate (a live one is not
        enrolled twice, a finished one is not restarted).
    """
    if latest is None:
        return 0
    if latest in TERMINAL and allow_reenrollment:
        return generation + 1
    return generation
