"""Sends awaiting their result, and the re-issue of those still unanswered (the redrive).

A crash or a stop can lose the claim, the command or the result in flight; every step of
the path is idempotent (claim_send, the ledger, on_result), so the same claim goes again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dripdrop_core.circuit import Admission, admit
from dripdrop_core.models import Adapter, Step
from dripdrop_core.pacing import reserve_handoff
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.ramp import effective_cap
from dripdrop_core.reasons import Reason
from streams.processor.rows import enrollment_op
from streams.processor.runtime import EnrollmentRuntime, LastDecision, Outputs
from streams.processor.sending import Composer, admitted, claim_op
from streams.processor.state import Tables


class Redrive:
    """Per partition, the sends whose result is awaited and when each is re-issued."""

    def __init__(
        self,
        tables: Tables,
        composer: Composer,
        policy: OutboundPolicy,
        *,
        redrive: timedelta | None,
        arrival: timedelta | None,
    ) -> None:
        self.tables = tables
        self.composer = composer
        self.policy = policy
        # A send command still unanswered after this long (simulated seconds) is re-issued.
        self.redrive = redrive
        # Sends found in flight when a partition arrives (after a crash or a stop elsewhere)
        # are re-issued after this shorter delay: that is when claims, commands and results
        # are lost.
        self.arrival = arrival
        # Sends whose result is awaited, per partition: enrollment id → (step execution,
        # when to re-issue). Memory only: ``sweep`` rebuilds it from the enrollments when
        # a partition arrives (a restart, a rebalance), which is the only time it is lost.
        self._in_flight: dict[int, dict[str, tuple[str, datetime]]] = {}

    def clear(self) -> None:
        self._in_flight.clear()

    def arm(self, e: EnrollmentRuntime, now: datetime, partition: int) -> None:
        """Re-issue ``e``'s pending send one redrive after ``now`` unless answered."""
        if self.redrive is not None and e.pending is not None:
            exec_id = e.pending.step_execution_id
            self._in_flight.setdefault(partition, {})[e.id] = (exec_id, now + self.redrive)

    def arm_arrival(self, e: EnrollmentRuntime, now: datetime, partition: int) -> None:
        """A send found in flight as its partition arrives: re-issued one arrival redrive
        after ``now`` (an ambiguous one waits for its resolution instead)."""
        if self.arrival is None or e.pending is None:
            return
        in_flight = self._in_flight.setdefault(partition, {})
        if e.id not in in_flight and not e.pending.ambiguous:
            in_flight[e.id] = (e.pending.step_execution_id, now + self.arrival)

    def hold(self, partition: int, enrollment_id: str, exec_id: str, at: datetime) -> None:
        """Re-issue the send ``exec_id`` at ``at`` (a back-off, an open circuit's probe)."""
        self._in_flight.setdefault(partition, {})[enrollment_id] = (exec_id, at)

    def drop(self, partition: int, enrollment_id: str) -> None:
        self._in_flight.get(partition, {}).pop(enrollment_id, None)

    def run_due(self, partition: int, now: datetime, out: Outputs) -> None:
        """Re-issue every send of ``partition`` whose time has come."""
        in_flight = self._in_flight.get(partition, {})
        for enrollment_id, (exec_id, at) in list(in_flight.items()):
            if at <= now:
                try:
                    self._reissue(enrollment_id, exec_id, now, partition, out)
                except Exception as exc:  # noqa: BLE001 - reported, then left for the sweep
                    in_flight.pop(enrollment_id, None)
                    out.reject("bug", f"redrive {enrollment_id}: {type(exc).__name__}: {exc}")

    def _reissue(
        self, enrollment_id: str, exec_id: str, now: datetime, partition: int, out: Outputs
    ) -> None:
        """Re-issue the claim of a send still unanswered (same id, Message-ID and day)."""
        e = self.tables.enrollment(enrollment_id)
        pending = e.pending if e is not None else None
        if e is None or e.status != "dispatching" or pending is None or pending.ambiguous:
            self.drop(partition, enrollment_id)
            return
        if pending.step_execution_id != exec_id:
            # Answered since, and a later send is out: watch that one instead.
            self.arm(e, pending.decided_at, partition)
            return
        step = self.tables.config.entity("step", pending.step_id)
        adapter = self.tables.config.adapter(pending.adapter_id)
        if not isinstance(step, Step) or adapter is None:
            self.drop(partition, enrollment_id)
            return
        state = self.tables.adapter_state(adapter)
        admission = admit(state.circuit, now, policy=self.policy.circuit)
        if not admission.allowed:
            self._wait_for_probe(e, adapter, admission, now, partition, out)
            return
        ready = admitted(adapter, state, now, out, policy=self.policy.circuit)
        # A fresh hand-off time one gap after the adapter's last: re-issued sends (after an
        # outage, a lost result) go out spaced, never as a burst.
        handoff, ready = reserve_handoff(adapter, ready, now)
        self.tables.save_adapter_state(ready)
        at = pending.decided_at
        headers, content = self.composer.compose(
            e,
            step,
            is_override=pending.is_override,
            message_id=pending.message_id,
            now=now,
            out=out,
        )
        cap = effective_cap(adapter, state, at, policy=self.policy.health)
        out.emit("dispatch.redriven", e.tenant_key, now, enrollment_id=e.id, step_id=step.id)
        # The row may have been lost with the claim: the execution row references it.
        out.sink.append(enrollment_op(e))
        claim = claim_op(e, step, adapter, exec_id, headers, content, cap, at, not_before=handoff)
        out.sink.append(claim)
        self.arm(e, now, partition)

    def _wait_for_probe(
        self,
        e: EnrollmentRuntime,
        adapter: Adapter,
        admission: Admission,
        now: datetime,
        partition: int,
        out: Outputs,
    ) -> None:
        """The adapter's circuit is open: the send waits for the breaker's probe."""
        assert admission.until is not None and e.pending is not None
        self.hold(partition, e.id, e.pending.step_execution_id, admission.until)
        if e.last_decision is None or e.last_decision.until != admission.until:
            note = LastDecision(
                kind="defer",
                reason=str(Reason.CIRCUIT_OPEN),
                until=admission.until,
                text=f"held: the circuit of adapter {adapter.id} is open",
                at=now,
            )
            self.tables.save_enrollment(e.model_copy(update={"last_decision": note}), out)
