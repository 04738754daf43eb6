"""The sweep: what lives beside the enrollments' own records, rebuilt from them.

Runs when a partition arrives in this process (start, restart, rebalance) and rarely after
as a backstop: overdue work fires, lost index entries come back, sends in flight are armed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dripdrop_core.enrollment import TERMINAL
from dripdrop_core.health import next_health_timer
from dripdrop_core.models import HealthState
from streams.processor.availability import Availability
from streams.processor.dispatching import Dispatcher
from streams.processor.redrive import Redrive
from streams.processor.runtime import Outputs
from streams.processor.schedule import DueIndex, adapter_item, enrollment_item
from streams.processor.state import Tables

_TERMINAL_NAMES = frozenset(str(state) for state in TERMINAL)

Future = dict[int, list[tuple[str, datetime]]]
"""Items due later, by tick bucket: each is indexed again unless its bucket has it."""


class Sweep:
    """Rebuilds a partition's due index, redrive arming and paused pins from its records."""

    def __init__(
        self,
        tables: Tables,
        due: DueIndex,
        *,
        dispatcher: Dispatcher,
        availability: Availability,
        redrive: Redrive,
        owns: Callable[[str, int], bool],
    ) -> None:
        self.tables = tables
        self.due = due
        self.dispatcher = dispatcher
        self.availability = availability
        self.redrive = redrive
        # owns(tenant_key, partition): the tenant's state lives on that partition. The sweep
        # iterates every local enrollment and must only touch its own partition's.
        self.owns = owns

    def sweep(self, partition: int, now: datetime) -> Outputs:
        """Rebuild, from the enrollments' own records, what lives beside them.

        An enrollment and its due-time index entry are two changelog records: a crash can
        keep one and lose the other, and the replayed input then finds nothing left to do.
        So: overdue work fires, a future due time without its index entry gets it back (a
        duplicate entry is harmless: firing checks the enrollment's own due time), and sends
        awaiting a result are armed for redrive. Resting adapters' timers (resting →
        probing) are checked the same way.
        """
        out = Outputs()
        future: Future = {}
        paused = self._enrollments(partition, now, future, out)
        for key in paused:
            # A reassign pool's member may have got room since (a new local day).
            self.availability.member_returned(key, None, now, partition, out)
        self._resting_adapters(partition, now, future, out)
        self.due.restore(partition, future, now=now)
        return out

    def _enrollments(
        self, partition: int, now: datetime, future: Future, out: Outputs
    ) -> list[str]:
        """Fire overdue steps, collect future ones, arm sends in flight; the keys of
        enrollments paused for want of a sender."""
        paused: list[str] = []
        for key, raw in self.tables.store.partition_items("enrollments", partition):
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
                e = self.tables.enrollment(key)
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
                    self.dispatcher.fire_item_safely(item, now, partition, out)
                else:
                    future.setdefault(self.due.bucket(e.due_at), []).append((item, e.due_at))
        return paused

    def _resting_adapters(
        self, partition: int, now: datetime, future: Future, out: Outputs
    ) -> None:
        """A resting adapter's timer entry is a record apart from its state, too."""
        for key, raw in self.tables.store.partition_items("adapters", partition):
            resting = raw and raw.get("health_state") == HealthState.RESTING
            adapter = self.tables.config.adapter(key) if resting else None
            if adapter is None or not self.owns(adapter.tenant_key, partition):
                continue
            timer = next_health_timer(self.tables.adapter_state(adapter))
            if timer is None:
                continue
            item = adapter_item(adapter.id, timer)
            if timer <= now:
                self.dispatcher.fire_item_safely(item, now, partition, out)
            else:
                future.setdefault(self.due.bucket(timer), []).append((item, timer))
