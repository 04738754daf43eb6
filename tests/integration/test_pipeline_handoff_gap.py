"""The minimum gap holds at the hand-off (SPEC §5.5, issue 12), through a real worker.

One mailbox with ``min_gap_seconds`` = 60 and demand waiting (every prospect's first step
is due at once, the cap far away), on a clock where a simulated minute lasts 1.5 s real:

* **Spacing**: consecutive hand-offs of the mailbox are at least the gap apart, and on
  average within 5 % of it: slots between two ticks are taken ahead (``Send.at``, the
  command's ``not_before``) and held by the sender, not lost to a late tick. The audit's
  ``--gap-on handoff`` replay agrees (no ``min_gap`` violation).
* **Outage**: the SMTP server goes down while 20 sends are queued and comes back; every
  one goes out exactly once (one Message-ID each), none fails, and the sends held up by the
  outage go out one gap apart, not as a burst.

How a hand-off is measured. SPEC §5.5 measures the gap "where the receiving provider sees
them". The ledger cannot say that: ``step_executions.sent_at`` is the ``finished_at`` of the
provider call (its end, after the server's reply), not when the hand-off started. So the
test times the hand-off at the server itself: the moment the SMTP server has a message
(its ``DATA`` hook is entered: the whole message arrived), on the wall clock. A hand-off
starts at or after its ``not_before`` and the message arrives after it starts, so this is
what the provider sees. The wall-clock times are turned into simulated seconds with the
worker's own formula (``ScaledClock``: simulated = epoch + (real - origin) × scale): the
worker and the test read the same system clock (``time.time()``) with the same scale, so a
difference of two arrivals in simulated seconds is the real difference × ``SCALE``,
exactly, but for the rounding of a float timestamp (≈ 0.25 µs real, 10 µs simulated).
``CONVERSION_TOLERANCE`` (1 ms simulated) covers that and nothing else: no allowance for
how fast the product is. The ledger's ``sent_at`` (simulated ends of the provider calls,
what the audit's ``--gap-on handoff`` spaces) is checked the same way, without tolerance.

No assertion is about how fast anything happens; the waits are generous.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from streams.api import DripDrop
from streams.clock import ScaledClock
from streams.settings import Settings
from tests.integration._api_fixtures import run_cli
from tests.integration.pipeline_support import (
    TopicReader,
    build_outbound,
    enroll_many,
    rows,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

GAP = 60
"""The mailbox's ``min_gap_seconds`` (simulated)."""
SCALE = 40.0
"""Simulated seconds per real second: a gap is 1.5 s real, 24 gaps a minute."""
CONVERSION_TOLERANCE = 0.001
"""Simulated seconds: the float rounding of converting wall-clock differences (see above)."""
SPACING_PROSPECTS = 25
OUTAGE_PROSPECTS = 22
BEFORE_OUTAGE = 2
"""Sends that arrive before the server stops: the other 20 are queued behind the gap."""
OUTAGE_REAL_SECONDS = 10.0
"""400 simulated seconds: more than six gaps' slots pass while the server is down."""
EXIT_VIOLATIONS = 6
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<?([^>\s]+)>?", re.IGNORECASE | re.MULTILINE)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The breaker opens after 3 consecutive adapter failures and probes after 3 s real.
    return settings.model_copy(
        update={"partitions": 2, "circuit_threshold": 3, "circuit_cooldown_seconds": 3.0}
    )


class Arrivals:
    """Wraps the SMTP server's ``DATA`` hook: when each accepted message arrived (wall
    clock, taken as the hook is entered: the whole message is in), its envelope sender and
    its Message-ID (bare). Survives ``stop``/``restart`` (the handler is kept)."""

    def __init__(self, smtp: SmtpSink) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[float, str, str]] = []
        inner = smtp.handler.handle_DATA

        async def timed(server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time()
            response: str = await inner(server, session, envelope)
            if response.startswith("250"):
                found = MESSAGE_ID.search(envelope.original_content or envelope.content or b"")
                mid = found.group(1).decode(errors="replace") if found else ""
                with self._lock:
                    self._seen.append((arrived, str(envelope.mail_from), mid))
            return response

        smtp.handler.handle_DATA = timed  # type: ignore[method-assign]

    def of(self, mail_from: str) -> list[tuple[float, str]]:
        """(arrival wall-clock time, Message-ID) of ``mail_from``'s messages, in order."""
        with self._lock:
            return sorted((at, mid) for at, sender, mid in self._seen if sender == mail_from)


def scaled_settings(settings: Settings) -> tuple[Settings, ScaledClock]:
    """The worker's settings on a clock ``SCALE`` times real time, starting at a UTC
    midnight (no local day ends during the test), ticking every 0.2 s real (8 simulated
    seconds: the look-ahead for slots is far shorter than the gap, as in production)."""
    origin = time.time()
    midnight = (origin // 86400 + 1) * 86400
    worker = settings.model_copy(
        update={
            "clock_scale": SCALE,
            "clock_epoch": midnight,
            "clock_origin": origin,
            "tick_interval_seconds": 0.2,
        }
    )
    return worker, ScaledClock(scale=SCALE, epoch=midnight, origin=origin)


def spacings(times: list[float]) -> list[float]:
    """Consecutive differences of wall-clock times, in simulated seconds."""
    return [(b - a) * SCALE for a, b in zip(times, times[1:], strict=False)]


def summary(values: list[float]) -> str:
    return (
        f"min {min(values):.3f}s mean {statistics.fmean(values):.3f}s"
        f" max {max(values):.3f}s over {len(values)}"
    )


def ledger(settings: Settings, key: str) -> list[tuple[str, str, str, datetime | None]]:
    """``(adapter_id, status, out_message_id, sent_at)`` of the tenant's executions."""
    return [
        (str(a), str(s), str(m), t)
        for a, s, m, t in rows(
            settings,
            "SELECT adapter_id::text, status, out_message_id, sent_at"
            " FROM dripdrop.step_executions WHERE tenant_key = %s ORDER BY sent_at",
            key,
        )
    ]


def all_completed(settings: Settings, key: str, count: int, worker: WorkerProcess) -> bool:
    assert worker.alive(), worker.log_tail()
    states = rows(
        settings,
        "SELECT state, count(*) FROM dripdrop.enrollments WHERE tenant_key = %s GROUP BY 1",
        key,
    )
    return dict(states) == {"completed": count}


def audit_handoff(settings: Settings, key: str) -> dict[str, Any]:
    """``dripdrop audit replay --gap-on handoff`` over the tenant, as an operator runs it."""
    result = run_cli(settings, "audit", "replay", "--tenant", key, "--gap-on", "handoff", "--json")
    assert result.exit_code in (0, EXIT_VIOLATIONS), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_handoffs_of_a_mailbox_with_demand_waiting_are_one_gap_apart(
    settings: Settings, client: DripDrop, worker_factory: Callable[..., WorkerProcess]
) -> None:
    key = tenant()
    with SmtpSink() as smtp:
        arrivals = Arrivals(smtp)
        world = build_outbound(
            client,
            smtp,
            tenant_key=key,
            steps=1,
            adapter_fields={"min_gap_seconds": GAP, "daily_cap": 1000},
        )
        mailbox = world.adapters[0]
        worker_settings, _clock = scaled_settings(settings)
        worker = start_worker(worker_factory, worker_settings)
        enroll_many(client, world, key, SPACING_PROSPECTS)
        wait_for(
            lambda: len(arrivals.of(mailbox.from_address)) >= SPACING_PROSPECTS,
            timeout=240,
            what=f"{SPACING_PROSPECTS} messages from the mailbox",
        )
        wait_for(
            lambda: all_completed(settings, key, SPACING_PROSPECTS, worker),
            timeout=60,
            what="every enrollment completed",
        )
        got = arrivals.of(mailbox.from_address)

    assert len(got) == SPACING_PROSPECTS
    assert len({mid for _, mid in got}) == SPACING_PROSPECTS
    at_server = spacings([at for at, _ in got])
    print(f"\nspacing at the server (simulated): {summary(at_server)}")
    assert min(at_server) >= GAP - CONVERSION_TOLERANCE, at_server
    # No slot lost to a late tick: the demand fills the gap, one hand-off per gap.
    assert statistics.fmean(at_server) <= GAP * 1.05, at_server

    sent = ledger(settings, key)
    assert [s for _, s, _, _ in sent] == ["sent"] * SPACING_PROSPECTS
    assert {m for _, _, m, _ in sent} == {mid for _, mid in got}
    ends = [t for _, _, _, t in sent if t is not None]
    in_ledger = [(b - a).total_seconds() for a, b in zip(ends, ends[1:], strict=False)]
    print(f"spacing of the ledger's sent_at (simulated): {summary(in_ledger)}")
    assert min(in_ledger) >= GAP, in_ledger

    report = audit_handoff(settings, key)
    assert report["counts"].get("min_gap", 0) == 0, report["violations"]
    assert report["sends"] == SPACING_PROSPECTS, report


def test_sends_held_up_by_an_smtp_outage_go_out_once_each_and_one_gap_apart(
    settings: Settings, client: DripDrop, worker_factory: Callable[..., WorkerProcess]
) -> None:
    key = tenant()
    telemetry = TopicReader(settings, "telemetry")
    with SmtpSink() as smtp:
        arrivals = Arrivals(smtp)
        world = build_outbound(
            client,
            smtp,
            tenant_key=key,
            steps=1,
            adapter_fields={"min_gap_seconds": GAP, "daily_cap": 1000},
        )
        mailbox = world.adapters[0]
        worker_settings, _clock = scaled_settings(settings)
        worker = start_worker(worker_factory, worker_settings)
        enroll_many(client, world, key, OUTAGE_PROSPECTS)
        wait_for(
            lambda: len(arrivals.of(mailbox.from_address)) >= BEFORE_OUTAGE,
            timeout=120,
            interval=0.01,
            what="the first sends",
        )
        smtp.stop()  # connection refused: an adapter failure, deferred with back-off
        stopped = time.time()
        queued = OUTAGE_PROSPECTS - len(arrivals.of(mailbox.from_address))
        # The outage is felt: the mailbox's breaker opens.
        telemetry.wait(telemetry_named("provider.circuit_open", adapter_id=mailbox.id), timeout=90)
        time.sleep(max(0.0, stopped + OUTAGE_REAL_SECONDS - time.time()))
        smtp.restart()
        restarted = time.time()
        wait_for(
            lambda: len(arrivals.of(mailbox.from_address)) >= OUTAGE_PROSPECTS,
            timeout=300,
            what=f"all {OUTAGE_PROSPECTS} messages",
        )
        wait_for(
            lambda: all_completed(settings, key, OUTAGE_PROSPECTS, worker),
            timeout=60,
            what="every enrollment completed",
        )
        got = arrivals.of(mailbox.from_address)

    print(f"\n{queued} sends queued when the server stopped")
    assert queued >= 18, queued
    # Exactly once: one message per prospect, each Message-ID once, all in the ledger as sent.
    ids = Counter(mid for _, mid in got)
    assert len(ids) == OUTAGE_PROSPECTS and set(ids.values()) == {1}, ids
    sent = ledger(settings, key)
    assert Counter(s for _, s, _, _ in sent) == {"sent": OUTAGE_PROSPECTS}
    assert {m for _, _, m, _ in sent} == set(ids)
    names = Counter(r["name"] for r in telemetry.poll())
    assert names["dispatch.failed"] == 0 and names["dispatch.skipped"] == 0, names
    assert names["dispatch.retry_scheduled"] >= 1, names  # the outage held sends up
    telemetry.close()

    times = [at for at, _ in got]
    after = [at for at in times if at >= restarted]
    assert len(after) >= queued, (len(after), queued)
    at_server = spacings(times)
    after_outage = spacings(after)
    print(f"spacing at the server after the outage (simulated): {summary(after_outage)}")
    print(f"spacing at the server, whole run (simulated): {summary(at_server)}")
    # No burst when the server is back: every consecutive pair at least one gap apart.
    assert min(at_server) >= GAP - CONVERSION_TOLERANCE, at_server

    ends = [t for _, _, _, t in sent if t is not None]
    in_ledger = [(b - a).total_seconds() for a, b in zip(ends, ends[1:], strict=False)]
    print(f"spacing of the ledger's sent_at (simulated): {summary(in_ledger)}")
    assert min(in_ledger) >= GAP, in_ledger

    report = audit_handoff(settings, key)
    assert report["counts"].get("min_gap", 0) == 0, report["violations"]
