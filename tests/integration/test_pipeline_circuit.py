"""A mailbox that cannot send costs no prospect a step (SPEC §7): the circuit breaker.

Two mailboxes in a pool; one's SMTP server is down (connection refused: an adapter-level
failure, like a rejected password). Its sends are deferred with back-off, never failed or
skipped; after 3 consecutive failures its circuit opens and its sends are held while the
other mailbox keeps sending. When its server is back, the probe after the cool-down closes
the circuit and every held step goes out exactly once, threaded as usual.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from streams.api import DripDrop
from streams.mailsink import SmtpSink
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    attrs_of,
    enroll_many,
    rows,
    scaled,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.support import WorkerProcess, wait_for

PROSPECTS = 10


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"partitions": 2, "circuit_threshold": 3, "circuit_cooldown_seconds": 4.0}
    )


def test_a_mailbox_that_cannot_send_opens_its_circuit_and_loses_no_step(
    settings: Settings, client: DripDrop, worker_factory: Callable[..., WorkerProcess]
) -> None:
    key = tenant()
    with SmtpSink() as good, SmtpSink() as broken:
        broken.stop()  # down: connection refused until it is back
        adapters = [
            client.create_channel_adapter(
                tenant_key=key,
                name=name,
                provider="smtp",
                from_address=f"{name}@{name}.example",
                health_state="active",
                config=sink.adapter_config(),
            )
            for name, sink in (("good", good), ("broken", broken))
        ]
        pool = client.create_adapter_pool(tenant_key=key, name="sales", on_pin_unavailable="pause")
        for adapter in adapters:
            client.add_pool_member(pool.id, tenant_key=key, adapter_id=adapter.id, weight=1)
        sequence = client.create_sequence(tenant_key=key, key="cold")
        version = client.create_sequence_version(
            sequence.id, tenant_key=key, version=1, mode="outbound", config={"pool_id": pool.id}
        )
        for position in range(2):
            client.create_step(
                version.id,
                tenant_key=key,
                key=f"s{position}",
                position=position,
                subject_template="Hello" if position == 0 else "Re: Hello",
                body_template=f"Step {position}",
                delay_seconds=0 if position == 0 else 3600,
            )
        world = type("World", (), {"sequence": sequence})
        # One simulated day is 240 s real: the back-off (5 s, 10 s…) and the 4 s cool-down
        # are real seconds, a step 2 an hour later is 10 s.
        worker_settings, _clock = scaled(
            settings, day_seconds=240.0, epoch=datetime(2031, 7, 1, tzinfo=UTC)
        )
        telemetry = TopicReader(settings, "telemetry")
        worker = start_worker(worker_factory, worker_settings)
        enroll_many(client, world, key, PROSPECTS)
        broken_id = adapters[1].id
        opened = telemetry.wait(
            telemetry_named("provider.circuit_open", adapter_id=broken_id), timeout=90
        )
        assert attrs_of(opened[0])["opens"] == 1
        # While it is open the other mailbox keeps sending: its prospects' first steps.
        wait_for(lambda: len(good.messages) >= PROSPECTS // 2 or None, what="good sends")
        broken.restart()
        telemetry.wait(telemetry_named("provider.circuit_closed", adapter_id=broken_id), timeout=90)

        def all_steps() -> list[tuple[str, str]] | None:
            assert worker.alive(), worker.log_tail()
            found = rows(
                settings,
                "SELECT adapter_id::text, out_message_id FROM dripdrop.step_executions"
                " WHERE tenant_key = %s AND status = 'sent'",
                key,
            )
            return found if len(found) >= 2 * PROSPECTS else None

        sent = wait_for(all_steps, timeout=120, what="both steps of every prospect")
        assert len(sent) == 2 * PROSPECTS
        per_adapter = Counter(a for a, _ in sent)
        assert per_adapter == {adapters[0].id: PROSPECTS, broken_id: PROSPECTS}
        # Each held step exactly once at the server that was down.
        ids = Counter(m.header("Message-ID") for m in broken.messages)
        assert len(ids) == PROSPECTS and set(ids.values()) == {1}
        names = Counter(r["name"] for r in telemetry.poll())
        assert names["dispatch.failed"] == 0 and names["dispatch.skipped"] == 0
        assert names["dispatch.retry_scheduled"] >= 3  # deferred with back-off, not failed
        states = rows(
            settings,
            "SELECT state, count(*) FROM dripdrop.enrollments WHERE tenant_key = %s GROUP BY 1",
            key,
        )
        assert states == [("completed", PROSPECTS)]
        telemetry.close()
