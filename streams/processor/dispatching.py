"""The due-step flow: schedule a step, fire it when due, act on the core's dispatch decision.

``fire`` asks ``dripdrop_core.dispatch.decide_dispatch`` and acts on ``Send`` (the claim to
the sink), ``Defer`` (index it again), ``Skip`` (the next step), ``Hold``, ``Pause`` and
``Reassign`` (through ``Availability``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from dripdrop_core.decisions import Defer, Hold, Pause, Reassign, Send, Skip
from dripdrop_core.dispatch import DueStep, decide_dispatch
from dripdrop_core.enrollment import TERMINAL, Event
from dripdrop_core.errors import DripDropError
from dripdrop_core.explain import explain
from dripdrop_core.health import fire_health_timer
from dripdrop_core.mail_threads import new_message_id
from dripdrop_core.models import Adapter, Mode, Step
from dripdrop_core.pacing import record_send, reserve_gap_slot
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.ramp import effective_cap
from dripdrop_core.reasons import Reason
from dripdrop_core.scheduling import step_due_at
from dripdrop_core.state import AdapterState
from streams.processor.availability import Availability
from streams.processor.enrollment import complete, note, transition
from streams.processor.redrive import Redrive
from streams.processor.rows import event_op
from streams.processor.runtime import EnrollmentRuntime, LastDecision, Outputs, PendingSend
from streams.processor.schedule import DueIndex, DueItem, enrollment_item
from streams.processor.sending import (
    Composer,
    adapter_for,
    admitted,
    claim_op,
    count_throttled,
    execution_id,
    index_message_id,
    is_gap_turn,
    throttles,
)
from streams.processor.state import Tables
from streams.processor.suppression import is_suppressed


class Dispatcher:
    """Schedules, fires and advances enrollments' steps."""

    availability: Availability
    """Set by the composition root (``flow.Processor``) once built: it schedules through this
    dispatcher, and a send's health outcome or a ``Pause``/``Reassign`` goes through it."""

    def __init__(
        self,
        tables: Tables,
        due: DueIndex,
        *,
        composer: Composer,
        redrive: Redrive,
        policy: OutboundPolicy,
        lookahead: timedelta,
    ) -> None:
        self.tables = tables
        self.due = due
        self.composer = composer
        self.redrive = redrive
        self.policy = policy
        # How far ahead a gap slot is taken (the time to the next tick): the send is decided
        # now for that slot and the sender holds it until then (``Send.at``).
        self.lookahead = lookahead

    def schedule_at(
        self, e: EnrollmentRuntime, due: datetime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Index the enrollment at ``due``; fire at once when it is already due."""
        e = e.model_copy(update={"status": "scheduled", "due_at": due, "pending": None})
        if due <= now:
            return self.fire(e, now, partition, out)
        self.due.add(enrollment_item(e.id, due), due, partition, now=now)
        return self.tables.save_enrollment(e, out)

    def advance(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Move to the next step (scheduled from the last send) or complete."""
        e = e.model_copy(update={"step_index": e.step_index + 1, "pending": None, "attempt": 0})
        steps = self.tables.config.steps(e.version_id)
        if e.step_index >= len(steps):
            return complete(self.tables, e, now, out)
        due = step_due_at(
            steps[e.step_index], enrolled_at=e.enrolled_at, previous_sent_at=e.last_sent_at
        )
        return self.schedule_at(e, due, now, partition, out)

    def fire_item_safely(self, item: str, now: datetime, partition: int, out: Outputs) -> None:
        """One failing item (a bug) must not block every later item of the partition."""
        try:
            self._fire_item(item, now, partition, out)
        except Exception as exc:  # noqa: BLE001 - reported as a dead letter, then skipped
            out.reject("bug", f"schedule item {item}: {type(exc).__name__}: {exc}")

    def _fire_item(self, item: str, now: datetime, partition: int, out: Outputs) -> None:
        due_item = DueItem.decode(item)
        if due_item.kind == "a":
            adapter = self.tables.config.adapter(due_item.ident)
            if adapter is not None:
                state = self.tables.adapter_state(adapter)
                self.availability.apply_health(
                    adapter,
                    fire_health_timer(state, now, policy=self.policy.health),
                    now,
                    partition,
                    out,
                )
            return
        e = self.tables.enrollment(due_item.ident)
        if e is None or e.status != "scheduled" or e.due_at is None:
            return
        if enrollment_item(e.id, e.due_at) != item:
            return  # rescheduled since: a stale index entry
        self.fire(e, now, partition, out)

    def fire(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Decide the due step of ``e`` and act on the decision."""
        if e.state in TERMINAL:
            return e
        steps = self.tables.config.steps(e.version_id)
        if e.step_index >= len(steps):
            return complete(self.tables, e, now, out)
        step = steps[e.step_index]
        adapter = adapter_for(self.tables, e, step)
        state = self.tables.adapter_state(adapter) if adapter is not None else None
        due = self._due_step(e, step, adapter)
        decision = decide_dispatch(
            due, adapter, state, now, policy=self.policy, lookahead=self.lookahead
        )
        match decision:
            case Send():
                assert adapter is not None and state is not None
                at = decision.at or now  # a gap slot ahead of now: the hand-off time
                e = self._send(e, step, adapter, state, now, partition, out, at=at)
                if e.status == "dispatching":  # issued (not failed at rendering)
                    count_throttled(self.tables.index, due.throttles, at)
                return e
            case Defer():
                decision, wake = self._wake(e, decision, adapter, state, now)
                e = note(e, decision, now)
                out.emit(
                    "dispatch.deferred",
                    e.tenant_key,
                    now,
                    enrollment_id=e.id,
                    step_id=step.id,
                    reason=str(decision.reason),
                    until=decision.until.isoformat(),
                    adapter_id=decision.facts.adapter_id,
                    cap=decision.facts.cap,
                    sent_today=decision.facts.sent_today,
                )
                e = self.schedule_at(e, wake, now, partition, out)
                out.sink.append(_deferred_event(e, step, due.step_execution_id, decision, now))
                return e
            case Skip():
                e = note(e, decision, now)
                out.emit(
                    "dispatch.skipped",
                    e.tenant_key,
                    now,
                    enrollment_id=e.id,
                    step_id=step.id,
                    reason=str(decision.reason),
                )
                return self.advance(e, now, partition, out)
            case Hold():
                e = note(e, decision, now).model_copy(update={"status": "held"})
                return self.tables.save_enrollment(e, out)
            case Pause() | Reassign():
                cause = str(decision.reason)
                return self.availability.pin_unavailable(e, now, partition, out, cause=cause)
        raise AssertionError(f"unhandled decision {decision!r}")  # pragma: no cover

    def _due_step(self, e: EnrollmentRuntime, step: Step, adapter: Adapter | None) -> DueStep:
        """What the core decides on: the step, the enrollment's facts, the throttles."""
        pool = self.tables.config.pool(e.pool_id)
        return DueStep(
            enrollment_id=e.id,
            step_execution_id=execution_id(e, step),
            tenant_key=e.tenant_key,
            step=step,
            mode=e.mode,
            enrollment_state=e.state,
            pin_policy=pool.on_pin_unavailable if pool is not None else None,
            recipient_timezone=e.recipient_timezone,
            suppressed=is_suppressed(self.tables.index, e.tenant_key, e.recipient),
            throttles=throttles(self.tables, e, adapter),
        )

    def _wake(
        self,
        e: EnrollmentRuntime,
        decision: Defer,
        adapter: Adapter | None,
        state: AdapterState | None,
        now: datetime,
    ) -> tuple[Defer, datetime]:
        """The deferral as it stands and when to wake for it: a gap deferral takes the
        adapter's next free slot (its queue turn) and wakes one look-ahead before it."""
        wake = decision.until
        if decision.reason is Reason.GAP and adapter is not None and state is not None:
            slot, queued = reserve_gap_slot(
                adapter, state, decision.until, its_turn=is_gap_turn(e, now, self.lookahead)
            )
            self.tables.save_adapter_state(queued)
            decision = decision.model_copy(update={"until": slot})
            # Woken one look-ahead early, the tick before the slot sends it for the
            # slot itself (``Send.at``): a tick after it would hand it over late.
            wake = slot - self.lookahead if slot - self.lookahead > now else slot
        return decision, wake

    def _send(
        self,
        e: EnrollmentRuntime,
        step: Step,
        adapter: Adapter,
        state: AdapterState,
        now: datetime,
        partition: int,
        out: Outputs,
        *,
        at: datetime,
    ) -> EnrollmentRuntime:
        """Issue the send decided ``now`` for hand-off ``at`` (``now`` or a gap slot just
        ahead): the send counts, and its gap runs, from ``at``."""
        exec_id = execution_id(e, step)
        cap = effective_cap(adapter, state, at, policy=self.policy.health)
        is_override = e.mode is Mode.OUTBOUND and step.adapter_override_id is not None
        threaded = e.mode is Mode.OUTBOUND or step.thread_continuity
        first_of_pin = e.mode is Mode.OUTBOUND and not is_override and e.last_sent_at is None
        message_id = new_message_id(uuid.UUID(exec_id), now, adapter.from_address)
        try:
            headers, content = self.composer.compose_checked(
                e,
                step,
                adapter,
                is_override=is_override or not threaded,
                message_id=message_id,
                now=now,
                out=out,
            )
        except DripDropError as exc:
            return self._failed(e, step, adapter, exec_id, exc, now, out)
        state = admitted(adapter, state, now, out, policy=self.policy.circuit)
        outcome = record_send(
            adapter, state, at, policy=self.policy.health, first_send_of_pin=first_of_pin
        )
        self.availability.apply_health(adapter, outcome, now, partition, out)
        claim = claim_op(e, step, adapter, exec_id, headers, content, cap, at)
        pending = PendingSend(
            step_execution_id=exec_id,
            step_id=step.id,
            adapter_id=adapter.id,
            message_id=message_id,
            # Only outbound override sends stay out of the chain; an unthreaded lifecycle
            # send joins it, so a later thread_continuity step replies to it (SPEC §6).
            is_override=is_override,
            decided_at=at,
            first_of_pin=first_of_pin,
        )
        e = e.model_copy(
            update={
                "status": "dispatching",
                "pending": pending,
                "last_decision": LastDecision(
                    kind="send", reason="ready", text="send command issued", at=now
                ),
            }
        )
        return self._issue(e, claim, now, partition, out)

    def _issue(
        self,
        e: EnrollmentRuntime,
        claim: dict[str, Any],
        now: datetime,
        partition: int,
        out: Outputs,
    ) -> EnrollmentRuntime:
        """Store ``e`` dispatching, hand its claim to the sink and arm the redrive."""
        assert e.pending is not None
        # A reply can come back before this send's result is processed (an auto-reply while
        # the result waits behind a backlog): its Message-ID is indexed now, not on the result.
        index_message_id(
            self.tables.index,
            e,
            e.pending.message_id,
            participants=self.policy.correlate_participants,
        )
        # The enrollment row first: the claim's execution row references it.
        e = self.tables.save_enrollment(e, out)
        out.sink.append(claim)
        self.redrive.arm(e, now, partition)
        return e

    def _failed(
        self,
        e: EnrollmentRuntime,
        step: Step,
        adapter: Adapter,
        exec_id: str,
        exc: DripDropError,
        now: datetime,
        out: Outputs,
    ) -> EnrollmentRuntime:
        """A step that cannot render fails its enrollment: a later step would reply to
        mail that was never sent (SPEC §7)."""
        out.emit(
            "dispatch.rejected",
            e.tenant_key,
            now,
            enrollment_id=e.id,
            step_id=step.id,
            reason=exc.code,
            detail=str(exc),
        )
        out.sink.append(
            event_op(
                e,
                "failed",
                now,
                key=exec_id,
                adapter_id=adapter.id,
                step_id=step.id,
                data={"reason": exc.code, "detail": str(exc)},
            )
        )
        return transition(self.tables, e, Event.FAIL, now, out, reason=exc.code, urgent=True)


def _deferred_event(
    e: EnrollmentRuntime, step: Step, exec_id: str, decision: Defer, now: datetime
) -> dict[str, Any]:
    """The ``deferred`` message event: one row per reason and day, the latest is what
    ``explain`` shows."""
    return event_op(
        e,
        "deferred",
        now,
        key=f"{exec_id}:{decision.reason}:{decision.until.date()}",
        adapter_id=decision.facts.adapter_id,
        step_id=step.id,
        data={
            "reason": str(decision.reason),
            "until": decision.until.isoformat(),
            "explain": explain(decision),
        },
    )
