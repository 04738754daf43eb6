"""Enrollments follow their sender's availability (SPEC §5.3, §5.7).

A health outcome is stored and published here; a pinned sender that becomes terminally
unavailable pauses or reassigns its enrollments, and one that may send again (activated,
added to a pool, back from a long rest) resumes those its ``reassign`` pools paused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dripdrop_core.decisions import Pin, Reassign
from dripdrop_core.dispatch import terminal_reason
from dripdrop_core.enrollment import TERMINAL, Event
from dripdrop_core.enrollment import applies as enrollment_applies
from dripdrop_core.health import HealthOutcome, next_health_timer
from dripdrop_core.mail_threads import break_thread
from dripdrop_core.models import Adapter, EnrollmentState
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.pools import decide_member_returned, decide_pin_unavailable
from streams.processor.enrollment import transition
from streams.processor.rows import event_op, health_op
from streams.processor.runtime import EnrollmentRuntime, LastDecision, Outputs
from streams.processor.schedule import DueIndex, adapter_item
from streams.processor.state import Tables

ScheduleAt = Callable[[EnrollmentRuntime, datetime, datetime, int, Outputs], EnrollmentRuntime]
"""``schedule_at(e, due, now, partition, out)``: index ``e`` at ``due``, or fire it now."""


class Availability:
    """Applies health outcomes and moves enrollments off (and back onto) their senders."""

    def __init__(
        self,
        tables: Tables,
        due: DueIndex,
        policy: OutboundPolicy,
        *,
        owns: Callable[[str, int], bool],
        schedule_at: ScheduleAt,
    ) -> None:
        self.tables = tables
        self.due = due
        self.policy = policy
        self.owns = owns
        self.schedule_at = schedule_at

    def apply_health(
        self,
        adapter: Adapter,
        outcome: HealthOutcome,
        now: datetime,
        partition: int,
        out: Outputs,
    ) -> None:
        """Store the new health, publish transitions, arm the timer, act on terminal senders
        and on senders back from a terminal rest."""
        was_terminal = bool(outcome.transitions) and (
            terminal_reason(adapter, self.tables.adapter_state(adapter), now, policy=self.policy)
            is not None
        )
        self.tables.save_adapter_state(outcome.state)
        for t in outcome.transitions:
            attrs = {
                "adapter_id": adapter.id,
                "from": t.from_state,
                "to": t.to_state,
                "reason": str(t.reason),
                "source": t.source,
                "resting_until": t.resting_until.isoformat() if t.resting_until else None,
            }
            out.emit("health.state_changed", adapter.tenant_key, now, **attrs)
            if str(t.reason) in ("bounce_threshold", "complaint_threshold"):
                out.emit(f"policy.{t.reason}", adapter.tenant_key, now, adapter_id=adapter.id)
            out.sink.append(
                health_op(
                    adapter.id,
                    adapter.tenant_key,
                    outcome.state.model_dump(mode="json"),
                    t.model_dump(mode="json"),
                )
            )
        if outcome.transitions:
            timer = next_health_timer(outcome.state)
            if timer is not None:
                self.due.add(adapter_item(adapter.id, timer), timer, partition, now=now)
            if terminal_reason(adapter, outcome.state, now, policy=self.policy) is not None:
                self.pinned_sender_unavailable(adapter.id, now, partition, out)
            elif was_terminal:
                self.sender_returned(adapter.id, now, partition, out)

    def pinned_sender_unavailable(
        self,
        adapter_id: str,
        now: datetime,
        partition: int,
        out: Outputs,
        *,
        pool_id: str | None = None,
    ) -> None:
        """Pause or reassign, eagerly, every live enrollment pinned to ``adapter_id`` (only
        those of ``pool_id`` when the adapter left that one pool)."""
        for key in list(self.tables.enrollments.keys()):
            e = self.tables.enrollment(key)
            if e is None or e.adapter_id != adapter_id or e.state in TERMINAL:
                continue
            if pool_id is not None and e.pool_id != pool_id:
                continue
            if e.state is EnrollmentState.PAUSED:
                continue
            self.pin_unavailable(e, now, partition, out, cause="sender_unavailable")

    def pin_unavailable(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs, *, cause: str
    ) -> EnrollmentRuntime:
        """The pinned sender is terminally unavailable: pause or reassign (SPEC §5.3)."""
        pool = self.tables.config.pool(e.pool_id)
        if pool is None or e.adapter_id is None:
            return self._pause_unavailable(e, now, out, cause=cause)
        selection = self.tables.selection_state(pool.id, e.version_id)
        outcome = decide_pin_unavailable(
            selection,
            pool,
            self.tables.candidates(pool.id),
            now,
            pinned_adapter_id=e.adapter_id,
            policy=self.policy.health,
        )
        decision = outcome.decision
        if isinstance(decision, Reassign) and decision.new_adapter_id is not None:
            self.tables.save_selection(outcome.selection)
            e = move_pin(e, decision.new_adapter_id, now, out, reason=cause)
            if e.status == "scheduled" and e.due_at is not None:
                return self.schedule_at(e, max(e.due_at, now), now, partition, out)
            return self.tables.save_enrollment(e, out)
        return self._pause_unavailable(e, now, out, cause=cause)

    def _pause_unavailable(
        self, e: EnrollmentRuntime, now: datetime, out: Outputs, *, cause: str
    ) -> EnrollmentRuntime:
        if not enrollment_applies(e.state, Event.PAUSE):
            return e  # paused already (by an operator: resuming meets the same check again)
        note = LastDecision(kind="pause", reason="pin_unavailable", text=f"paused: {cause}", at=now)
        return transition(
            self.tables,
            e.model_copy(update={"last_decision": note}),
            Event.PAUSE,
            now,
            out,
            reason="pin_unavailable",
            urgent=True,
            announce="enrollment.paused_pin_unavailable",
            attrs={"adapter_id": e.adapter_id, "reason": cause},
        )

    def resume(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Resume a paused enrollment; its held step is scheduled again (same execution)."""
        e = transition(self.tables, e, Event.RESUME, now, out, urgent=True)
        if e.status != "dispatching":
            return self.schedule_at(e, max(e.due_at or now, now), now, partition, out)
        return e

    def sender_returned(self, adapter_id: str, now: datetime, partition: int, out: Outputs) -> None:
        """``adapter_id`` may send again (activated, added to a pool, back from a long
        rest): enrollments its ``reassign`` pools paused for want of any eligible member
        continue (SPEC §5.3). Paused ones of ``pause`` pools wait for an operator."""
        pools = set(self.tables.config.pools_of_adapter(adapter_id))
        if not pools:
            return
        for key, raw in self.tables.store.partition_items("enrollments", partition):
            if (
                raw
                and raw.get("state") == "paused"
                and raw.get("reason") == "pin_unavailable"
                and raw.get("pool_id") in pools
            ):
                self.member_returned(key, pools, now, partition, out)

    def member_returned(
        self, key: str, pools: set[str] | None, now: datetime, partition: int, out: Outputs
    ) -> None:
        """A member of the paused enrollment ``key``'s pool (of ``pools``; any when
        ``None``) may send again: repin or resume it when the core says so."""
        e = self.tables.enrollment(key)
        if e is None or e.adapter_id is None or not self.owns(e.tenant_key, partition):
            return
        pool = self.tables.config.pool(e.pool_id)
        if pool is None or (pools is not None and pool.id not in pools):
            return
        outcome = decide_member_returned(
            self.tables.selection_state(pool.id, e.version_id),
            pool,
            self.tables.candidates(pool.id),
            now,
            pinned_adapter_id=e.adapter_id,
            policy=self.policy.health,
            horizon=self.policy.terminal_resting_horizon,
        )
        if outcome is None:
            return
        if isinstance(outcome.decision, Reassign) and outcome.decision.new_adapter_id:
            self.tables.save_selection(outcome.selection)
            e = move_pin(e, outcome.decision.new_adapter_id, now, out, reason="member_returned")
        elif not isinstance(outcome.decision, Pin):
            return
        self.resume(e, now, partition, out)


def move_pin(
    e: EnrollmentRuntime,
    new_adapter_id: str,
    now: datetime,
    out: Outputs,
    *,
    reason: str,
) -> EnrollmentRuntime:
    """Reassign or repin: new sender, broken thread, event and telemetry."""
    old = e.adapter_id
    e = e.model_copy(update={"adapter_id": new_adapter_id, "thread": break_thread(e.thread)})
    out.emit(
        "enrollment.sender_reassigned",
        e.tenant_key,
        now,
        enrollment_id=e.id,
        old_adapter_id=old,
        new_adapter_id=new_adapter_id,
        reason=reason,
    )
    out.sink.append(
        event_op(
            e,
            "sender_reassigned",
            now,
            key=f"{old}->{new_adapter_id}:{e.version}",
            adapter_id=new_adapter_id,
            data={
                "old_adapter_id": old,
                "new_adapter_id": new_adapter_id,
                "reason": reason,
            },
        )
    )
    return e
