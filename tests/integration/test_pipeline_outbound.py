"""The outbound pipeline end to end: API → Kafka → worker (subprocess) → PostgreSQL → SMTP.

Real Kafka broker, real PostgreSQL, real SMTP server (aiosmtpd), worker as a subprocess.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from streams.api import DripDrop
from streams.codecs import Codecs
from streams.settings import Settings
from tests.integration.pipeline_support import rows, wire
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for


def build_outbound(
    dd: DripDrop,
    smtp: SmtpSink,
    *,
    tenant: str,
    steps: int = 3,
    override_step: int | None = None,
    pool_policy: str = "reassign",
    adapters: int = 1,
    weights: tuple[int, ...] = (1,),
    adapter_fields: dict[str, Any] | None = None,
    delays: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    made = [
        dd.create_channel_adapter(
            tenant_key=tenant,
            name=f"mbox-{i}",
            provider="smtp",
            from_address=f"sender{i}@mbox{i}.example",
            health_state="active",
            config=smtp.adapter_config(),
            **(adapter_fields or {}),
        )
        for i in range(adapters)
    ]
    pool = dd.create_adapter_pool(tenant_key=tenant, name="sales", on_pin_unavailable=pool_policy)
    for adapter, weight in zip(made, weights, strict=True):
        dd.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id, weight=weight)
    override = dd.create_channel_adapter(
        tenant_key=tenant,
        name="override",
        provider="smtp",
        from_address="news@override.example",
        health_state="active",
        config=smtp.adapter_config(),
    )
    sequence = dd.create_sequence(tenant_key=tenant, key="cold")
    version = dd.create_sequence_version(
        sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    created = []
    for position in range(steps):
        created.append(
            dd.create_step(
                version.id,
                tenant_key=tenant,
                key=f"s{position}",
                position=position,
                subject_template="Hello {{ first_name }}" if position == 0 else "Re: Hello",
                body_template=f"Step {position} for {{{{ first_name }}}}",
                delay_seconds=delays[position] if delays else 0,
                adapter_override_id=override.id if position == override_step else None,
            )
        )
    return {
        "adapters": made,
        "pool": pool,
        "sequence": sequence,
        "version": version,
        "steps": created,
        "override": override,
    }


def consume(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60,
) -> list[dict[str, Any]]:
    codec = Codecs(settings).for_topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic(topic)])
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                value = msg.value()
                assert value is not None, f"a tombstone on {topic}"
                got.append(codec.decode(value))
    finally:
        consumer.close()
    return got


def test_outbound_sequence_threads_through_pin_and_override_and_reply_stops(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    tenant = f"acct-{uuid.uuid4().hex[:8]}"
    world = build_outbound(client, smtp, tenant=tenant, steps=4, override_step=2)
    worker = worker_factory()
    accepted = client.enroll(
        tenant_key=tenant,
        sequence_id=world["sequence"].id,
        subscriber_id="p-1",
        recipient="prospect@example.org",
        data={"first_name": "Ada"},
    )
    enrollment_id = accepted.enrollment_id

    def sent() -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = rows(
            settings,
            "SELECT step_id, out_message_id, payload->'headers', adapter_id"
            " FROM dripdrop.step_executions WHERE enrollment_id = %s AND status = 'sent'"
            " ORDER BY inserted_at",
            enrollment_id,
        )
        return found if len(found) == 4 else None

    chain = wait_for(sent, timeout=120, what="four sent step executions")
    ids = [wire(r[1]) for r in chain]
    headers = [r[2] for r in chain]
    pinned = world["adapters"][0].id
    assert [str(r[3]) for r in chain] == [pinned, pinned, world["override"].id, pinned]
    assert headers[0] == {"Message-ID": ids[0]}
    assert headers[1] == {"Message-ID": ids[1], "In-Reply-To": ids[0], "References": ids[0]}
    assert headers[2] == {"Message-ID": ids[2]}  # override: a thread of its own
    assert headers[3] == {
        "Message-ID": ids[3],
        "In-Reply-To": ids[1],
        "References": f"{ids[0]} {ids[1]}",
    }
    received = {
        m.header("Message-ID"): m
        for m in wait_for(
            lambda: smtp.messages if len(smtp.messages) >= 4 else None, what="4 SMTP messages"
        )
    }
    assert set(received) == set(ids)
    assert received[ids[3]].header("In-Reply-To") == ids[1]
    assert received[ids[3]].header("References") == f"{ids[0]} {ids[1]}"
    assert received[ids[0]].header("Subject") == "Hello Ada"
    assert worker.stop() == 0, worker.log_tail()


def test_reply_stops_enrollment_and_duplicate_reply_has_no_effect(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    tenant = f"acct-{uuid.uuid4().hex[:8]}"
    world = build_outbound(client, smtp, tenant=tenant, steps=2, delays=(0, 3600))
    worker = worker_factory()
    accepted = client.enroll(
        tenant_key=tenant,
        sequence_id=world["sequence"].id,
        subscriber_id="p-2",
        recipient="replier@example.org",
        data={"first_name": "Bo"},
    )
    first = wait_for(
        lambda: rows(
            settings,
            "SELECT out_message_id FROM dripdrop.step_executions"
            " WHERE enrollment_id = %s AND status = 'sent'",
            accepted.enrollment_id,
        ),
        what="first send",
    )
    message = {
        "message_id": f"<reply-{uuid.uuid4()}@example.org>",
        "in_reply_to": f"  {first[0][0]} ",
        "from": "replier@example.org",
        "to": "sender0@mbox0.example",
        "subject": "Re: Hello",
        "intent": "reply",
    }
    client.ingest_inbound_message(world["adapters"][0].id, message, tenant_key=tenant)
    client.ingest_inbound_message(world["adapters"][0].id, message, tenant_key=tenant)

    def state() -> str | None:
        found = rows(
            settings, "SELECT state FROM dripdrop.enrollments WHERE id = %s", accepted.enrollment_id
        )
        return found[0][0] if found and found[0][0] == "replied" else None

    assert wait_for(state, what="enrollment replied") == "replied"
    telemetry = consume(
        settings, "telemetry", until=lambda got: any(t["name"] == "ingest.duplicate" for t in got)
    )
    names = [t["name"] for t in telemetry]
    assert names.count("ingest.inbound_message") == 1
    assert "ingest.duplicate" in names
    sent_rows = rows(
        settings,
        "SELECT count(*) FROM dripdrop.step_executions WHERE enrollment_id = %s",
        accepted.enrollment_id,
    )
    assert sent_rows[0][0] == 1
    assert worker.stop() == 0, worker.log_tail()
