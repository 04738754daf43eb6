"""Adapter health through the real pipeline on the scaled clock (SPEC §5.7).

A bounce on the health-signals topic breaches the threshold (≥ 2 % over ≥ 20 sends): the
mailbox rests for the cooldown, the timer alone moves it to probing when the rest ends,
and a clean probe budget moves it to ramping. Every transition is a ``health.state_changed``
event and a ``dripdrop.adapter_health_transitions`` row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    DAY,
    TopicReader,
    attrs_of,
    build_outbound,
    enroll_many,
    enrollment_state,
    produce_health_signal,
    rows,
    scaled,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

DAY_SECONDS = 4.0
"""The default 1-day cooldown lasts 4 s real."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def test_health_bounce_rests_then_timer_probes_then_clean_probes_ramp(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    # Step 2 is a month away: the enrollments stay active while the mailbox's health moves.
    world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, 30 * 86400))
    mailbox = world.adapters[0].id
    worker_settings, clock = scaled(
        settings, day_seconds=DAY_SECONDS, epoch=datetime(2031, 7, 1, tzinfo=UTC)
    )
    telemetry = TopicReader(settings, "telemetry")
    worker = start_worker(worker_factory, worker_settings)
    first = enroll_many(client, world, key, 20)  # the minimum sample

    def sent(count: int) -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = rows(
            settings,
            "SELECT out_message_id, recipient FROM dripdrop.step_executions"
            " WHERE adapter_id = %s AND status = 'sent' ORDER BY inserted_at",
            mailbox,
        )
        return found if len(found) >= count else None

    sends = wait_for(lambda: sent(20), what="20 sends")
    # One hard bounce of 20 sends is 5 % (>= 2 %): named by our RFC Message-ID only.
    bounced_id, bounced_to = sends[0]
    produce_health_signal(
        client,
        settings,
        tenant_key=key,
        kind="bounce",
        bounce_type="hard",
        message_id=str(bounced_id).strip("<>"),
        occurred_at=clock.now(),
        source="test-esp",
    )
    rested = telemetry.wait(
        telemetry_named("health.state_changed", adapter_id=mailbox, to="resting"),
        what="active -> resting",
    )[0]
    attrs = attrs_of(rested)
    assert (attrs["from"], attrs["reason"], attrs["source"]) == (
        "active",
        "bounce_threshold",
        "policy",
    )
    resting_until = datetime.fromisoformat(attrs["resting_until"])
    # The default cooldown (telemetry times are Avro timestamp-millis).
    assert abs(resting_until - rested["at"] - timedelta(days=1)) < timedelta(milliseconds=1)
    telemetry.wait(telemetry_named("policy.bounce_threshold", adapter_id=mailbox))

    # The bounce also suppressed the recipient and stopped its enrollment as ``bounced``
    # (SPEC §5.7, §7).
    def stopped() -> list[tuple[Any, ...]] | None:
        states = [enrollment_state(settings, e) for e in first]
        return [s for s in states if s is not None and s[0] == "bounced"] or None

    assert wait_for(stopped, what="bounced enrollment stopped") == [("bounced", "bounce", mailbox)]
    assert rows(
        settings,
        "SELECT recipient FROM dripdrop.suppressions WHERE tenant_key = %s",
        key,
    ) == [(bounced_to,)]

    # No input arrives: only the timer moves the mailbox to probing when the rest ends.
    probing = telemetry.wait(
        telemetry_named("health.state_changed", adapter_id=mailbox, to="probing"),
        timeout=DAY_SECONDS * 3,
        what="resting -> probing by timer",
    )[0]
    assert attrs_of(probing)["reason"] == "resting_elapsed"
    assert resting_until <= probing["at"] < resting_until + timedelta(hours=3)

    # Probing may pin and send its budget of 5; clean, they move it to ramping.
    enroll_many(client, world, key, 5, start=20)
    ramping = telemetry.wait(
        telemetry_named("health.state_changed", adapter_id=mailbox, to="ramping"),
        what="probing -> ramping",
    )[0]
    assert (attrs_of(ramping)["from"], attrs_of(ramping)["reason"]) == ("probing", "probe_clean")
    wait_for(lambda: sent(25), what="5 probe sends")

    def transitions() -> list[tuple[Any, ...]] | None:
        found = rows(
            settings,
            "SELECT from_state, to_state, reason, source FROM dripdrop.adapter_health_transitions"
            " WHERE adapter_id = %s AND source = 'policy' ORDER BY at",
            mailbox,
        )
        return found if len(found) >= 3 else None

    assert wait_for(transitions, what="transition rows") == [
        ("active", "resting", "bounce_threshold", "policy"),
        ("resting", "probing", "resting_elapsed", "policy"),
        ("probing", "ramping", "probe_clean", "policy"),
    ]
    state = rows(
        settings,
        "SELECT health_state, ramp_started_at FROM dripdrop.channel_adapters WHERE id = %s",
        mailbox,
    )[0]
    assert state[0] == "ramping"
    # The ramp restarts from the floor at the promotion.
    assert abs(state[1] - ramping["at"]) < timedelta(milliseconds=1)
    telemetry.close()
    assert worker.stop() == 0, worker.log_tail()


def test_each_health_change_through_the_api_writes_exactly_one_transition_row(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """One row per transition, the same ones as the ``health.state_changed`` events.

    ``set_adapter_health`` publishes a config change and a ``set_health`` record, and it
    used to record a row itself as well: each change left two rows (or three), so
    ``adapter show`` listed transitions that never happened twice.
    """
    key = tenant()
    world = build_outbound(client, smtp, tenant_key=key, steps=1)
    mailbox = world.adapters[0].id
    telemetry = TopicReader(settings, "telemetry")
    worker = start_worker(worker_factory)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    changes: list[Callable[[], object]] = [
        lambda: client.set_adapter_health(
            mailbox,
            tenant_key=key,
            health_state="resting",
            resting_until=until,
            health_score=0.3,
            source="postmaster",
        ),
        lambda: client.set_adapter_health(
            mailbox, tenant_key=key, health_state="resting", resting_until=until + DAY
        ),
        lambda: client.set_adapter_health(mailbox, tenant_key=key, health_state="active"),
        lambda: client.update_channel_adapter(mailbox, tenant_key=key, health_state="ramping"),
    ]
    expected = [("active", "resting"), ("resting", "resting"), ("resting", "active")]
    expected.append(("active", "ramping"))
    for count, change in enumerate(changes, start=1):
        change()
        telemetry.wait(
            telemetry_named("health.state_changed", adapter_id=mailbox),
            count=count,
            what=f"transition {count}",
        )
    telemetry.poll(1.0)  # a second event of one change would arrive by now
    events = [
        (attrs_of(r)["from"], attrs_of(r)["to"])
        for r in telemetry.records
        if telemetry_named("health.state_changed", adapter_id=mailbox)(r)
    ]
    assert events == expected

    def transitions() -> list[tuple[Any, ...]] | None:
        found = rows(
            settings,
            "SELECT from_state, to_state FROM dripdrop.adapter_health_transitions"
            " WHERE adapter_id = %s ORDER BY at, inserted_at",
            mailbox,
        )
        return found if len(found) >= len(expected) else None

    wait_for(transitions, what="transition rows")
    time.sleep(1.0)  # a late duplicate row from the sink
    assert transitions() == expected
    telemetry.close()
    assert worker.stop() == 0, worker.log_tail()
