"""Minimum gap and send accounting per adapter (SPEC §5.4, §5.5).

``record_send`` is the only writer of the daily counters; the shell calls it
as soon as dispatch decides ``Send`` (a reservation), so a crash or a concurrent
decision can never push the adapter past its cap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dripdrop_core.health import HealthOutcome, count_send
from dripdrop_core.models import Adapter
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import local_day
from dripdrop_core.state import AdapterState, roll_day


def earliest_send_at(adapter: Adapter, state: AdapterState) -> datetime | None:
    """Return exactly ``last_sent_at + min_gap_seconds``, or ``None`` if no gap applies."""
    if state.last_sent_at is None or adapter.min_gap_seconds == 0:
        return None
    return state.last_sent_at + timedelta(seconds=adapter.min_gap_seconds)


def reserve_gap_slot(
    adapter: Adapter, state: AdapterState, earliest: datetime, *, its_turn: bool = False
) -> tuple[datetime, AdapterState]:
    """Give a step deferred by the minimum gap its own slot, one gap after the last one.

    Without slots every step waiting on an adapter wakes at ``last_send + gap``, one
    sends and all the others defer again: work grows with the queue on every slot. With
    them, the k-th waiting step wakes at ``earliest + (k - 1) * gap``.

    A step woken for its slot (``its_turn``) that finds the gap not yet over (the
    adapter's last send went out after its own slot: a late tick) keeps its place at the
    head of the queue and waits for ``earliest`` itself. Queued again behind every step
    waiting since, it would leave the slot at ``earliest`` empty until the next step's
    slot: nearly a whole gap lost.

    Returns:
        The slot (never before ``earliest``) and the state that remembers it.
    """
    gap = timedelta(seconds=adapter.min_gap_seconds)
    slot = earliest
    if its_turn:
        if state.gap_slot_at is not None and state.gap_slot_at >= slot:
            return slot, state
    elif state.gap_slot_at is not None and state.gap_slot_at + gap > slot:
        slot = state.gap_slot_at + gap
    return slot, state.model_copy(update={"gap_slot_at": slot})


def reserve_handoff(
    adapter: Adapter, state: AdapterState, now: datetime
) -> tuple[datetime, AdapterState]:
    """A hand-off time for a send issued again (after an outage or a lost result).

    One gap after the adapter's last hand-off (``last_sent_at``), never before ``now``; the
    state remembers it, so the next one comes one gap later: sends held up together go out
    spaced, not as a burst.

    Returns:
        The hand-off time and the state with ``last_sent_at`` moved to it.
    """
    earliest = earliest_send_at(adapter, state)
    at = now if earliest is None or earliest < now else earliest
    last = at if state.last_sent_at is None else max(state.last_sent_at, at)
    return at, state.model_copy(update={"last_sent_at": last})


def record_send(
    adapter: Adapter,
    state: AdapterState,
    at: datetime,
    *,
    policy: HealthPolicy,
    first_send_of_pin: bool = False,
) -> HealthOutcome:
    """Count a send made (or reserved) at ``at`` and re-evaluate health.

    Args:
        adapter: The sending adapter (timezone of its day).
        state: Its state before the send.
        at: The send instant; it is also the evaluation ``now``.
        policy: Health thresholds (a clean probe budget promotes to ramping).
        first_send_of_pin: The first send of an enrollment pinned today; its
            reservation in ``pinned_waiting_today`` is released.

    Returns:
        New state (``sent_today``, ``last_sent_at``, window) and any transition.
    """
    rolled = roll_day(state, adapter, at)
    same_day = rolled.day == local_day(adapter.timezone, at)
    waiting = rolled.pinned_waiting_today
    if first_send_of_pin and same_day:
        waiting = max(0, waiting - 1)
    last = at if rolled.last_sent_at is None else max(rolled.last_sent_at, at)
    counted = rolled.model_copy(
        update={
            "sent_today": rolled.sent_today + (1 if same_day else 0),
            "pinned_waiting_today": waiting,
            "last_sent_at": last,
        }
    )
    return count_send(adapter, counted, at, policy=policy)
