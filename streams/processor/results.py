"""Delivery results, interpreted through ``dripdrop_core.outcomes.OUTCOMES``.

A result threads the send and schedules the next step, or stops the enrollment, or sends
the same again after a back-off (through the redrive); it also feeds the adapter's circuit
breaker and its bounce count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dripdrop_core.circuit import Signal
from dripdrop_core.circuit import on_signal as on_circuit_signal
from dripdrop_core.correlation import index_key, normalize_message_id
from dripdrop_core.enrollment import TERMINAL, Event
from dripdrop_core.health import count_outcome
from dripdrop_core.mail_threads import advance_thread
from dripdrop_core.models import Adapter, EnrollmentState
from dripdrop_core.outcomes import OutcomeRule, next_attempt, outcome_rule
from dripdrop_core.policy import OutboundPolicy
from streams.processor.availability import Availability
from streams.processor.dispatching import Dispatcher
from streams.processor.enrollment import transition
from streams.processor.redrive import Redrive
from streams.processor.rows import error_code, execution_ref
from streams.processor.runtime import EnrollmentRuntime, Outputs, PendingSend
from streams.processor.sending import index_message_id
from streams.processor.state import Tables
from streams.processor.suppression import suppress


@dataclass(frozen=True, slots=True)
class Backoff:
    """When a send the provider could not take goes again."""

    base: timedelta
    """First wait (then doubling, ``dripdrop_core.outcomes.next_attempt``)."""
    time_scale: float
    """Simulated seconds per real second: a provider's Retry-After is real time."""


class Results:
    """Applies ``dispatch-results`` records to the enrollment whose send is pending."""

    def __init__(
        self,
        tables: Tables,
        dispatcher: Dispatcher,
        *,
        availability: Availability,
        redrive: Redrive,
        policy: OutboundPolicy,
        backoff: Backoff,
    ) -> None:
        self.tables = tables
        self.dispatcher = dispatcher
        self.availability = availability
        self.redrive = redrive
        self.policy = policy
        self.backoff = backoff

    def on_result(self, result: dict[str, Any], now: datetime, partition: int) -> Outputs:
        """A delivery outcome, interpreted through ``dripdrop_core.outcomes.OUTCOMES``: thread
        the send and schedule the next step, or stop, or send the same again later."""
        out = Outputs()
        e = self.tables.enrollment(result.get("enrollment_id") or "")
        if e is None or e.pending is None:
            return out
        pending = e.pending
        if pending.step_execution_id != result["step_execution_id"]:
            return out  # a duplicate or an old attempt
        self.redrive.drop(partition, e.id)
        status = result["status"]
        rule = outcome_rule(status)
        if pending.ambiguous and rule.holds:
            return out  # held already: a replayed result, or a re-issue ambiguous again
        attrs = {
            "enrollment_id": e.id,
            "step_id": pending.step_id,
            "adapter_id": pending.adapter_id,
            "step_execution_id": pending.step_execution_id,
        }
        adapter = self.tables.config.adapter(pending.adapter_id)
        if rule.circuit is not None and adapter is not None:
            self._circuit_signal(adapter, rule.circuit, now, out)
        if rule.again is not None:
            return self._send_again(e, rule, result, now, partition, attrs, out)
        if rule.threads:
            e = self._sent(e, pending, result, now, attrs, out)
        else:
            out.emit(f"dispatch.{status}", e.tenant_key, now, error=result.get("error"), **attrs)
        if rule.counts_bounce and adapter is not None:
            outcome = count_outcome(
                adapter,
                self.tables.adapter_state(adapter),
                "bounce",
                at=now,
                now=now,
                policy=self.policy.health,
            )
            self.availability.apply_health(adapter, outcome, now, partition, out)
        if rule.suppress:
            suppress(self.tables.index, e.tenant_key, e.recipient, "bounce", now, out)
        return self._settle(e, rule, result, now, partition, attrs, out)

    def _sent(
        self,
        e: EnrollmentRuntime,
        pending: PendingSend,
        result: dict[str, Any],
        now: datetime,
        attrs: dict[str, Any],
        out: Outputs,
    ) -> EnrollmentRuntime:
        """The send went out: index it for correlation and thread the next step under it."""
        # Indexed when decided; a send decided by an earlier version is indexed here.
        index_message_id(
            self.tables.index,
            e,
            pending.message_id,
            participants=self.policy.correlate_participants,
            only_if_missing=True,
        )
        if result.get("provider_message_id"):
            pid = normalize_message_id(result["provider_message_id"]) or ""
            self.tables.index[index_key(e.tenant_key, pid, "provider")] = execution_ref(e)
        thread = advance_thread(
            e.thread, is_override=pending.is_override, message_id=pending.message_id
        )
        e = e.model_copy(update={"thread": thread, "last_sent_at": pending.decided_at})
        out.emit(
            "dispatch.sent",
            e.tenant_key,
            now,
            out_message_id=normalize_message_id(pending.message_id),
            provider_message_id=result.get("provider_message_id"),
            **attrs,
        )
        return e

    def _settle(
        self,
        e: EnrollmentRuntime,
        rule: OutcomeRule,
        result: dict[str, Any],
        now: datetime,
        partition: int,
        attrs: dict[str, Any],
        out: Outputs,
    ) -> Outputs:
        """Hold an ambiguous send, apply the rule's enrollment event, or finish the step."""
        pending = e.pending
        assert pending is not None
        if rule.holds:
            out.emit(
                "send.ambiguous",
                e.tenant_key,
                now,
                error=result.get("error"),
                out_message_id=normalize_message_id(pending.message_id),
                **attrs,
            )
            if e.state not in TERMINAL:
                # Keep the send pending, so the resolution's result still matches it.
                held = pending.model_copy(update={"ambiguous": True})
                self.tables.save_enrollment(e.model_copy(update={"pending": held}), out)
                return out
        if rule.event is not None:
            from_error = error_code(result.get("error")) if rule.reason_from_error else None
            reason = from_error or rule.reason
            e = e.model_copy(update={"pending": None})
            if e.state in TERMINAL:
                return self._stored(e, out)
            transition(self.tables, e, rule.event, now, out, reason=reason, urgent=True)
            return out
        if e.state in TERMINAL:
            return self._stored(e, out)
        return self._finish_step(e, now, partition, out)

    def _circuit_signal(
        self, adapter: Adapter, signal: Signal, now: datetime, out: Outputs
    ) -> None:
        """Feed one send outcome to the adapter's breaker; announce it opening or closing."""
        state = self.tables.adapter_state(adapter)
        change = on_circuit_signal(state.circuit, signal, now, policy=self.policy.circuit)
        if change.circuit != state.circuit:
            self.tables.save_adapter_state(state.model_copy(update={"circuit": change.circuit}))
        if change.opened:
            out.emit(
                "provider.circuit_open",
                adapter.tenant_key,
                now,
                adapter_id=adapter.id,
                until=change.circuit.until,
                opens=change.circuit.opens,
            )
        elif change.closed:
            out.emit("provider.circuit_closed", adapter.tenant_key, now, adapter_id=adapter.id)

    def _send_again(
        self,
        e: EnrollmentRuntime,
        rule: OutcomeRule,
        result: dict[str, Any],
        now: datetime,
        partition: int,
        attrs: dict[str, Any],
        out: Outputs,
    ) -> Outputs:
        """Nothing was handed over (``retry``, ``deferred``): the same send (id, Message-ID)
        goes again after a back-off, through the redrive; the step is never passed by. A
        recipient deferred past the retry limit fails the enrollment instead."""
        pending = e.pending
        assert pending is not None
        retry_after_ms = result.get("retry_after_ms")
        retry_after = (
            timedelta(milliseconds=retry_after_ms * self.backoff.time_scale)
            if retry_after_ms is not None
            else None
        )
        attempt = next_attempt(
            rule,
            decided_at=pending.decided_at,
            retries=pending.retries,
            now=now,
            base=self.backoff.base,
            retry_after=retry_after,
            limit=self.policy.recipient_retry_limit,
        )
        if attempt.at is None:
            out.emit("dispatch.failed", e.tenant_key, now, error=result.get("error"), **attrs)
            e = e.model_copy(update={"pending": None})
            transition(self.tables, e, Event.FAIL, now, out, reason=attempt.reason, urgent=True)
            return out
        again = pending.model_copy(update={"retries": pending.retries + 1})
        self.tables.save_enrollment(e.model_copy(update={"pending": again}), out)
        self.redrive.hold(partition, e.id, pending.step_execution_id, attempt.at)
        out.emit(
            "dispatch.retry_scheduled",
            e.tenant_key,
            now,
            retry_at=attempt.at,
            retries=again.retries,
            cause=rule.again,
            error=result.get("error"),
            **attrs,
        )
        return out

    def _stored(self, e: EnrollmentRuntime, out: Outputs) -> Outputs:
        self.tables.save_enrollment(e.model_copy(update={"pending": None}), out)
        return out

    def _finish_step(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> Outputs:
        if e.state is EnrollmentState.PAUSED:
            e = e.model_copy(
                update={"step_index": e.step_index + 1, "pending": None, "status": "held"}
            )
            self.tables.save_enrollment(e, out)
        else:
            self.dispatcher.advance(e, now, partition, out)
        return out
