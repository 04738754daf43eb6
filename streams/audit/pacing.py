"""Pacing invariants over the sends: ``over_cap`` (the effective cap of an adapter-local
day, SPEC §5.4) and ``min_gap`` (an adapter's ``min_gap_seconds``). No I/O happens here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.ramp import effective_cap, local_day
from dripdrop_core.state import AdapterState
from streams.audit.records import GapBasis, SentSend, Violation, attributes


@dataclass(frozen=True, slots=True)
class _HealthChange:
    at: datetime
    from_state: str | None
    to_state: str | None


def health_changes(telemetry: Iterable[Mapping[str, Any]]) -> dict[str, list[_HealthChange]]:
    """``health.state_changed`` events per adapter, in time order."""
    changes: dict[str, list[_HealthChange]] = defaultdict(list)
    for t in telemetry:
        if t.get("name") != "health.state_changed":
            continue
        attrs = attributes(t)
        if attrs.get("adapter_id"):
            changes[attrs["adapter_id"]].append(
                _HealthChange(at=t["at"], from_state=attrs.get("from"), to_state=attrs.get("to"))
            )
    for items in changes.values():
        items.sort(key=lambda c: c.at)
    return changes


def state_at(adapter: Adapter, changes: Sequence[_HealthChange], at: datetime) -> AdapterState:
    """Health and ramp anchor of ``adapter`` at ``at``, from the logged transitions.

    Before the first logged transition the state is that transition's ``from``; without
    any, the authored state. A clean probe (probing → ramping) restarts the ramp there.
    """
    health = changes[0].from_state if changes else adapter.health_state
    anchor = adapter.ramp_started_at
    for change in changes:
        if change.at > at:
            break
        health = change.to_state
        if change.to_state == "ramping" and (change.from_state == "probing" or anchor is None):
            anchor = change.at
    return AdapterState(
        adapter_id=adapter.id,
        health_state=HealthState(health) if health else None,
        ramp_started_at=anchor,
    )


def check_caps(
    sends: Sequence[SentSend],
    adapters: Mapping[str, Adapter],
    telemetry: Sequence[Mapping[str, Any]],
    *,
    policy: HealthPolicy,
    recorded_caps: Mapping[tuple[str, date], int] | None = None,
) -> list[Violation]:
    """The n-th send of an adapter-local day must satisfy n <= the cap at that send.

    The cap is the one PostgreSQL recorded for that adapter and day when the claim was
    granted (``adapter_day_counters.cap``), else the ramp formula over the adapter as
    authored now and its health at the send (from ``health.state_changed``).
    """
    changes = health_changes(telemetry)
    counted: dict[tuple[str, Any], int] = defaultdict(int)
    flagged: set[tuple[str, Any]] = set()
    out: list[Violation] = []
    for s in sends:
        adapter = adapters.get(s.adapter_id)
        if adapter is None:
            continue
        day = local_day(adapter.timezone, s.decided_at)
        counted[(adapter.id, day)] += 1
        state = state_at(adapter, changes.get(adapter.id, []), s.decided_at)
        recorded = (recorded_caps or {}).get((adapter.id, day))
        cap = (
            recorded
            if recorded is not None
            else effective_cap(adapter, state, s.decided_at, policy=policy)
        )
        n = counted[(adapter.id, day)]
        if cap is not None and n > cap and (adapter.id, day) not in flagged:
            flagged.add((adapter.id, day))
            out.append(
                Violation(
                    kind="over_cap",
                    message=(
                        f"adapter {adapter.id} sent {n} on local day {day} ({adapter.timezone}),"
                        f" cap {cap}; send {s.step_execution_id} at {s.decided_at.isoformat()}"
                    ),
                    tenant_key=s.tenant_key,
                    adapter_id=adapter.id,
                    enrollment_id=s.enrollment_id,
                    step_execution_id=s.step_execution_id,
                )
            )
    return out


def check_gaps(
    sends: Sequence[SentSend], adapters: Mapping[str, Adapter], *, basis: GapBasis = "decided"
) -> list[Violation]:
    """Consecutive sends of one adapter are at least ``min_gap_seconds`` apart.

    ``basis="decided"`` spaces the processor's ``decided_at`` (what it guarantees);
    ``"handoff"`` the ``finished_at`` of the ``sent`` results, in that order (what the
    provider saw; sends without one are skipped).
    """
    timed = [
        (s.decided_at if basis == "decided" else s.handed_off_at, s)
        for s in sends
        if (s.decided_at if basis == "decided" else s.handed_off_at) is not None
    ]
    timed.sort(key=lambda item: (item[0], item[1].order))
    last: dict[str, tuple[datetime, SentSend]] = {}
    out: list[Violation] = []
    for at, s in timed:
        assert at is not None  # filtered above; for the type checker
        adapter = adapters.get(s.adapter_id)
        previous = last.get(s.adapter_id)
        last[s.adapter_id] = (at, s)
        if adapter is None or previous is None or adapter.min_gap_seconds <= 0:
            continue
        gap = (at - previous[0]).total_seconds()
        if gap < adapter.min_gap_seconds:
            what = "sends" if basis == "decided" else "hand-offs of"
            out.append(
                Violation(
                    kind="min_gap",
                    message=(
                        f"adapter {adapter.id}: {what} {previous[1].step_execution_id} and"
                        f" {s.step_execution_id} {gap:.3f}s apart, minimum"
                        f" {adapter.min_gap_seconds}s"
                    ),
                    tenant_key=s.tenant_key,
                    adapter_id=adapter.id,
                    enrollment_id=s.enrollment_id,
                    step_execution_id=s.step_execution_id,
                )
            )
    return out
