"""The seed's 14-day ramp through the real pipeline on the scaled clock (SPEC §5.4, §11).

One mailbox (floor 5, increment 3, cap 40) and more demand than it may ever send: each
adapter-local day, the sends must equal that day's effective cap exactly, never more.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    DAY,
    TopicReader,
    build_outbound,
    enroll_many,
    next_midnight,
    rows,
    scaled,
    start_worker,
    tenant,
    wait_until,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

EPOCH = datetime(2031, 3, 1, tzinfo=UTC)
SEED_CAPS = [5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 40, 40]
"""SPEC §5.4: floor 5, increment 3, cap 40, days 1..14."""
DAY_SECONDS = 1.6
"""Real seconds per simulated day: 14 days in 22 s."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Two partitions: a quarter of the ticks and table stores of the default eight."""
    return settings.model_copy(update={"partitions": 2})


def test_ramp_fourteen_days_sends_equal_each_day_cap_exactly(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    worker_settings, clock = scaled(settings, day_seconds=DAY_SECONDS, epoch=EPOCH)
    worker = start_worker(worker_factory, worker_settings)
    # The ramp starts at the first simulated midnight the world can be ready for, however
    # long the worker took to start.
    ramp_start = next_midnight(clock.now() + DAY / 2)
    # Day 1 may pin 5 prospects (headroom = cap 5); 5 x 70 steps = 350 sends of demand is
    # already more than the 338 the 14 days allow; every step is due at once after the last.
    world = build_outbound(
        client,
        smtp,
        tenant_key=key,
        steps=70,
        adapter_fields={
            "daily_cap": 40,
            "ramp_floor": 5,
            "ramp_increment": 3,
            "ramp_started_at": ramp_start,
        },
    )
    mailbox = world.adapters[0].id
    wait_until(clock, ramp_start)
    telemetry = TopicReader(settings, "telemetry")
    enroll_many(client, world, key, 5)
    # Each new day adds the ramp's increment of prospects: they pin when they find headroom
    # (or are rejected, pool_exhausted), so later days need fewer round trips per pin.
    for day in range(1, len(SEED_CAPS) - 1):
        wait_until(clock, ramp_start + day * DAY)
        enroll_many(client, world, key, 3, start=5 + 3 * (day - 1))
    last_day = ramp_start.date() + timedelta(days=len(SEED_CAPS) - 1)

    def per_day() -> dict[date, int]:
        found = rows(
            settings,
            "SELECT local_day, sent FROM dripdrop.adapter_day_counters WHERE adapter_id = %s",
            mailbox,
        )
        return {day: sent for day, sent in found}

    def all_days_done() -> dict[date, int] | None:
        assert worker.alive(), worker.log_tail()
        counts = per_day()
        if clock.now() < ramp_start + len(SEED_CAPS) * DAY or counts.get(last_day, 0) < 40:
            return None
        return counts

    counts = wait_for(all_days_done, timeout=len(SEED_CAPS) * DAY_SECONDS + 20, what="14 days")
    expected = {ramp_start.date() + timedelta(days=n): cap for n, cap in enumerate(SEED_CAPS)}
    assert {d: counts.get(d, 0) for d in expected} == expected
    assert all(d >= ramp_start.date() for d in counts), counts

    def delivered() -> dict[date, int] | None:
        found = rows(
            settings,
            "SELECT (scheduled_for AT TIME ZONE 'UTC')::date, count(*)"
            " FROM dripdrop.step_executions WHERE adapter_id = %s AND status = 'sent'"
            " GROUP BY 1",
            mailbox,
        )
        by_day = {day: n for day, n in found}
        return by_day if all(by_day.get(d, 0) >= cap for d, cap in expected.items()) else None

    by_day = wait_for(delivered, timeout=20, what="every claimed send delivered")
    assert {d: by_day[d] for d in expected} == expected
    # The processor itself kept to the cap: PostgreSQL never had to refuse a claim.
    names = [r["name"] for r in telemetry.poll(1.0)]
    telemetry.close()
    assert "dispatch.claim_refused" not in names
    assert names.count("dispatch.adapter_pinned") >= 5
    assert worker.stop() == 0, worker.log_tail()
