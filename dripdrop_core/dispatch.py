"""The dispatch decision for one due step (SPEC §5.3-§5.5, §6, §7).

``decide_dispatch`` is pure: it reads the adapter's rolled state and returns a
single decision. When it says ``Send`` the shell must call
``pacing.record_send`` before deciding anything else for that adapter.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dripdrop_core.circuit import admit
from dripdrop_core.decisions import (
    Defer,
    DispatchDecision,
    Facts,
    Hold,
    Pause,
    Reassign,
    Send,
    Skip,
)
from dripdrop_core.models import (
    Adapter,
    EnrollmentState,
    Frozen,
    HealthState,
    Mode,
    PinPolicy,
    Step,
)
from dripdrop_core.pacing import earliest_send_at
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.ramp import effective_cap, local_day, start_of_next_local_day
from dripdrop_core.reasons import Reason
from dripdrop_core.scheduling import next_window_start
from dripdrop_core.state import AdapterState, roll_day
from dripdrop_core.throttles import Throttled, throttled_until

NO_LOOKAHEAD = timedelta(0)


class DueStep(Frozen):
    """A step execution that is due, with the enrollment facts dispatch needs.

    Attributes:
        step: The step (sending window, override, channel).
        mode: The enrollment's mode; outbound enrollments pause or reassign.
        pin_policy: The pool's ``on_pin_unavailable`` (outbound only).
        recipient_timezone: IANA zone of the recipient, for the sending window (UTC if absent).
        suppressed: The recipient is suppressed in this tenant.
        throttles: The recipient-domain throttles that govern this send, with counters.
    """

    enrollment_id: str
    step_execution_id: str
    tenant_key: str
    step: Step
    mode: Mode = Mode.LIFECYCLE
    enrollment_state: EnrollmentState = EnrollmentState.ACTIVE
    pin_policy: PinPolicy | None = None
    recipient_timezone: str | None = None
    suppressed: bool = False
    throttles: tuple[Throttled, ...] = ()


def terminal_reason(
    adapter: Adapter | None, state: AdapterState | None, now: datetime, *, policy: OutboundPolicy
) -> Reason | None:
    """Return why a sender is terminally unavailable (SPEC §5.3), or ``None``.

    Terminal: removed (``adapter_missing``), deactivated (``adapter_inactive``),
    or resting until later than ``now + horizon`` (``resting_beyond_horizon``).
    The shell calls this as soon as a config or health signal arrives.
    """
    if adapter is None:
        return Reason.ADAPTER_MISSING
    if not adapter.active:
        return Reason.ADAPTER_INACTIVE
    if (
        state is not None
        and state.health_state is HealthState.RESTING
        and state.resting_until is not None
        and state.resting_until > now + policy.terminal_resting_horizon
    ):
        return Reason.RESTING_BEYOND_HORIZON
    return None


def decide_dispatch(
    due: DueStep,
    adapter: Adapter | None,
    state: AdapterState | None,
    now: datetime,
    *,
    policy: OutboundPolicy,
    lookahead: timedelta = NO_LOOKAHEAD,
) -> DispatchDecision:
    """Decide whether a due step goes out now through ``adapter``.

    Args:
        due: The due step execution and its enrollment facts.
        adapter: The step's adapter: the override, the pin or the lifecycle choice;
            ``None`` when it was removed.
        state: That adapter's state (``None`` only together with ``adapter``).
        now: Evaluation instant.
        policy: Horizon, probe budget, timer grace.
        lookahead: How far ahead a minimum-gap slot may be taken now (the time to the
            next tick): the send is decided with ``Send.at`` = the slot, on the same local
            day, instead of waiting for a tick that would find the slot already past.

    Returns:
        ``Hold(paused)``; ``Skip(enrollment_inactive | suppressed | adapter_*)`` ;
        ``Pause`` / ``Reassign`` (terminal sender); ``Defer(outside_sending_window | circuit_open |
        resting | cap | domain_throttle | gap)`` with the exact ``until``; else ``Send(ready)``.
    """
    if due.enrollment_state is EnrollmentState.PAUSED:
        return Hold(reason=Reason.PAUSED)
    if due.enrollment_state is not EnrollmentState.ACTIVE:
        return Skip(reason=Reason.ENROLLMENT_INACTIVE)
    if due.suppressed:
        return Skip(reason=Reason.SUPPRESSED)
    terminal = terminal_reason(adapter, state, now, policy=policy)
    if terminal is not None or adapter is None or state is None:
        return _unavailable(due, adapter, terminal or Reason.ADAPTER_MISSING)
    if due.step.sending_window is not None:
        tz = due.recipient_timezone or "UTC"
        opens = next_window_start(due.step.sending_window, tz, now)
        if opens > now:
            return Defer(
                until=opens, reason=Reason.OUTSIDE_SENDING_WINDOW, facts=Facts(timezone=tz)
            )
    return _pace(
        adapter,
        roll_day(state, adapter, now),
        now,
        policy=policy,
        lookahead=lookahead,
        throttles=due.throttles,
    )


def _unavailable(due: DueStep, adapter: Adapter | None, reason: Reason) -> DispatchDecision:
    adapter_id = adapter.id if adapter is not None else None
    if due.mode is Mode.LIFECYCLE:
        return Skip(reason=reason, facts=Facts(adapter_id=adapter_id))
    if due.step.adapter_override_id is not None:
        # The override is a deliberate, one-step choice; moving the pin would not
        # honour it, so hold the enrollment for an operator instead.
        return Pause(reason=Reason.OVERRIDE_UNAVAILABLE, adapter_id=adapter_id)
    if due.pin_policy is PinPolicy.REASSIGN:
        return Reassign(reason=reason, old_adapter_id=adapter_id)
    return Pause(reason=reason, adapter_id=adapter_id)


def _pace(
    adapter: Adapter,
    state: AdapterState,
    now: datetime,
    *,
    policy: OutboundPolicy,
    lookahead: timedelta = NO_LOOKAHEAD,
    throttles: tuple[Throttled, ...] = (),
) -> DispatchDecision:
    """Circuit, resting, cap, domain throttle and gap gates, in that order, on a state
    rolled to today.

    An open circuit comes first: while adapter-level failures hold the adapter, no other
    gate matters, and the wait ends when the breaker lets its probe go."""
    cap = effective_cap(adapter, state, now, policy=policy.health)
    facts = Facts(
        adapter_id=adapter.id,
        cap=cap,
        sent_today=state.sent_today,
        pinned_waiting_today=state.pinned_waiting_today,
        last_sent_at=state.last_sent_at,
        min_gap_seconds=adapter.min_gap_seconds,
        resting_until=state.resting_until,
        health_state=state.health_state,
        timezone=adapter.timezone,
    )
    admission = admit(state.circuit, now, policy=policy.circuit)
    if not admission.allowed:
        assert admission.until is not None
        return Defer(until=admission.until, reason=Reason.CIRCUIT_OPEN, facts=facts)
    if state.health_state is HealthState.RESTING:
        until = state.resting_until
        if until is None or until <= now:
            # The rest is over but the health timer has not run yet; retry shortly.
            until = now + policy.timer_grace
        return Defer(until=until, reason=Reason.RESTING, facts=facts)
    if cap is not None and state.sent_today >= cap:
        return Defer(
            until=start_of_next_local_day(adapter.timezone, now), reason=Reason.CAP, facts=facts
        )
    throttle_end = throttled_until(throttles, now)
    if throttle_end is not None:
        domain = throttles[0].throttle.domain
        facts = facts.model_copy(update={"domain": domain, "timezone": "UTC"})
        return Defer(until=throttle_end, reason=Reason.DOMAIN_THROTTLE, facts=facts)
    earliest = earliest_send_at(adapter, state)
    if earliest is not None and earliest > now:
        same_day = local_day(adapter.timezone, earliest) == local_day(adapter.timezone, now)
        if earliest <= now + lookahead and same_day:
            return Send(adapter_id=adapter.id, facts=facts, at=earliest)
        return Defer(until=earliest, reason=Reason.GAP, facts=facts)
    return Send(adapter_id=adapter.id, facts=facts)
