"""The adapters' counters kept in step with PostgreSQL's ledger of granted claims.

A claim PostgreSQL refused or found replayed (``sink-feedback``) corrects the counters and
the enrollment; a partition arriving in this process takes the ledger's counts for today.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.ramp import local_day
from dripdrop_core.state import roll_day
from streams.processor.availability import ScheduleAt
from streams.processor.runtime import Outputs
from streams.processor.sending import index_message_id
from streams.processor.state import Tables


class Ledger:
    """Applies claim feedback and counter resyncs to the adapters' table state."""

    def __init__(
        self,
        tables: Tables,
        policy: OutboundPolicy,
        *,
        owns: Callable[[str, int], bool],
        schedule_at: ScheduleAt,
    ) -> None:
        self.tables = tables
        self.policy = policy
        self.owns = owns
        self.schedule_at = schedule_at

    def on_feedback(self, feedback: dict[str, Any], now: datetime, partition: int) -> Outputs:
        """PostgreSQL refused a claim (cap or gap, e.g. two owners in a rebalance)."""
        out = Outputs()
        e = self.tables.enrollment(feedback["enrollment_id"])
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
                e = self.tables.save_enrollment(e.model_copy(update={"pending": pending}), out)
                index_message_id(
                    self.tables.index,
                    e,
                    stored,
                    participants=self.policy.correlate_participants,
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
        self.tables.cache.partition = partition  # outside ``event``: reads are this partition's
        for adapter_id in list(self.tables.adapter_states.keys()):
            adapter = self.tables.config.adapter(adapter_id)
            if adapter is None or not self.owns(adapter.tenant_key, partition):
                continue
            state = roll_day(self.tables.adapter_state(adapter), adapter, now)
            today = local_day(adapter.timezone, now)
            sent, last = counters.get((adapter_id, today), (0, None))
            update: dict[str, Any] = {"day": today, "sent_today": sent, "pinned_waiting_today": 0}
            if last is not None and (state.last_sent_at is None or last > state.last_sent_at):
                update["last_sent_at"] = last
            if any(getattr(state, k) != v for k, v in update.items()):
                self.tables.save_adapter_state(state.model_copy(update=update))

    def _resync_sent(self, feedback: dict[str, Any], *, exact: bool) -> None:
        """Align the adapter's counters with PostgreSQL's for the claim's day.

        A refused claim means the table counted too few (``max``); a replayed one means it
        counted a send twice (``exact``: PostgreSQL's count of granted claims is the truth).
        """
        adapter = self.tables.config.adapter(feedback["adapter_id"])
        if adapter is None:
            return
        state = self.tables.adapter_state(adapter)
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
            self.tables.save_adapter_state(state.model_copy(update=update))
