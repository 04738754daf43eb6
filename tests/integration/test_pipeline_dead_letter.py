"""Malformed records on every input topic go to ``dead-letter``; the records around them work.

On one tenant's partition of each input topic (enrollments, inbound-messages,
health-signals, config) the test produces a valid record, then bad ones (random bytes,
valid Avro naming unknown ids or another tenant's ids, an unknown intent, a CR/LF
recipient), then a valid record again. Every bad record lands on ``dead-letter`` (Avro) with
its reason, original bytes and source topic/partition/offset; the valid ones leave their
rows in PostgreSQL; the worker stays up throughout.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from streams.api import DripDrop
from streams.codecs import Codecs, partition_for
from streams.settings import Settings
from tests.integration.robust_support import TopicReader, build_world, rows, wait_ready
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, producer, wait_for

# Another tenant's ids: unknown on this tenant's partition (its config lives elsewhere), or,
# when both tenants share the partition, refused as belonging to another tenant.
FOREIGN = ("not_found", "tenant_mismatch")


class Raw:
    """Produces raw bytes keyed by tenant and remembers (topic, offset) of each record."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codecs = Codecs(settings)
        self.producer = producer(settings)

    def send(self, topic: str, tenant: str, value: bytes) -> tuple[str, int, int, bytes]:
        (placed,) = self.send_many(topic, tenant, [value])
        return placed

    def send_many(
        self, topic: str, tenant: str, values: list[bytes]
    ) -> list[tuple[str, int, int, bytes]]:
        """Produced together (one flush), so a consumer likely reads them in one batch."""
        got: list[Any] = []
        for value in values:
            self.producer.produce(
                self.settings.topic(topic),
                key=tenant.encode(),
                value=value,
                on_delivery=lambda err, msg: got.append((err, msg)),
            )
        self.producer.flush(10)
        assert all(err is None for err, _ in got), got
        return [(m.topic(), m.partition(), m.offset(), m.value()) for _, m in got]

    def avro(self, topic: str, tenant: str, record: dict[str, Any]) -> tuple[str, int, int, bytes]:
        return self.send(topic, tenant, self.codecs.for_topic(topic).encode(record))


def enroll_record(tenant: str, sequence_id: str, recipient: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": tenant,
        "occurred_at": datetime.now(UTC),
        "command": "enroll",
        "enrollment_id": str(uuid.uuid4()),
        "sequence_id": sequence_id,
        "sequence_version_id": None,
        "subscriber_id": f"s-{uuid.uuid4().hex[:6]}",
        "recipient": recipient,
        "recipient_timezone": None,
        "data": '{"first_name": "X"}',
        "new_adapter_id": None,
        "reason": None,
    }


def inbound_record(tenant: str, adapter_id: str, intent: str, in_reply_to: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": tenant,
        "occurred_at": datetime.now(UTC),
        "adapter_id": adapter_id,
        "message_id": f"in-{uuid.uuid4()}@example.org",
        "in_reply_to": in_reply_to,
        "references": [],
        "from": "someone@example.org",
        "to": "sender0@example.org",
        "subject": "Re",
        "body_text": None,
        "body_html": None,
        "headers": {},
        "received_at": datetime.now(UTC),
        "intent": intent,
        "intent_data": {},
    }


def health_record(tenant: str, adapter_id: str, state: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": tenant,
        "occurred_at": datetime.now(UTC),
        "kind": "set_health",
        "adapter_id": adapter_id,
        "provider_message_id": None,
        "message_id": None,
        "recipient": None,
        "health_state": state,
        "resting_until": None,
        "score": 0.5,
        "source": "test",
        "bounce_type": None,
        "reason": None,
    }


def config_record(tenant: str, payload: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": tenant,
        "occurred_at": datetime.now(UTC),
        "entity_type": "adapter",
        "entity_id": str(uuid.uuid4()),
        "deleted": False,
        "payload": payload,
    }


def test_malformed_records_on_every_input_topic_are_dead_lettered_between_valid_ones(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    topics()
    run = settings.model_copy(update={"tick_interval_seconds": 0.1})
    tenant, other = f"dl-{uuid.uuid4().hex[:8]}", f"dlo-{uuid.uuid4().hex[:8]}"
    raw = Raw(run)
    bad: dict[str, tuple[str, int, int, bytes]] = {}
    with DripDrop(run) as dd:
        world = build_world(dd, smtp, tenant=tenant, caps=(1000,), steps=1)
        foreign = build_world(dd, smtp, tenant=other, caps=(1000,), steps=1)
        worker = worker_factory(run)
        wait_ready(worker)
        adapter = world.adapters[0].id
        seq = world.sequence.id

        # enrollments: valid, four bad ones, valid
        raw.avro("enrollments", tenant, enroll_record(tenant, seq, f"before@{tenant}.example"))
        bad["enroll_bytes"] = raw.send("enrollments", tenant, os.urandom(64))
        bad["enroll_unknown"] = raw.avro(
            "enrollments", tenant, enroll_record(tenant, str(uuid.uuid4()), "u@x.example")
        )
        bad["enroll_foreign"] = raw.avro(
            "enrollments", tenant, enroll_record(tenant, foreign.sequence.id, "f@x.example")
        )
        bad["enroll_crlf"] = raw.avro(
            "enrollments", tenant, enroll_record(tenant, seq, "v@x.example\r\nBcc: evil@x.example")
        )
        raw.avro("enrollments", tenant, enroll_record(tenant, seq, f"after@{tenant}.example"))

        def sent_to(recipient: str) -> str | None:
            found = rows(
                run,
                "SELECT out_message_id FROM dripdrop.step_executions"
                " WHERE tenant_key = %s AND recipient = %s AND status = 'sent'",
                tenant,
                recipient,
            )
            return found[0][0] if found else None

        first = wait_for(lambda: sent_to(f"before@{tenant}.example"), what="valid enroll before")
        wait_for(lambda: sent_to(f"after@{tenant}.example"), what="valid enroll after")

        # inbound-messages: bytes, unknown intent, another tenant's adapter, then a valid reply
        bad["inbound_bytes"] = raw.send("inbound-messages", tenant, os.urandom(40))
        bad["inbound_intent"] = raw.avro(
            "inbound-messages", tenant, inbound_record(tenant, adapter, "maybe-later", first)
        )
        bad["inbound_foreign"] = raw.avro(
            "inbound-messages",
            tenant,
            inbound_record(tenant, foreign.adapters[0].id, "reply", first),
        )
        raw.avro("inbound-messages", tenant, inbound_record(tenant, adapter, "reply", first))

        # health-signals: bytes, unknown adapter, another tenant's adapter, then a valid one
        bad["health_bytes"] = raw.send("health-signals", tenant, os.urandom(30))
        bad["health_unknown"] = raw.avro(
            "health-signals", tenant, health_record(tenant, str(uuid.uuid4()), "resting")
        )
        bad["health_foreign"] = raw.avro(
            "health-signals", tenant, health_record(tenant, foreign.adapters[0].id, "resting")
        )
        raw.avro("health-signals", tenant, health_record(tenant, adapter, "ramping"))

        # config: bytes and a payload that is not JSON, then valid config and an enrollment
        bad["config_bytes"] = raw.send("config", tenant, os.urandom(50))
        bad["config_payload"] = raw.avro("config", tenant, config_record(tenant, "{not json"))
        later = dd.create_sequence(tenant_key=tenant, key="later")
        version = dd.create_sequence_version(
            later.id,
            tenant_key=tenant,
            version=1,
            mode="outbound",
            config={"pool_id": world.pool.id},
        )
        dd.create_step(
            version.id,
            tenant_key=tenant,
            key="only",
            position=0,
            subject_template="Later",
            body_template="Step 0 for {{ first_name }}",
            delay_seconds=0,
        )
        raw.avro("enrollments", tenant, enroll_record(tenant, later.id, f"later@{tenant}.example"))

    wait_for(
        lambda: rows(
            run,
            "SELECT 1 FROM dripdrop.message_events WHERE tenant_key = %s"
            " AND event_type = 'replied'",
            tenant,
        ),
        what="the valid reply after the bad inbound records",
    )
    wait_for(
        lambda: rows(
            run,
            "SELECT 1 FROM dripdrop.channel_adapters WHERE id = %s AND health_state = 'ramping'",
            adapter,
        ),
        what="the valid health signal after the bad ones",
    )
    wait_for(lambda: sent_to(f"later@{tenant}.example"), what="config after the bad config")

    reader = TopicReader(run, "dead-letter")
    try:
        by_place = {
            (d["source_topic"], d["partition"], d["offset"]): d
            for d in reader.until(
                lambda got: len(got) >= len(bad), timeout=40, what=f"{len(bad)} dead letters"
            )
        }
    finally:
        reader.close()
    partition = partition_for(tenant, run.partitions)
    expected_reasons: dict[str, str | tuple[str, ...]] = {
        "enroll_bytes": "malformed_avro",
        "enroll_unknown": "not_found",
        "enroll_foreign": FOREIGN,
        "enroll_crlf": "invalid_recipient",
        "inbound_bytes": "malformed_avro",
        "inbound_intent": "unknown_intent",
        "inbound_foreign": FOREIGN,
        "health_bytes": "malformed_avro",
        "health_unknown": "not_found",
        "health_foreign": FOREIGN,
        "config_bytes": "malformed_avro",
    }
    for name, (topic, part, offset, value) in bad.items():
        assert part == partition
        letter = by_place.get((topic, part, offset))
        assert letter is not None, f"{name}: no dead letter for {topic}[{part}]@{offset}"
        assert letter["value"] == value, name
        assert letter["key"] == tenant.encode(), name
        assert letter["reason"], name
        if name in expected_reasons:
            want = expected_reasons[name]
            assert letter["reason"] in (want if isinstance(want, tuple) else (want,)), (
                name,
                letter["reason"],
            )
    assert len(by_place) == len(bad), sorted(d["reason"] for d in by_place.values())
    assert not rows(
        run,
        "SELECT 1 FROM dripdrop.enrollments WHERE tenant_key = %s AND recipient LIKE 'v@%%'",
        tenant,
    ), "the CR/LF recipient was never enrolled"
    assert worker.alive(), worker.log_tail()
    assert worker.stop() == 0, worker.log_tail()


def test_bad_sink_records_are_dead_lettered_and_the_records_around_them_written(
    settings: Settings,
    topics: Callable[..., list[str]],
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """The sink has its own consumer (``streams/batch_consumer.py``). In one batch: records
    that are not an object with a list of operations (``invalid_sink_record``), and ones
    PostgreSQL refuses for good (a malformed operation, a check constraint:
    ``sink_rejected``) are dead-lettered with their place; the good record among them is
    written, later records too, and a graceful stop commits past all of them."""
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    from streams.batch_consumer import consumer_group

    topics()
    tenant = f"dls-{uuid.uuid4().hex[:8]}"
    raw = Raw(settings)

    def suppression(recipient: str, reason: str) -> bytes:
        row = {"tenant_key": tenant, "recipient": recipient, "reason": reason, "at": "x"}
        return orjson.dumps({"ops": [{"op": "suppression", "row": row}]})

    with DripDrop(settings) as dd:
        world = build_world(dd, smtp, tenant=tenant, caps=(1000,), steps=1)
        worker = worker_factory(settings)
        wait_ready(worker)
        placed = raw.send_many(
            "sink",
            tenant,
            [
                b"\x00not json",
                b"[1, 2]",
                b'{"ops": null}',
                b"{}",
                suppression("refused@x.example", "not-a-reason"),
                suppression("kept@x.example", "unsubscribe"),
            ],
        )
        bad = dict(zip(("not_json", "array", "ops_null", "no_op", "check"), placed, strict=False))
        expected = {
            "not_json": "invalid_sink_record",
            "array": "invalid_sink_record",
            "ops_null": "invalid_sink_record",
            "no_op": "sink_rejected",
            "check": "sink_rejected",
        }
        raw.avro("enrollments", tenant, enroll_record(tenant, world.sequence.id, "ok@x.example"))
        wait_for(
            lambda: rows(
                settings,
                "SELECT 1 FROM dripdrop.step_executions"
                " WHERE tenant_key = %s AND recipient = 'ok@x.example' AND status = 'sent'",
                tenant,
            ),
            what="the enrollment after the bad sink records",
        )
    assert rows(
        settings,
        "SELECT 1 FROM dripdrop.suppressions WHERE tenant_key = %s AND recipient = %s",
        tenant,
        "kept@x.example",
    ), "the good record of the batch was written"
    reader = TopicReader(settings, "dead-letter")
    try:
        letters = reader.until(
            lambda got: sum(d["source_topic"] == settings.topic("sink") for d in got) >= len(bad),
            timeout=30,
            what=f"{len(bad)} sink dead letters",
        )
    finally:
        reader.close()
    by_place = {(d["source_topic"], d["partition"], d["offset"]): d for d in letters}
    for name, (topic, part, offset, value) in bad.items():
        letter = by_place[(topic, part, offset)]
        assert letter["reason"] == expected[name], (name, letter["reason"], letter["detail"])
        assert letter["value"] == value, name
    assert sum(d["source_topic"] == settings.topic("sink") for d in letters) == len(bad)
    assert worker.stop() == 0, worker.log_tail()

    partition, last = placed[-1][1], placed[-1][2]
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": consumer_group(settings, "sink"),
        }
    )
    try:
        (tp,) = probe.committed([TopicPartition(settings.topic("sink"), partition)], timeout=10)
    finally:
        probe.close()
    assert tp.offset > last, (tp.offset, last)
