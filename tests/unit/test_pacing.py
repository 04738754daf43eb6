"""Gap slots: steps waiting on one adapter queue one gap apart (SPEC §5.5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from dripdrop_core.models import Adapter
from dripdrop_core.pacing import reserve_gap_slot, reserve_handoff
from dripdrop_core.state import AdapterState

from .conftest import T0


def test_reserve_gap_slot_queued_steps_wake_one_gap_apart(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(min_gap_seconds=90)
    state = AdapterState(adapter_id="a1", last_sent_at=T0)
    earliest = T0 + timedelta(seconds=90)
    slots = []
    for _ in range(3):
        slot, state = reserve_gap_slot(adapter, state, earliest)
        slots.append(slot)
    assert slots == [earliest, earliest + timedelta(seconds=90), earliest + timedelta(seconds=180)]


def test_reserve_gap_slot_stale_slot_never_delays_past_earliest(
    adapter_factory: Callable[..., Adapter],
) -> None:
    adapter = adapter_factory(min_gap_seconds=90)
    state = AdapterState(adapter_id="a1", gap_slot_at=T0)
    later = T0 + timedelta(hours=5)
    slot, new = reserve_gap_slot(adapter, state, later)
    assert slot == later
    assert new.gap_slot_at == later


def test_reserve_gap_slot_a_step_whose_turn_came_keeps_its_place(
    adapter_factory: Callable[..., Adapter],
) -> None:
    """Woken for its slot, the step finds the last send went out late (a late tick): it
    waits for that send's gap, not behind every step queued since (a gap lost)."""
    adapter = adapter_factory(min_gap_seconds=90)
    gap = timedelta(seconds=90)
    state = AdapterState(adapter_id="a1", last_sent_at=T0, gap_slot_at=T0 + 10 * gap)
    earliest = T0 + gap
    slot, kept = reserve_gap_slot(adapter, state, earliest, its_turn=True)
    assert slot == earliest and kept == state  # the queue behind it is unchanged
    queued, _ = reserve_gap_slot(adapter, state, earliest)
    assert queued == T0 + 11 * gap  # a newcomer joins the end of the queue
    # Nobody queued beyond it: the next newcomer comes one gap after it.
    slot, alone = reserve_gap_slot(
        adapter, AdapterState(adapter_id="a1", gap_slot_at=T0), earliest, its_turn=True
    )
    assert slot == earliest and alone.gap_slot_at == earliest


def test_reserve_handoff_spaces_sends_issued_again_one_gap_apart(
    adapter_factory: Callable[..., Adapter],
) -> None:
    """Twenty sends held up by an outage go out one gap apart, not as a burst."""
    adapter = adapter_factory(min_gap_seconds=90)
    state = AdapterState(adapter_id="a1", last_sent_at=T0 - timedelta(hours=1))
    times = []
    for _ in range(20):
        at, state = reserve_handoff(adapter, state, T0)
        times.append(at)
    assert times[0] == T0  # the last send was long ago: at once
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(seconds=90)] * 19
    no_gap = adapter_factory(min_gap_seconds=0)
    assert reserve_handoff(no_gap, AdapterState(adapter_id="a1"), T0)[0] == T0
