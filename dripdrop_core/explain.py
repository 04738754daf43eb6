"""One-line human text for a decision: why a step has not gone out (SPEC §10).

Rendering only; no decision is taken here. Times are shown in the zone the
decision was about (the adapter's or the recipient's) when known.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from dripdrop_core.decisions import (
    Decision,
    Defer,
    Eviction,
    Facts,
    Hold,
    Pause,
    Pin,
    Reassign,
    Reject,
    Send,
    Skip,
    Wait,
)
from dripdrop_core.reasons import Reason


def explain(decision: Decision) -> str:
    """Render ``decision`` as one line for ``explain`` and the runbook.

    Example: ``deferred until 2026-11-29T00:00:00+01:00: daily cap 8 reached (8 sent today)``.
    """
    match decision:
        case Send():
            return f"sending now through {decision.adapter_id}"
        case Defer():
            until = _when(decision.until, decision.facts)
            return f"deferred until {until}: {_cause(decision.reason, decision.facts)}"
        case Skip():
            return f"skipped: {_cause(decision.reason, decision.facts)}"
        case Hold():
            return f"held: {_cause(decision.reason, decision.facts)}"
        case Pause():
            cause = _cause(decision.reason, decision.facts)
            return f"enrollment paused: {cause}{_evicted(decision.evicted)}"
        case Reassign():
            target = decision.new_adapter_id or "a member chosen by WDRR"
            return f"sender {decision.old_adapter_id} replaced by {target}: {decision.reason.value}"
        case Pin():
            return f"pinned to {decision.adapter_id}"
        case Reject():
            head = f"enrollment rejected: {decision.reason.value} in pool {decision.pool_id}"
            return head + _evicted(decision.evicted)
        case Wait():
            head = f"waiting for capacity in pool {decision.pool_id}"
            return head + _evicted(decision.evicted)


def _when(at: datetime, facts: Facts) -> str:
    zone = ZoneInfo(facts.timezone) if facts.timezone else None
    return (at.astimezone(zone) if zone else at).isoformat()


def _cause(reason: Reason, facts: Facts) -> str:
    if reason is Reason.CAP:
        return f"daily cap {facts.cap} reached ({facts.sent_today} sent today)"
    if reason is Reason.GAP:
        last = facts.last_sent_at.isoformat() if facts.last_sent_at else "?"
        return f"minimum gap {facts.min_gap_seconds}s since last send at {last}"
    if reason is Reason.RESTING:
        until = facts.resting_until.isoformat() if facts.resting_until else "?"
        return f"adapter {facts.adapter_id} resting until {until}"
    if reason is Reason.DOMAIN_THROTTLE:
        return f"sends to {facts.domain} at their hourly or daily throttle"
    if reason is Reason.OUTSIDE_SENDING_WINDOW:
        return f"outside the step's sending window in {facts.timezone}"
    if reason is Reason.CIRCUIT_OPEN:
        return (
            f"adapter {facts.adapter_id} circuit open after repeated sending failures"
            " (its next send is a probe)"
        )
    return reason.value.replace("_", " ")


def _evicted(evicted: tuple[Eviction, ...]) -> str:
    if not evicted:
        return ""
    parts = [f"{e.adapter_id}={e.reason.value}" for e in evicted]
    return " (evicted: " + ", ".join(parts) + ")"
