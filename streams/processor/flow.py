"""The enrollment flow: pin, schedule, decide, hand send commands to the sink, advance.

One ``Processor`` serves one worker; every call handles one input event of one partition
and returns ``Outputs``. All decisions come from ``dripdrop_core``; this module only loads
state, calls the core, stores state and describes the side effects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

from dripdrop_core.circuit import Signal
from dripdrop_core.circuit import on_signal as on_circuit_signal
from dripdrop_core.correlation import index_key, normalize_message_id
from dripdrop_core.decisions import Defer, Hold, Pause, Pin, Reassign, Send, Skip
from dripdrop_core.dispatch import DueStep, decide_dispatch, terminal_reason
from dripdrop_core.enrollment import TERMINAL, Event
from dripdrop_core.enrollment import applies as enrollment_applies
from dripdrop_core.errors import DripDropError
from dripdrop_core.explain import explain
from dripdrop_core.health import (
    HealthOutcome,
    count_outcome,
    fire_health_timer,
    next_health_timer,
)
from dripdrop_core.mail_threads import (
    advance_thread,
    break_thread,
    new_message_id,
)
from dripdrop_core.models import Adapter, EnrollmentState, HealthState, Mode, Step
from dripdrop_core.outcomes import OutcomeRule, next_attempt, outcome_rule
from dripdrop_core.pacing import record_send, reserve_gap_slot
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.pools import decide_member_returned, decide_pin_unavailable
from dripdrop_core.ramp import effective_cap, local_day
from dripdrop_core.reasons import Reason
from dripdrop_core.scheduling import step_due_at
from dripdrop_core.state import AdapterState, roll_day
from dripdrop_core.unsubscribe import OneClickLinks
from streams.processor import pinning
from streams.processor.enrollment import complete, note, transition
from streams.processor.redrive import Redrive
from streams.processor.rows import error_code, event_row, execution_ref
from streams.processor.runtime import (
    EnrollmentRuntime,
    LastDecision,
    Outputs,
    PendingSend,
)
from streams.processor.schedule import DueIndex, adapter_item, enrollment_item
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
from streams.processor.store import Store
from streams.processor.suppression import is_suppressed, suppress

_TERMINAL_NAMES = frozenset(str(state) for state in TERMINAL)


class Processor:
    """Stateful logic of one worker, over tables reached through ``Store``."""

    def __init__(
        self,
        store: Store,
        policy: OutboundPolicy,
        *,
        bucket_seconds: int = 60,
        redrive_seconds: float | None = None,
        arrival_redrive_seconds: float | None = None,
        retry_seconds: float = 60.0,
        time_scale: float = 1.0,
        lookahead_seconds: float = 0.0,
        owns: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.policy = policy
        # owns(tenant_key, partition): the tenant's state lives on that partition. The sweep
        # iterates every local enrollment and must only touch its own partition's.
        self.owns = owns or (lambda _tenant, _partition: True)
        redrive = timedelta(seconds=redrive_seconds) if redrive_seconds else None
        arrival = timedelta(seconds=arrival_redrive_seconds) if arrival_redrive_seconds else redrive
        # First wait of a send the provider could not take (then doubling, retry_delay).
        self.retry_base = timedelta(seconds=retry_seconds)
        # Simulated seconds per real second: a provider's Retry-After is real time.
        self.time_scale = time_scale
        # How far ahead a gap slot is taken (the time to the next tick): the send is decided
        # now for that slot and the sender holds it until then (``Send.at``).
        self.lookahead = timedelta(seconds=lookahead_seconds)
        self.tables = Tables(store)
        self.store = store
        self.cache = self.tables.cache
        self.config = self.tables.config
        self.adapter_states = self.tables.adapter_states
        self.enrollments = self.tables.enrollments
        self.schedule = self.tables.schedule
        self.index = self.tables.index
        self.due = DueIndex(self.tables, bucket_seconds)
        self.adapter_state = self.tables.adapter_state
        self.save_adapter_state = self.tables.save_adapter_state
        self.enrollment = self.tables.enrollment
        self.save_enrollment = self.tables.save_enrollment
        self.candidates = self.tables.candidates
        self.selection_state = self.tables.selection_state
        self.save_selection = self.tables.save_selection
        self.composer = Composer(self.tables.config)
        self.redrive = Redrive(self.tables, self.composer, policy, redrive=redrive, arrival=arrival)

    @property
    def one_click(self) -> Callable[[], OneClickLinks | None]:
        """The one-click unsubscribe links of opted-in sends (SPEC §13); the composition
        root (streams/worker.py) sets a source that resolves the key. ``None``: no headers."""
        return self.composer.one_click

    @one_click.setter
    def one_click(self, source: Callable[[], OneClickLinks | None]) -> None:
        self.composer.one_click = source

    # ------------------------------------------------------------ events and caches

    @contextmanager
    def event(self, partition: int) -> Iterator[None]:
        """Process one input event of ``partition``: its table writes land together.

        Writes are held until the event ends and then written once per key (one changelog
        record each); an exception discards them, and the caches that may hold them.
        """
        self.cache.partition = partition
        for table in self.tables.buffered.values():
            table.holding = True
        try:
            yield
            with self.store.atomic():  # a write refused midway leaves none of the event's
                for table in self.tables.buffered.values():
                    table.flush()
        except BaseException:
            # Nothing held may leak into the next event (it would be written under that
            # event's partition); the caches go, so the next read sees what the tables hold.
            for table in self.tables.buffered.values():
                table.discard()
            self.forget_caches()
            raise
        finally:
            for table in self.tables.buffered.values():
                table.holding = False

    def forget_caches(self) -> None:
        """Drop the parsed values remembered between events."""
        self.tables.forget()
        self.due.forget()

    def on_rebalance(self) -> None:
        """Partitions moved: recovery rewrote tables, and ``sweep`` must run again."""
        self.forget_caches()
        self.redrive.clear()

    # ------------------------------------------------------------ scheduling

    def schedule_at(
        self, e: EnrollmentRuntime, due: datetime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Index the enrollment at ``due``; fire at once when it is already due."""
        e = e.model_copy(update={"status": "scheduled", "due_at": due, "pending": None})
        if due <= now:
            return self.fire(e, now, partition, out)
        self.due.add(enrollment_item(e.id, due), due, partition, now=now)
        return self.save_enrollment(e, out)

    def on_tick(self, partition: int, now: datetime) -> Outputs:
        """Fire every item due by ``now`` in this partition; idempotent by item token."""
        out = Outputs()
        self.due.fire_due(
            partition, now, lambda item: self._fire_item_safely(item, now, partition, out)
        )
        self.redrive.run_due(partition, now, out)
        pinning.drain(self, partition, now, out)
        return out

    def sweep(self, partition: int, now: datetime) -> Outputs:
        """Rebuild, from the enrollments' own records, what lives beside them.

        Runs when a partition arrives in this process (start, restart, rebalance), and
        rarely after as a backstop. An enrollment and its due-time index entry are two
        changelog records: a crash can keep one and lose the other, and the replayed input
        then finds nothing left to do. So: overdue work fires, a future due time without
        its index entry gets it back (a duplicate entry is harmless: firing checks the
        enrollment's own due time), and sends awaiting a result are armed for redrive.
        Resting adapters' timers (resting → probing) are checked the same way.
        """
        out = Outputs()
        future: dict[int, list[tuple[str, datetime]]] = {}
        paused: list[str] = []
        for key, raw in self.store.partition_items("enrollments", partition):
            if raw and raw.get("state") == "paused" and raw.get("reason") == "pin_unavailable":
                paused.append(key)  # a send of it may still be in flight: armed below too
            # A cheap look at the raw record first: most enrollments are finished.
            if (
                not raw
                or raw.get("status") not in ("scheduled", "dispatching")
                or raw.get("state") in _TERMINAL_NAMES
                or not self.owns(raw.get("tenant_key", ""), partition)
            ):
                continue
            try:
                e = self.enrollment(key)
            except Exception as exc:  # noqa: BLE001 - one unreadable record must not stop it
                out.reject("bug", f"sweep: enrollment {key}: {type(exc).__name__}: {exc}")
                continue
            if e is None:
                continue
            if e.status == "dispatching" and e.pending is not None:
                self.redrive.arm_arrival(e, now, partition)
            elif e.status == "scheduled" and e.due_at is not None:
                item = enrollment_item(e.id, e.due_at)
                if e.due_at <= now:
                    self._fire_item_safely(item, now, partition, out)
                else:
                    future.setdefault(self.due.bucket(e.due_at), []).append((item, e.due_at))
        for key in paused:
            # A reassign pool's member may have got room since (a new local day).
            self._member_returned(key, None, now, partition, out)
        for key, raw in self.store.partition_items("adapters", partition):
            # A resting adapter's timer entry is a record apart from its state, too.
            resting = raw and raw.get("health_state") == HealthState.RESTING
            adapter = self.config.adapter(key) if resting else None
            if adapter is None or not self.owns(adapter.tenant_key, partition):
                continue
            timer = next_health_timer(self.adapter_state(adapter))
            if timer is None:
                continue
            item = adapter_item(adapter.id, timer)
            if timer <= now:
                self._fire_item_safely(item, now, partition, out)
            else:
                future.setdefault(self.due.bucket(timer), []).append((item, timer))
        self.due.restore(partition, future, now=now)
        return out

    def _fire_item_safely(self, item: str, now: datetime, partition: int, out: Outputs) -> None:
        """One failing item (a bug) must not block every later item of the partition."""
        try:
            self._fire_item(item, now, partition, out)
        except Exception as exc:  # noqa: BLE001 - reported as a dead letter, then skipped
            out.reject("bug", f"schedule item {item}: {type(exc).__name__}: {exc}")

    def _fire_item(self, item: str, now: datetime, partition: int, out: Outputs) -> None:
        kind, ident, token = item.split(":", 2)
        if kind == "a":
            adapter = self.config.adapter(ident)
            if adapter is not None:
                state = self.adapter_state(adapter)
                self.apply_health(
                    adapter,
                    fire_health_timer(state, now, policy=self.policy.health),
                    now,
                    partition,
                    out,
                )
            return
        e = self.enrollment(ident)
        if e is None or e.status != "scheduled" or e.due_at is None:
            return
        if int(e.due_at.timestamp() * 1000) != int(token):
            return  # rescheduled since: a stale index entry
        self.fire(e, now, partition, out)

    # ------------------------------------------------------------ dispatch

    def fire(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Decide the due step of ``e`` and act on the decision."""
        if e.state in TERMINAL:
            return e
        steps = self.config.steps(e.version_id)
        if e.step_index >= len(steps):
            return complete(self.tables, e, now, out)
        step = steps[e.step_index]
        adapter = adapter_for(self.tables, e, step)
        state = self.adapter_state(adapter) if adapter is not None else None
        pool = self.config.pool(e.pool_id)
        due = DueStep(
            enrollment_id=e.id,
            step_execution_id=execution_id(e, step),
            tenant_key=e.tenant_key,
            step=step,
            mode=e.mode,
            enrollment_state=e.state,
            pin_policy=pool.on_pin_unavailable if pool is not None else None,
            recipient_timezone=e.recipient_timezone,
            suppressed=self.is_suppressed(e.tenant_key, e.recipient),
            throttles=throttles(self.tables, e, adapter),
        )
        decision = decide_dispatch(
            due, adapter, state, now, policy=self.policy, lookahead=self.lookahead
        )
        match decision:
            case Send():
                assert adapter is not None and state is not None
                at = decision.at or now  # a gap slot ahead of now: the hand-off time
                e = self._send(e, step, adapter, state, now, partition, out, at=at)
                if e.status == "dispatching":  # issued (not failed at rendering)
                    count_throttled(self.index, due.throttles, at)
                return e
            case Defer():
                wake = decision.until
                if decision.reason is Reason.GAP and adapter is not None and state is not None:
                    slot, queued = reserve_gap_slot(
                        adapter, state, decision.until, its_turn=is_gap_turn(e, now, self.lookahead)
                    )
                    self.save_adapter_state(queued)
                    decision = decision.model_copy(update={"until": slot})
                    # Woken one look-ahead early, the tick before the slot sends it for the
                    # slot itself (``Send.at``): a tick after it would hand it over late.
                    wake = slot - self.lookahead if slot - self.lookahead > now else slot
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
                out.sink.append(
                    {
                        "op": "event",
                        "row": event_row(
                            e,
                            "deferred",
                            now,
                            # One row per reason and day: the latest is what explain shows.
                            key=f"{due.step_execution_id}:{decision.reason}:{decision.until.date()}",
                            adapter_id=decision.facts.adapter_id,
                            step_id=step.id,
                            data={
                                "reason": str(decision.reason),
                                "until": decision.until.isoformat(),
                                "explain": explain(decision),
                            },
                        ),
                    }
                )
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
                return self.save_enrollment(e, out)
            case Pause() | Reassign():
                return self.pin_unavailable(e, now, partition, out, cause=str(decision.reason))
        raise AssertionError(f"unhandled decision {decision!r}")  # pragma: no cover

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
                {
                    "op": "event",
                    "row": event_row(
                        e,
                        "failed",
                        now,
                        key=exec_id,
                        adapter_id=adapter.id,
                        step_id=step.id,
                        data={"reason": exc.code, "detail": str(exc)},
                    ),
                }
            )
            # A step that cannot render fails its enrollment: a later step would reply to
            # mail that was never sent (SPEC §7).
            return self.transition(e, Event.FAIL, now, out, reason=exc.code, urgent=True)
        state = admitted(adapter, state, now, out, policy=self.policy.circuit)
        outcome = record_send(
            adapter, state, at, policy=self.policy.health, first_send_of_pin=first_of_pin
        )
        self.apply_health(adapter, outcome, now, partition, out)
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
        # A reply can come back before this send's result is processed (an auto-reply while
        # the result waits behind a backlog): its Message-ID is indexed now, not on the result.
        index_message_id(
            self.index, e, pending.message_id, participants=self.policy.correlate_participants
        )
        # The enrollment row first: the claim's execution row references it.
        e = self.save_enrollment(e, out)
        out.sink.append(claim)
        self.redrive.arm(e, now, partition)
        return e

    def advance(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Move to the next step (scheduled from the last send) or complete."""
        e = e.model_copy(update={"step_index": e.step_index + 1, "pending": None, "attempt": 0})
        steps = self.config.steps(e.version_id)
        if e.step_index >= len(steps):
            return complete(self.tables, e, now, out)
        due = step_due_at(
            steps[e.step_index], enrolled_at=e.enrolled_at, previous_sent_at=e.last_sent_at
        )
        return self.schedule_at(e, due, now, partition, out)

    def transition(
        self,
        e: EnrollmentRuntime,
        event: Event,
        now: datetime,
        out: Outputs,
        *,
        reason: str | None = None,
        urgent: bool = False,
        announce: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> EnrollmentRuntime:
        """``enrollment.transition`` over this processor's tables."""
        return transition(
            self.tables,
            e,
            event,
            now,
            out,
            reason=reason,
            urgent=urgent,
            announce=announce,
            attrs=attrs,
        )

    def is_suppressed(self, tenant_key: str, recipient: str) -> bool:
        """The recipient's address or its whole domain is on the tenant's suppression list."""
        return is_suppressed(self.index, tenant_key, recipient)

    # ------------------------------------------------------------ results and feedback

    def on_result(self, result: dict[str, Any], now: datetime, partition: int) -> Outputs:
        """A delivery outcome, interpreted through ``dripdrop_core.outcomes.OUTCOMES``: thread
        the send and schedule the next step, or stop, or send the same again later."""
        out = Outputs()
        e = self.enrollment(result.get("enrollment_id") or "")
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
        adapter = self.config.adapter(pending.adapter_id)
        if rule.circuit is not None and adapter is not None:
            self._circuit_signal(adapter, rule.circuit, now, out)
        if rule.again is not None:
            return self._send_again(e, rule, result, now, partition, attrs, out)
        if rule.threads:
            # Indexed when decided; a send decided by an earlier version is indexed here.
            index_message_id(
                self.index,
                e,
                pending.message_id,
                participants=self.policy.correlate_participants,
                only_if_missing=True,
            )
            if result.get("provider_message_id"):
                pid = normalize_message_id(result["provider_message_id"]) or ""
                self.index[index_key(e.tenant_key, pid, "provider")] = execution_ref(e)
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
        else:
            out.emit(f"dispatch.{status}", e.tenant_key, now, error=result.get("error"), **attrs)
        if rule.counts_bounce and adapter is not None:
            outcome = count_outcome(
                adapter,
                self.adapter_state(adapter),
                "bounce",
                at=now,
                now=now,
                policy=self.policy.health,
            )
            self.apply_health(adapter, outcome, now, partition, out)
        if rule.suppress:
            self.suppress(e.tenant_key, e.recipient, "bounce", now, out)
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
                self.save_enrollment(e.model_copy(update={"pending": held}), out)
                return out
        if rule.event is not None:
            from_error = error_code(result.get("error")) if rule.reason_from_error else None
            reason = from_error or rule.reason
            e = e.model_copy(update={"pending": None})
            if e.state in TERMINAL:
                return self._stored(e, out)
            self.transition(e, rule.event, now, out, reason=reason, urgent=True)
            return out
        if e.state in TERMINAL:
            return self._stored(e, out)
        return self._finish_step(e, now, partition, out)

    def suppress(
        self, tenant_key: str, recipient: str, reason: str, now: datetime, out: Outputs
    ) -> None:
        """Suppress ``recipient`` in the tenant."""
        suppress(self.index, tenant_key, recipient, reason, now, out)

    def _circuit_signal(
        self, adapter: Adapter, signal: Signal, now: datetime, out: Outputs
    ) -> None:
        """Feed one send outcome to the adapter's breaker; announce it opening or closing."""
        state = self.adapter_state(adapter)
        change = on_circuit_signal(state.circuit, signal, now, policy=self.policy.circuit)
        if change.circuit != state.circuit:
            self.save_adapter_state(state.model_copy(update={"circuit": change.circuit}))
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
            timedelta(milliseconds=retry_after_ms * self.time_scale)
            if retry_after_ms is not None
            else None
        )
        attempt = next_attempt(
            rule,
            decided_at=pending.decided_at,
            retries=pending.retries,
            now=now,
            base=self.retry_base,
            retry_after=retry_after,
            limit=self.policy.recipient_retry_limit,
        )
        if attempt.at is None:
            out.emit("dispatch.failed", e.tenant_key, now, error=result.get("error"), **attrs)
            e = e.model_copy(update={"pending": None})
            self.transition(e, Event.FAIL, now, out, reason=attempt.reason, urgent=True)
            return out
        again = pending.model_copy(update={"retries": pending.retries + 1})
        self.save_enrollment(e.model_copy(update={"pending": again}), out)
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
        self.save_enrollment(e.model_copy(update={"pending": None}), out)
        return out

    def _finish_step(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> Outputs:
        if e.state is EnrollmentState.PAUSED:
            e = e.model_copy(
                update={"step_index": e.step_index + 1, "pending": None, "status": "held"}
            )
            self.save_enrollment(e, out)
        else:
            self.advance(e, now, partition, out)
        return out

    def on_feedback(self, feedback: dict[str, Any], now: datetime, partition: int) -> Outputs:
        """PostgreSQL refused a claim (cap or gap, e.g. two owners in a rebalance)."""
        out = Outputs()
        e = self.enrollment(feedback["enrollment_id"])
        if feedback["reason"] == "duplicate" or e is None or e.pending is None:
            return out
        if e.pending.step_execution_id != feedback["step_execution_id"]:
            return out
        if feedback["reason"] == "replayed":
            # The execution existed already (a replay after a crash): its stored command is
            # what goes out, so thread with the stored Message-ID, not a re-decided one; and
            # the replay counted that send again in the table: take PostgreSQL's count.
            self._resync_sent(feedback, exact=True)
            stored = feedback.get("message_id") or e.pending.message_id
            if stored != e.pending.message_id:
                pending = e.pending.model_copy(update={"message_id": stored})
                e = self.save_enrollment(e.model_copy(update={"pending": pending}), out)
                index_message_id(
                    self.index, e, stored, participants=self.policy.correlate_participants
                )
            return out
        self._resync_sent(feedback, exact=False)
        out.emit(
            "dispatch.claim_refused",
            e.tenant_key,
            now,
            enrollment_id=e.id,
            reason=feedback["reason"],
            adapter_id=feedback["adapter_id"],
        )
        self.schedule_at(e, now, now, partition, out)
        return out

    def resync_adapters(
        self,
        partition: int,
        counters: dict[tuple[str, date], tuple[int, datetime | None]],
        now: datetime,
    ) -> None:
        """Set the partition's adapters' counters for today from PostgreSQL's ledger.

        ``counters`` maps (adapter id, local day) to (sends granted, last send). Called when
        a worker starts processing a partition (see ``Pipeline.resync_counters``).
        """
        self.cache.partition = partition  # called outside ``event``: reads are this partition's
        for adapter_id in list(self.adapter_states.keys()):
            adapter = self.config.adapter(adapter_id)
            if adapter is None or not self.owns(adapter.tenant_key, partition):
                continue
            state = roll_day(self.adapter_state(adapter), adapter, now)
            today = local_day(adapter.timezone, now)
            sent, last = counters.get((adapter_id, today), (0, None))
            update: dict[str, Any] = {"day": today, "sent_today": sent, "pinned_waiting_today": 0}
            if last is not None and (state.last_sent_at is None or last > state.last_sent_at):
                update["last_sent_at"] = last
            if any(getattr(state, k) != v for k, v in update.items()):
                self.save_adapter_state(state.model_copy(update=update))

    def _resync_sent(self, feedback: dict[str, Any], *, exact: bool) -> None:
        """Align the adapter's counters with PostgreSQL's for the claim's day.

        A refused claim means the table counted too few (``max``); a replayed one means it
        counted a send twice (``exact``: PostgreSQL's count of granted claims is the truth).
        """
        adapter = self.config.adapter(feedback["adapter_id"])
        if adapter is None:
            return
        state = self.adapter_state(adapter)
        last = (
            datetime.fromisoformat(feedback["last_sent_at"])
            if feedback.get("last_sent_at")
            else None
        )
        update: dict[str, Any] = {}
        if state.day is not None and state.day.isoformat() == feedback["day"]:
            pg_sent = int(feedback["sent"])
            update["sent_today"] = pg_sent if exact else max(state.sent_today, pg_sent)
        if last is not None and (state.last_sent_at is None or last > state.last_sent_at):
            update["last_sent_at"] = last
        if update:
            self.save_adapter_state(state.model_copy(update=update))

    # ------------------------------------------------------------ pins and health

    def pin_unavailable(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs, *, cause: str
    ) -> EnrollmentRuntime:
        """The pinned sender is terminally unavailable: pause or reassign (SPEC §5.3)."""
        pool = self.config.pool(e.pool_id)
        if pool is None or e.adapter_id is None:
            return self._pause_unavailable(e, now, out, cause=cause)
        selection = self.selection_state(pool.id, e.version_id)
        outcome = decide_pin_unavailable(
            selection,
            pool,
            self.candidates(pool.id),
            now,
            pinned_adapter_id=e.adapter_id,
            policy=self.policy.health,
        )
        decision = outcome.decision
        if isinstance(decision, Reassign) and decision.new_adapter_id is not None:
            self.save_selection(outcome.selection)
            e = self.move_pin(e, decision.new_adapter_id, now, out, reason=cause)
            if e.status == "scheduled" and e.due_at is not None:
                return self.schedule_at(e, max(e.due_at, now), now, partition, out)
            return self.save_enrollment(e, out)
        return self._pause_unavailable(e, now, out, cause=cause)

    def _pause_unavailable(
        self, e: EnrollmentRuntime, now: datetime, out: Outputs, *, cause: str
    ) -> EnrollmentRuntime:
        if not enrollment_applies(e.state, Event.PAUSE):
            return e  # paused already (by an operator: resuming meets the same check again)
        note = LastDecision(kind="pause", reason="pin_unavailable", text=f"paused: {cause}", at=now)
        return self.transition(
            e.model_copy(update={"last_decision": note}),
            Event.PAUSE,
            now,
            out,
            reason="pin_unavailable",
            urgent=True,
            announce="enrollment.paused_pin_unavailable",
            attrs={"adapter_id": e.adapter_id, "reason": cause},
        )

    def move_pin(
        self,
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
            {
                "op": "event",
                "row": event_row(
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
                ),
            }
        )
        return e

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
            terminal_reason(adapter, self.adapter_state(adapter), now, policy=self.policy)
            is not None
        )
        self.save_adapter_state(outcome.state)
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
                {
                    "op": "health",
                    "adapter_id": adapter.id,
                    "tenant_key": adapter.tenant_key,
                    "state": outcome.state.model_dump(mode="json"),
                    "transition": t.model_dump(mode="json"),
                }
            )
        if outcome.transitions:
            timer = next_health_timer(outcome.state)
            if timer is not None:
                self.due.add(adapter_item(adapter.id, timer), timer, partition, now=now)
            if terminal_reason(adapter, outcome.state, now, policy=self.policy) is not None:
                self.pinned_sender_unavailable(adapter.id, now, partition, out)
            elif was_terminal:
                self.sender_returned(adapter.id, now, partition, out)

    def resume(
        self, e: EnrollmentRuntime, now: datetime, partition: int, out: Outputs
    ) -> EnrollmentRuntime:
        """Resume a paused enrollment; its held step is scheduled again (same execution)."""
        e = self.transition(e, Event.RESUME, now, out, urgent=True)
        if e.status != "dispatching":
            return self.schedule_at(e, max(e.due_at or now, now), now, partition, out)
        return e

    def sender_returned(self, adapter_id: str, now: datetime, partition: int, out: Outputs) -> None:
        """``adapter_id`` may send again (activated, added to a pool, back from a long
        rest): enrollments its ``reassign`` pools paused for want of any eligible member
        continue (SPEC §5.3). Paused ones of ``pause`` pools wait for an operator."""
        pools = set(self.config.pools_of_adapter(adapter_id))
        if not pools:
            return
        for key, raw in self.store.partition_items("enrollments", partition):
            if (
                raw
                and raw.get("state") == "paused"
                and raw.get("reason") == "pin_unavailable"
                and raw.get("pool_id") in pools
            ):
                self._member_returned(key, pools, now, partition, out)

    def _member_returned(
        self, key: str, pools: set[str] | None, now: datetime, partition: int, out: Outputs
    ) -> None:
        e = self.enrollment(key)
        if e is None or e.adapter_id is None or not self.owns(e.tenant_key, partition):
            return
        pool = self.config.pool(e.pool_id)
        if pool is None or (pools is not None and pool.id not in pools):
            return
        outcome = decide_member_returned(
            self.selection_state(pool.id, e.version_id),
            pool,
            self.candidates(pool.id),
            now,
            pinned_adapter_id=e.adapter_id,
            policy=self.policy.health,
            horizon=self.policy.terminal_resting_horizon,
        )
        if outcome is None:
            return
        if isinstance(outcome.decision, Reassign) and outcome.decision.new_adapter_id:
            self.save_selection(outcome.selection)
            e = self.move_pin(
                e, outcome.decision.new_adapter_id, now, out, reason="member_returned"
            )
        elif not isinstance(outcome.decision, Pin):
            return
        self.resume(e, now, partition, out)

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
        for key in list(self.enrollments.keys()):
            e = self.enrollment(key)
            if e is None or e.adapter_id != adapter_id or e.state in TERMINAL:
                continue
            if pool_id is not None and e.pool_id != pool_id:
                continue
            if e.state is EnrollmentState.PAUSED:
                continue
            self.pin_unavailable(e, now, partition, out, cause="sender_unavailable")
