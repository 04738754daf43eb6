"""Effective daily cap, local days and headroom (SPEC §5.4). No counting happens here.

Days are calendar days in the adapter's IANA timezone (zoneinfo), so the
boundary moves with DST; the ramp itself advances every full 24 h.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import HealthPolicy

if TYPE_CHECKING:
    from dripdrop_core.state import AdapterState


def local_day(tz: str, now: datetime) -> date:
    """Return the calendar date of ``now`` in timezone ``tz``."""
    return now.astimezone(ZoneInfo(tz)).date()


def local_instant(tz: str, day: date, at: time) -> datetime:
    """Return the first real instant at or after local ``day`` + ``at``, in UTC.

    A wall time skipped by a DST jump (02:30 on a spring-forward day) maps to
    the instant the clocks jump to; a repeated one maps to its first occurrence.
    """
    zone = ZoneInfo(tz)
    naive = datetime.combine(day, at)
    # fold=0 resolves a skipped time with the offset before the jump, which
    # lands after the jump; it picks the earlier of two repeated times.
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def start_of_next_local_day(tz: str, now: datetime) -> datetime:
    """Return local midnight after ``now`` in ``tz``, as a UTC instant (DST-correct)."""
    tomorrow = local_day(tz, now) + timedelta(days=1)
    return local_instant(tz, tomorrow, time(0))


def ramp_days_elapsed(started_at: datetime, now: datetime) -> int:
    """Full 24 h periods since the ramp anchor, at least 0 (day N is N - 1)."""
    return max(0, (now - started_at) // timedelta(days=1))


def effective_cap(
    adapter: Adapter, state: AdapterState, now: datetime, *, policy: HealthPolicy
) -> int | None:
    """Return today's cap for ``adapter`` (SPEC §5.4), ``None`` meaning no cap.

    Order: probing → the probe budget; no ``daily_cap`` → no cap; complete ramp
    fields → ``min(daily_cap, floor + days_elapsed * increment)``; else ``daily_cap``.

    Args:
        adapter: Authored cap and ramp fields.
        state: Runtime health and a ramp anchor that overrides the adapter's.
        now: Evaluation instant.
        policy: Supplies the probe budget.

    Returns:
        The maximum number of sends for the current local day, or ``None``.
    """
    if state.health_state is HealthState.PROBING:
        return policy.probe_budget
    if adapter.daily_cap is None:
        return None
    anchor = state.ramp_started_at or adapter.ramp_started_at
    if anchor is None or adapter.ramp_floor is None or adapter.ramp_increment is None:
        return adapter.daily_cap
    ramped = adapter.ramp_floor + ramp_days_elapsed(anchor, now) * adapter.ramp_increment
    return min(adapter.daily_cap, ramped)


def headroom(
    adapter: Adapter, state: AdapterState, now: datetime, *, policy: HealthPolicy
) -> int | None:
    """Sends still available for new pins today: cap - sent - pins waiting (SPEC §5.2).

    ``state`` must already be rolled to today (``state.roll_day``).

    Returns:
        Remaining capacity (never negative), or ``None`` when there is no cap.
    """
    cap = effective_cap(adapter, state, now, policy=policy)
    if cap is None:
        return None
    return max(0, cap - state.sent_today - state.pinned_waiting_today)
