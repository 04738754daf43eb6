"""Runtime state records the shell keeps in Faust changelog tables (SPEC §2, §5.2-§5.7).

Per adapter: today's counters, last send, health and the sliding window. Per
(pool, sequence version): WDRR counters. All are frozen and JSON round-trip;
the helpers here only roll days over, they decide nothing.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import Field

from dripdrop_core.circuit import Circuit
from dripdrop_core.models import Adapter, Frozen, HealthState, UtcDatetime
from dripdrop_core.ramp import local_day


class DayBucket(Frozen):
    """Counts of one adapter-local day, the unit of the sliding window."""

    day: date
    sends: int = Field(default=0, ge=0)
    bounces: int = Field(default=0, ge=0)
    complaints: int = Field(default=0, ge=0)


class AdapterState(Frozen):
    """Everything the hot path needs about one adapter, keyed by ``adapter_id``.

    Attributes:
        day: The adapter-local calendar day the ``*_today`` counters belong to.
        sent_today: Sends committed on ``day`` (reserved when ``Send`` is decided).
        pinned_waiting_today: Pins made on ``day`` still waiting for their first send.
        last_sent_at: Last send, for the minimum gap.
        health_state: Authoritative health at runtime (seeded from the adapter).
        resting_until: End of the current rest, when resting.
        health_score: Last external score, kept for operators.
        ramp_started_at: Ramp anchor; overrides the adapter's after a probe promotion.
        cooldown: Length of the last rest; probe breaches double it up to the cap.
        probe_sends / probe_bounces / probe_complaints: Since probing started.
        buckets: Per local day counts, oldest first, pruned to the window.
        gap_slot_at: The latest send slot handed to a step deferred by the gap, so that
            steps waiting on one adapter queue one gap apart instead of all waking at once.
        circuit: The breaker of adapter-level send failures (``dripdrop_core.circuit``).
    """

    adapter_id: str
    day: date | None = None
    sent_today: int = Field(default=0, ge=0)
    pinned_waiting_today: int = Field(default=0, ge=0)
    last_sent_at: UtcDatetime | None = None
    health_state: HealthState | None = None
    resting_until: UtcDatetime | None = None
    health_score: float | None = None
    ramp_started_at: UtcDatetime | None = None
    cooldown: timedelta | None = None
    probe_sends: int = Field(default=0, ge=0)
    probe_bounces: int = Field(default=0, ge=0)
    probe_complaints: int = Field(default=0, ge=0)
    buckets: tuple[DayBucket, ...] = ()
    gap_slot_at: UtcDatetime | None = None
    circuit: Circuit = Circuit()


class SelectionState(Frozen):
    """Smooth weighted round robin counters of one (pool, sequence version), SPEC §5.2.

    Counters of members that are filtered out are kept untouched, so they resume
    where they stopped when the member is eligible again.
    """

    pool_id: str
    sequence_version_id: str
    current: dict[str, int] = Field(default_factory=dict)


def initial_adapter_state(adapter: Adapter) -> AdapterState:
    """Seed runtime state from the authored adapter (its health and ramp fields).

    Args:
        adapter: The adapter as authored; later health changes live in the state.

    Returns:
        A state with no counters and the adapter's health, rest end and score.
    """
    return AdapterState(
        adapter_id=adapter.id,
        health_state=adapter.health_state,
        resting_until=adapter.resting_until,
        health_score=adapter.health_score,
        ramp_started_at=adapter.ramp_started_at,
    )


def roll_day(state: AdapterState, adapter: Adapter, now: datetime) -> AdapterState:
    """Move the daily counters to the adapter-local day of ``now`` (SPEC §5.4).

    A later day resets ``sent_today`` and ``pinned_waiting_today``; an earlier
    ``now`` (a late event) leaves the state alone so counters never go back.

    Args:
        state: Current state.
        adapter: Supplies the timezone of the day boundary.
        now: The instant being evaluated.

    Returns:
        The state for the local day of ``now``.
    """
    today = local_day(adapter.timezone, now)
    if state.day is not None and today <= state.day:
        return state
    return state.model_copy(update={"day": today, "sent_today": 0, "pinned_waiting_today": 0})


def prune_buckets(
    buckets: tuple[DayBucket, ...], today: date, window_days: int
) -> tuple[DayBucket, ...]:
    """Drop buckets older than the window: ``today`` and the ``window_days - 1`` before."""
    oldest = today - timedelta(days=window_days - 1)
    return tuple(b for b in buckets if b.day >= oldest)


def add_to_bucket(
    buckets: tuple[DayBucket, ...],
    day: date,
    *,
    sends: int = 0,
    bounces: int = 0,
    complaints: int = 0,
) -> tuple[DayBucket, ...]:
    """Add counts to the bucket of ``day``, creating it in date order when missing."""
    found = False
    out: list[DayBucket] = []
    for bucket in buckets:
        if bucket.day == day:
            found = True
            bucket = DayBucket(
                day=day,
                sends=bucket.sends + sends,
                bounces=bucket.bounces + bounces,
                complaints=bucket.complaints + complaints,
            )
        out.append(bucket)
    if not found:
        out.append(DayBucket(day=day, sends=sends, bounces=bounces, complaints=complaints))
    return tuple(sorted(out, key=lambda b: b.day))
