"""Pools through the real pipeline: WDRR pins, reassign and pause policies (SPEC §5.2, §5.3).

Real Kafka, PostgreSQL and SMTP (aiosmtpd); the worker is a subprocess.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    build_outbound,
    create_mailbox,
    enroll_many,
    enrollment_state,
    rows,
    scaled,
    sent_rows,
    start_worker,
    telemetry_named,
    tenant,
    wait_until,
    wire,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def test_pins_follow_weights_and_steps_use_the_pin_except_override(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    world = build_outbound(
        client, smtp, tenant_key=key, steps=3, weights=(2, 1, 1), override_step=1
    )
    weight = {a.id: w for a, w in zip(world.adapters, (2, 1, 1), strict=True)}
    worker = start_worker(worker_factory)
    enrollments = enroll_many(client, world, key, 12)

    def all_sent() -> list[list[tuple[Any, ...]]] | None:
        assert worker.alive(), worker.log_tail()
        sent = [sent_rows(settings, e) for e in enrollments]
        return sent if all(len(s) == 3 for s in sent) else None

    sent = wait_for(all_sent, timeout=60, what="3 sends of 12 enrollments")
    pins = rows(
        settings,
        "SELECT adapter_id::text FROM dripdrop.enrollments WHERE tenant_key = %s"
        " ORDER BY enrolled_at",
        key,
    )
    pinned = [p[0] for p in pins]
    # Every eligible member, every window of sum(weights) = 4 pins: exactly its weight.
    assert Counter(pinned) == {a: 3 * w for a, w in weight.items()}
    for start in range(0, len(pinned), 4):
        assert Counter(pinned[start : start + 4]) == weight, pinned
    for enrollment_id, executions in zip(enrollments, sent, strict=True):
        pin = enrollment_state(settings, enrollment_id)[2]  # type: ignore[index]
        assert [x[3] for x in executions] == [pin, world.override.id, pin]
        assert [x[0] for x in executions] == [s.id for s in world.steps]
    assert worker.stop() == 0, worker.log_tail()


def test_reassign_pool_moves_the_enrollment_and_breaks_the_thread(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    # Simulated hours last 0.5 s: step 2 is due 4 h (2 s) after step 1, room to deactivate.
    world = build_outbound(
        client, smtp, tenant_key=key, steps=3, weights=(1, 1), delays=(0, 4 * 3600, 0)
    )
    worker_settings, _ = scaled(settings, day_seconds=12, epoch=datetime(2031, 5, 5, tzinfo=UTC))
    telemetry = TopicReader(settings, "telemetry")
    events = TopicReader(settings, "message-events")
    worker = start_worker(worker_factory, worker_settings)
    enrollment_id = enroll_many(client, world, key, 1)[0]

    def sends_of(enrollment: str, count: int) -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = sent_rows(settings, enrollment)
        return found if len(found) >= count else None

    first = wait_for(lambda: sends_of(enrollment_id, 1), what="first send")
    old = first[0][3]
    new = next(a.id for a in world.adapters if a.id != old)
    client.update_channel_adapter(old, tenant_key=key, active=False)

    reassigned = telemetry.wait(
        telemetry_named("enrollment.sender_reassigned", enrollment_id=enrollment_id),
        what="enrollment.sender_reassigned",
    )
    assert attrs_of(reassigned[0])["old_adapter_id"] == old
    assert attrs_of(reassigned[0])["new_adapter_id"] == new
    event = events.wait(
        lambda r: r["event_type"] == "sender_reassigned" and r["enrollment_id"] == enrollment_id,
        what="sender_reassigned on message-events",
    )
    assert event[0]["adapter_id"] == new
    assert rows(
        settings,
        "SELECT adapter_id::text, data->>'old_adapter_id' FROM dripdrop.message_events"
        " WHERE enrollment_id = %s AND event_type = 'sender_reassigned'",
        enrollment_id,
    ) == [(new, old)]
    assert enrollment_state(settings, enrollment_id) == ("active", None, new)

    chain = wait_for(lambda: sends_of(enrollment_id, 3), what="three sends")
    ids = [wire(x[1]) for x in chain]
    assert [x[3] for x in chain] == [old, new, new]
    decided = [
        r[0]
        for r in rows(
            settings,
            "SELECT scheduled_for FROM dripdrop.step_executions WHERE enrollment_id = %s"
            " ORDER BY inserted_at",
            enrollment_id,
        )
    ]
    # Step 2 went out when due (4 h after step 1; ticks come every simulated hour).
    assert timedelta(hours=4) <= decided[1] - decided[0] < timedelta(hours=6)
    assert chain[1][2] == {"Message-ID": ids[1]}  # the thread breaks: no In-Reply-To
    assert chain[2][2] == {"Message-ID": ids[2], "In-Reply-To": ids[1], "References": ids[1]}
    received = {m.header("Message-ID"): m for m in smtp.messages}
    assert received[ids[1]].header("In-Reply-To") is None
    new_from = next(a.from_address for a in world.adapters if a.id == new)
    assert received[ids[1]].mail_from == new_from
    telemetry.close()
    events.close()
    assert worker.stop() == 0, worker.log_tail()


def test_pause_pool_pauses_in_flight_at_once_rejects_new_and_resume_sends_once(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    # Simulated hours last 1 s: step 2 is due 3 h (3 s) after step 1.
    world = build_outbound(
        client, smtp, tenant_key=key, steps=2, pool_policy="pause", delays=(0, 3 * 3600)
    )
    pinned = world.adapters[0].id
    # Resting beyond the 7-day horizon: no member could send at all, so a new enrollment is
    # rejected (SPEC §5.3); a shorter rest would make it wait (§5.2, test_pools.py).
    resting = create_mailbox(client, smtp, tenant_key=key, name="resting")
    client.set_adapter_health(
        resting.id,
        tenant_key=key,
        health_state="resting",
        resting_until=datetime.now(UTC) + timedelta(days=30),
    )
    inactive = create_mailbox(client, smtp, tenant_key=key, name="inactive", active=False)
    for adapter in (resting, inactive):
        client.add_pool_member(world.pool.id, tenant_key=key, adapter_id=adapter.id, weight=1)
    telemetry = TopicReader(settings, "telemetry")
    worker_settings, clock = scaled(settings, day_seconds=24, epoch=datetime.now(UTC))
    worker = start_worker(worker_factory, worker_settings)
    first = enroll_many(client, world, key, 1)[0]
    wait_for(lambda: sent_rows(settings, first), what="first send")
    assert enrollment_state(settings, first) == ("active", None, pinned)

    # Resting for longer than the 7-day horizon: terminally unavailable, paused at once.
    client.set_adapter_health(
        pinned,
        tenant_key=key,
        health_state="resting",
        resting_until=clock.now() + timedelta(days=30),
    )
    paused = telemetry.wait(
        telemetry_named("enrollment.paused_pin_unavailable", enrollment_id=first),
        what="enrollment.paused_pin_unavailable",
    )
    assert attrs_of(paused[0])["adapter_id"] == pinned

    def is_paused() -> tuple[Any, ...] | None:
        state = enrollment_state(settings, first)
        return state if state and state[0] == "paused" else None

    assert wait_for(is_paused, what="enrollment paused") == ("paused", "pin_unavailable", pinned)

    second = enroll_many(client, world, key, 1, start=1)[0]
    exhausted = telemetry.wait(
        telemetry_named("dispatch.pool_exhausted", enrollment_id=second),
        what="dispatch.pool_exhausted",
    )[0]
    attrs = attrs_of(exhausted)
    assert exhausted["tenant_key"] == key
    assert attrs["pool_id"] == world.pool.id
    assert attrs["sequence_version_id"] == world.version.id
    assert sorted((e["adapter_id"], e["reason"]) for e in attrs["evicted_adapter_ids"]) == sorted(
        [(pinned, "resting"), (resting.id, "resting"), (inactive.id, "adapter_inactive")]
    )
    assert wait_for(lambda: enrollment_state(settings, second), what="rejected row") == (
        "rejected",
        "pool_exhausted",
        None,
    )
    assert len(sent_rows(settings, first)) == 1
    assert sent_rows(settings, second) == []
    # set_adapter_health publishes a config change and a set_health record: one transition.
    changes = [
        attrs_of(r)
        for r in telemetry.poll(0.5)
        if telemetry_named("health.state_changed", adapter_id=pinned)(r)
    ]
    assert [(c["from"], c["to"]) for c in changes] == [("active", "resting")]

    # Held while paused: step 2 falls due and nothing goes out.
    due = rows(
        settings,
        "SELECT scheduled_for FROM dripdrop.step_executions WHERE enrollment_id = %s",
        first,
    )[0][0] + timedelta(hours=3)
    wait_until(clock, due + timedelta(hours=1))
    assert len(sent_rows(settings, first)) == 1
    # The sender recovers; resuming sends step 2 exactly once, through the pin.
    client.set_adapter_health(pinned, tenant_key=key, health_state="active")
    telemetry.wait(
        telemetry_named("health.state_changed", adapter_id=pinned, to="active"),
        what="resting -> active",
    )
    client.resume_enrollment(first, tenant_key=key)

    def completed() -> tuple[Any, ...] | None:
        state = enrollment_state(settings, first)
        return state if state and state[0] == "completed" else None

    assert wait_for(completed, what="enrollment completed") == ("completed", None, pinned)
    executions = rows(
        settings,
        "SELECT step_id::text, status, adapter_id::text FROM dripdrop.step_executions"
        " WHERE enrollment_id = %s ORDER BY inserted_at",
        first,
    )
    assert executions == [(s.id, "sent", pinned) for s in world.steps]
    telemetry.close()
    assert worker.stop() == 0, worker.log_tail()
