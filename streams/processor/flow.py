"""The processor's composition point: one ``Processor`` per worker, built from its parts.

Every call handles one input event of one partition and returns ``Outputs``. The parts
(``state``, ``schedule``, ``dispatching``, ``availability``, ``results``, ``ledger``,
``redrive``, ``recovery``) load state, call ``dripdrop_core`` and describe the side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from dripdrop_core.enrollment import Event
from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.unsubscribe import OneClickLinks
from streams.processor import pinning
from streams.processor.availability import Availability
from streams.processor.dispatching import Dispatcher
from streams.processor.enrollment import transition
from streams.processor.ledger import Ledger
from streams.processor.recovery import Sweep
from streams.processor.redrive import Redrive
from streams.processor.results import Backoff, Results
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.schedule import DueIndex
from streams.processor.sending import Composer
from streams.processor.state import Tables
from streams.processor.store import Store


class Processor:
    """Stateful logic of one worker, over tables reached through ``Store``.

    Args:
        store: the tables (Faust's in a worker, dicts in tests).
        policy: the rules of pinning, dispatch, health and the circuit breaker.
        bucket_seconds: the due index's bucket width.
        redrive_seconds: a send still unanswered after this long (simulated seconds) is
            re-issued; ``None``: never.
        arrival_redrive_seconds: the same for sends found in flight when a partition
            arrives (default ``redrive_seconds``).
        retry_seconds: first wait of a send the provider could not take.
        time_scale: simulated seconds per real second.
        lookahead_seconds: how far ahead a gap slot is taken (the time to the next tick).
        owns: ``owns(tenant_key, partition)``: the tenant's state lives on that partition.
    """

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
        owns = owns or (lambda _tenant, _partition: True)
        redrive = timedelta(seconds=redrive_seconds) if redrive_seconds else None
        arrival = timedelta(seconds=arrival_redrive_seconds) if arrival_redrive_seconds else redrive
        self.tables = Tables(store)
        self.due = DueIndex(self.tables, bucket_seconds)
        self.composer = Composer(self.tables.config)
        self.redrive = Redrive(self.tables, self.composer, policy, redrive=redrive, arrival=arrival)
        self.dispatcher = Dispatcher(
            self.tables,
            self.due,
            composer=self.composer,
            redrive=self.redrive,
            policy=policy,
            lookahead=timedelta(seconds=lookahead_seconds),
        )
        schedule_at = self.dispatcher.schedule_at
        self.availability = Availability(
            self.tables, self.due, policy, owns=owns, schedule_at=schedule_at
        )
        # Closes the call loop of issue 15 (fire → _send → apply_health →
        # pinned_sender_unavailable → pin_unavailable → schedule_at → fire).
        self.dispatcher.availability = self.availability
        self.results = Results(
            self.tables,
            self.dispatcher,
            availability=self.availability,
            redrive=self.redrive,
            policy=policy,
            backoff=Backoff(base=timedelta(seconds=retry_seconds), time_scale=time_scale),
        )
        self.ledger = Ledger(self.tables, policy, owns=owns, schedule_at=schedule_at)
        self.recovery = Sweep(
            self.tables,
            self.due,
            dispatcher=self.dispatcher,
            availability=self.availability,
            redrive=self.redrive,
            owns=owns,
        )
        self._expose()

    def _expose(self) -> None:
        """The tables and operations that the input handlers (commands.py, inbound.py,
        health_signals.py, config_changes.py, pinning.py, company.py), the pipeline and the
        tests reach through the processor."""
        self.cache = self.tables.cache
        self.config = self.tables.config
        self.adapter_states = self.tables.adapter_states
        self.enrollments = self.tables.enrollments
        self.schedule = self.tables.schedule
        self.index = self.tables.index
        self.adapter_state = self.tables.adapter_state
        self.save_adapter_state = self.tables.save_adapter_state
        self.enrollment = self.tables.enrollment
        self.save_enrollment = self.tables.save_enrollment
        self.candidates = self.tables.candidates
        self.selection_state = self.tables.selection_state
        self.save_selection = self.tables.save_selection
        self.schedule_at = self.dispatcher.schedule_at
        self.apply_health = self.availability.apply_health
        self.resume = self.availability.resume
        self.sender_returned = self.availability.sender_returned
        self.pinned_sender_unavailable = self.availability.pinned_sender_unavailable
        self.sweep = self.recovery.sweep
        self.on_result = self.results.on_result
        self.on_feedback = self.ledger.on_feedback
        self.resync_adapters = self.ledger.resync_adapters

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
            with self.tables.store.atomic():  # a write refused midway leaves none of the event's
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

    # ------------------------------------------------------------ ticks

    def on_tick(self, partition: int, now: datetime) -> Outputs:
        """Fire every item due by ``now`` in this partition; idempotent by item token."""
        out = Outputs()
        self.due.fire_due(
            partition, now, lambda item: self.dispatcher.fire_item_safely(item, now, partition, out)
        )
        self.redrive.run_due(partition, now, out)
        pinning.drain(self, partition, now, out)
        return out

    # ------------------------------------------------------------ state changes

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
