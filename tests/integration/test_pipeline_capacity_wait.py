"""Capacity waits, it does not reject (SPEC §5.2), through the real pipeline.

300 prospects enrolled on day 1 of a new mailbox on the seed's ramp (5, +3 a day, cap 40):
none is rejected; they wait in the pool's first-in first-out queue and are pinned as each
local day opens headroom, so the first steps per day are exactly 5, 8, 11, … 38, then 40 a
day until the queue is empty, in enrollment order.

On this test's clock a tick is a simulated hour: the 90 s gap is kept by hand-off times
chosen ahead of the tick (``Send.at``, the command's ``not_before``) that the sender holds
each send until, so 40 sends fit in a day and consecutive hand-offs stay one gap apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    create_mailbox,
    rows,
    scaled,
    start_worker,
    telemetry_named,
    tenant,
    wait_until,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

PROSPECTS = 300
DAY_SECONDS = 6.0
DAY1 = datetime(2031, 7, 1, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def expected_per_day(total: int) -> list[int]:
    days: list[int] = []
    while sum(days) < total:
        days.append(min(5 + 3 * len(days), 40, total - sum(days)))
    return days


def test_300_prospects_on_day_one_wait_and_fill_the_ramp_fifo(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    mailbox = create_mailbox(
        client,
        smtp,
        tenant_key=key,
        name="mbox",
        health_state="ramping",
        daily_cap=40,
        ramp_floor=5,
        ramp_increment=3,
        ramp_started_at=DAY1,
        min_gap_seconds=90,
    )
    pool = client.create_adapter_pool(tenant_key=key, name="sales", on_pin_unavailable="pause")
    client.add_pool_member(pool.id, tenant_key=key, adapter_id=mailbox.id, weight=1)
    sequence = client.create_sequence(tenant_key=key, key="cold")
    version = client.create_sequence_version(
        sequence.id, tenant_key=key, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    client.create_step(
        version.id, tenant_key=key, key="s0", position=0, subject_template="Hi", body_template="x"
    )
    # The simulated clock reaches day 1 in 8 s: the worker is up by then.
    worker_settings, clock = scaled(
        settings, day_seconds=DAY_SECONDS, epoch=DAY1, startup_seconds=8.0
    )
    telemetry = TopicReader(settings, "telemetry")
    dispatch = TopicReader(settings, "dispatch")
    worker = start_worker(worker_factory, worker_settings)
    wait_until(clock, DAY1 + timedelta(minutes=30))
    accepted = client.enroll_many(
        tenant_key=key,
        sequence_id=sequence.id,
        prospects=[
            {"subscriber_id": f"p-{i:04d}", "recipient": f"prospect{i}@example.org"}
            for i in range(PROSPECTS)
        ],
    )
    ids = [str(a.enrollment_id) for a in accepted]
    enrolled_by = clock.now()
    assert enrolled_by < DAY1 + timedelta(days=1), "enrolling took longer than day 1"

    def first_steps() -> list[tuple[str, datetime]] | None:
        assert worker.alive(), worker.log_tail()
        found = rows(
            settings,
            "SELECT enrollment_id::text, sent_at FROM dripdrop.step_executions"
            " WHERE tenant_key = %s AND status = 'sent' ORDER BY sent_at",
            key,
        )
        return [(e, at) for e, at in found] if len(found) >= PROSPECTS else None

    sent = wait_for(
        first_steps, timeout=30 * DAY_SECONDS + 60, interval=1.0, what=f"{PROSPECTS} sends"
    )
    per_day = Counter(at.astimezone(UTC).date() for _, at in sent)
    days = sorted(per_day)
    assert days[0] == DAY1.date()
    counts = [per_day[d] for d in days]
    assert counts == expected_per_day(PROSPECTS), f"first steps per day: {counts}"
    assert days == [DAY1.date() + timedelta(days=n) for n in range(len(days))]
    # First in, first out: each day sends the next slice of the enrollment order (within a
    # day, sends with no gap share their instant, so their order there is not the queue's).
    start = 0
    for day in days:
        that_day = {e for e, at in sent if at.astimezone(UTC).date() == day}
        assert that_day == set(ids[start : start + len(that_day)]), f"not FIFO on {day}"
        start += len(that_day)
    assert rows(
        settings,
        "SELECT count(*) FROM dripdrop.enrollments WHERE tenant_key = %s AND state = 'rejected'",
        key,
    ) == [(0,)]
    # The first one to wait said so (the seed's runbook: add capacity, repin, lower volume).
    [exhausted] = telemetry.wait(telemetry_named("dispatch.pool_exhausted", pool_id=pool.id))
    assert attrs_of(exhausted)["waiting"] is True
    assert attrs_of(exhausted)["evicted_adapter_ids"] == [
        {"adapter_id": mailbox.id, "reason": "no_headroom"}
    ]
    waiting = [r for r in telemetry.poll() if r["name"] == "enrollment.waiting_capacity"]
    assert len(waiting) == PROSPECTS - 5
    # Consecutive hand-off times of the mailbox are at least the gap apart.
    handoffs = sorted(
        c["not_before"] for c in dispatch.wait(lambda _: True, count=PROSPECTS, timeout=30)
    )
    assert min(b - a for a, b in zip(handoffs, handoffs[1:], strict=False)) >= timedelta(seconds=90)
    telemetry.close()
    dispatch.close()
