"""What the core tells the shell to do, each with a ``Reason`` and its facts (B3).

Decisions are short nouns; the shell's ``effects.py`` matches on their type.
They carry everything ``explain`` and the ``dispatch.*`` telemetry need.
"""

from __future__ import annotations

from typing import Literal

from dripdrop_core.models import Frozen, HealthState, UtcDatetime
from dripdrop_core.reasons import Reason


class Facts(Frozen):
    """Numbers behind a decision, all optional: the ones that applied are set."""

    adapter_id: str | None = None
    cap: int | None = None
    sent_today: int | None = None
    pinned_waiting_today: int | None = None
    last_sent_at: UtcDatetime | None = None
    min_gap_seconds: int | None = None
    resting_until: UtcDatetime | None = None
    health_state: HealthState | None = None
    timezone: str | None = None
    domain: str | None = None


class Eviction(Frozen):
    """One pool member that could not be chosen, and why (``evicted_adapter_ids``)."""

    adapter_id: str
    reason: Reason


class Send(Frozen):
    """Send the step through ``adapter_id``; call ``pacing.record_send`` at once.

    ``at`` is the hand-off time when it is ahead of ``now`` (a minimum-gap slot within the
    look-ahead): the command carries it and the sender holds the send until then, so slots
    between two ticks are used and hand-offs stay one gap apart. ``None``: now.
    """

    kind: Literal["send"] = "send"
    adapter_id: str
    reason: Reason = Reason.READY
    facts: Facts = Facts()
    at: UtcDatetime | None = None


class Defer(Frozen):
    """Do not send before ``until``; re-evaluate then (cap, gap, resting, sending window)."""

    kind: Literal["defer"] = "defer"
    until: UtcDatetime
    reason: Reason
    facts: Facts = Facts()


class Skip(Frozen):
    """Never send this step (suppressed, stopped enrollment); record it as skipped."""

    kind: Literal["skip"] = "skip"
    reason: Reason
    facts: Facts = Facts()


class Hold(Frozen):
    """Keep the step pending without a timer: the enrollment is paused until resumed."""

    kind: Literal["hold"] = "hold"
    reason: Reason
    facts: Facts = Facts()


class Pause(Frozen):
    """Pause the enrollment: its pinned sender is terminally unavailable (SPEC §5.3)."""

    kind: Literal["pause"] = "pause"
    reason: Reason
    adapter_id: str | None = None
    evicted: tuple[Eviction, ...] = ()
    facts: Facts = Facts()


class Reassign(Frozen):
    """Move the pin to ``new_adapter_id`` and break the thread (SPEC §5.3, §5.6).

    ``new_adapter_id`` is ``None`` when dispatch only detected the need; the shell
    then calls ``pools.decide_pin_unavailable`` to choose the member by WDRR.
    """

    kind: Literal["reassign"] = "reassign"
    reason: Reason
    old_adapter_id: str | None = None
    new_adapter_id: str | None = None
    evicted: tuple[Eviction, ...] = ()


class Pin(Frozen):
    """Pin a new enrollment to ``adapter_id``; then call ``pools.reserve_pin``."""

    kind: Literal["pin"] = "pin"
    adapter_id: str
    reason: Reason = Reason.PINNED
    evicted: tuple[Eviction, ...] = ()


class Reject(Frozen):
    """Do not start the enrollment: record it ``rejected`` (``pool_exhausted``)."""

    kind: Literal["reject"] = "reject"
    reason: Reason
    pool_id: str | None = None
    evicted: tuple[Eviction, ...] = ()


class Wait(Frozen):
    """Start the enrollment ``waiting`` for capacity (SPEC §5.2): members could send, but
    none has headroom now; it is pinned first-in first-out when one has."""

    kind: Literal["wait"] = "wait"
    reason: Reason = Reason.CAPACITY
    pool_id: str | None = None
    evicted: tuple[Eviction, ...] = ()


DispatchDecision = Send | Defer | Skip | Hold | Pause | Reassign
PinDecision = Pin | Reject | Wait
PinUnavailableDecision = Pause | Reassign
Decision = Send | Defer | Skip | Hold | Pause | Reassign | Pin | Reject | Wait
