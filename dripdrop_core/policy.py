"""Tunable thresholds of health and outbound rules, with SPEC defaults (§5.3-§5.7, §8).

Only configuration lives here: frozen values the shell builds once from settings.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from dripdrop_core.circuit import CircuitPolicy
from dripdrop_core.models import Frozen


class HealthPolicy(Frozen):
    """Thresholds and timers of the health state machine (SPEC §5.7).

    Attributes:
        bounce_rate: Rest when bounces / sends over the window is at least this.
        complaint_rate: Rest when complaints / sends over the window is at least this.
        window_days: Length of the sliding window, in the adapter's local days.
        min_sample: Fewer sends than this in the window never trigger a rest
            (SPEC §12: one bounce out of three sends is noise, not a signal).
        cooldown: First rest length after a threshold breach.
        cooldown_cap: Doubling of the cooldown after probe breaches stops here.
        probe_budget: Daily cap while probing, and clean sends needed to ramp.
    """

    bounce_rate: float = Field(default=0.02, gt=0.0, le=1.0)
    complaint_rate: float = Field(default=0.003, gt=0.0, le=1.0)
    window_days: int = Field(default=30, gt=0)
    min_sample: int = Field(default=20, gt=0)
    cooldown: timedelta = timedelta(days=1)
    cooldown_cap: timedelta = timedelta(days=7)
    probe_budget: int = Field(default=5, gt=0)


class OutboundPolicy(Frozen):
    """Rules of pinning and dispatch that are not health (SPEC §5.3, §8).

    Attributes:
        health: The health thresholds; the probe budget is also a cap.
        terminal_resting_horizon: A pinned sender resting longer than this from
            now is terminally unavailable (pause or reassign its enrollments).
        ooo_morning_hour: Local hour of the recipient's morning for OOO returns.
        timer_grace: How long to wait when a rest has elapsed but the health
            timer has not yet moved the adapter to probing (a race of two events).
        circuit: The breaker of adapter-level send failures (SPEC §7).
        recipient_retry_limit: A send the recipient's server keeps deferring (4xx) is
            retried this long after its decision, then failed and the enrollment stopped.
        correlate_participants: A reply no id matches is correlated to the last live
            enrollment its adapter sent to the reply's ``From`` (``matched_by=participants``).
    """

    health: HealthPolicy = HealthPolicy()
    terminal_resting_horizon: timedelta = timedelta(days=7)
    ooo_morning_hour: int = Field(default=9, ge=0, le=23)
    timer_grace: timedelta = timedelta(seconds=60)
    circuit: CircuitPolicy = CircuitPolicy()
    recipient_retry_limit: timedelta = timedelta(hours=24)
    correlate_participants: bool = True
