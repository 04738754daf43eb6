from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dripdrop_core.decisions import (
    Decision,
    Defer,
    Eviction,
    Facts,
    Hold,
    Pause,
    Pin,
    Reassign,
    Reject,
    Send,
    Skip,
)
from dripdrop_core.explain import explain
from dripdrop_core.reasons import Reason

UNTIL = datetime(2026, 11, 28, 23, tzinfo=UTC)
LAST = datetime(2026, 11, 28, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("decision", "text"),
    [
        (
            Defer(
                until=UNTIL,
                reason=Reason.CAP,
                facts=Facts(cap=8, sent_today=8, timezone="Europe/Berlin"),
            ),
            "deferred until 2026-11-29T00:00:00+01:00: daily cap 8 reached (8 sent today)",
        ),
        (
            Defer(
                until=UNTIL, reason=Reason.GAP, facts=Facts(min_gap_seconds=90, last_sent_at=LAST)
            ),
            "deferred until 2026-11-28T23:00:00+00:00: "
            "minimum gap 90s since last send at 2026-11-28T10:00:00+00:00",
        ),
        (
            Defer(
                until=UNTIL,
                reason=Reason.RESTING,
                facts=Facts(adapter_id="a1", resting_until=UNTIL),
            ),
            "deferred until 2026-11-28T23:00:00+00:00: "
            "adapter a1 resting until 2026-11-28T23:00:00+00:00",
        ),
        (
            Defer(until=UNTIL, reason=Reason.OUTSIDE_SENDING_WINDOW, facts=Facts(timezone="UTC")),
            "deferred until 2026-11-28T23:00:00+00:00: outside the step's sending window in UTC",
        ),
        (Send(adapter_id="a1"), "sending now through a1"),
        (Skip(reason=Reason.SUPPRESSED), "skipped: suppressed"),
        (Hold(reason=Reason.PAUSED), "held: paused"),
        (
            Pause(
                reason=Reason.POOL_EXHAUSTED,
                evicted=(Eviction(adapter_id="a2", reason=Reason.RESTING),),
            ),
            "enrollment paused: pool exhausted (evicted: a2=resting)",
        ),
        (
            Reassign(reason=Reason.ADAPTER_INACTIVE, old_adapter_id="a1"),
            "sender a1 replaced by a member chosen by WDRR: adapter_inactive",
        ),
        (Pin(adapter_id="a1"), "pinned to a1"),
        (
            Reject(reason=Reason.POOL_EXHAUSTED, pool_id="p1"),
            "enrollment rejected: pool_exhausted in pool p1",
        ),
    ],
)
def test_explain_each_decision_one_line(decision: Decision, text: str) -> None:
    assert explain(decision) == text
    assert "\n" not in explain(decision)


def test_explain_missing_facts_uses_placeholder() -> None:
    assert explain(Defer(until=UNTIL, reason=Reason.GAP)).endswith("since last send at ?")
    assert explain(Defer(until=UNTIL, reason=Reason.RESTING)).endswith("resting until ?")
