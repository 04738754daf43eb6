"""Codec round-trips for every topic in both wire formats, malformed input, partitioner."""

from __future__ import annotations

import io
import json
import random
import re
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from dripdrop_core.errors import RecordError
from streams.codecs import (
    Codec,
    CodecError,
    Codecs,
    config_key,
    murmur2,
    partition_for,
)
from streams.settings import TOPIC_NAMES, Settings

AT = datetime(2025, 3, 3, 9, 30, 15, 123000, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "topics.md"

EXAMPLES: dict[str, dict[str, Any]] = {
    "enrollments": {
        "event_id": "evt-1",
        "tenant_key": "acct_123",
        "occurred_at": AT,
        "command": "enroll",
        "enrollment_id": "enr-1",
        "sequence_id": "seq-1",
        "sequence_version_id": None,
        "subscriber_id": "sub-42",
        "recipient": "ada@example.com",
        "recipient_timezone": "Europe/Paris",
        "data": json.dumps({"first_name": "Ada", "company": {"name": "Analytical"}}),
        "new_adapter_id": None,
        "reason": None,
    },
    "inbound-messages": {
        "event_id": "evt-2",
        "tenant_key": "acct_123",
        "occurred_at": AT,
        "adapter_id": "adp-gmail-1",
        "message_id": "CAF=reply@mail.gmail.com",
        "in_reply_to": "0190f1a2@send.example.com",
        "references": ["0190f1a1@send.example.com", "0190f1a2@send.example.com"],
        "from": "ada@example.com",
        "to": "sales@send.example.com",
        "subject": "Re: quick question",
        "body_text": "Sounds good",
        "body_html": None,
        "headers": {"message-id": "<CAF=reply@mail.gmail.com>"},
        "received_at": AT,
        "intent": "ooo",
        "intent_data": {"return_at": "2025-03-10"},
    },
    "health-signals": {
        "event_id": "evt-3",
        "tenant_key": "acct_123",
        "occurred_at": AT,
        "kind": "bounce",
        "adapter_id": None,
        "provider_message_id": "prov-77",
        "message_id": None,
        "recipient": "ada@example.com",
        "health_state": None,
        "resting_until": None,
        "score": None,
        "source": "mailgun",
        "bounce_type": "hard",
        "reason": "550 5.1.1 user unknown",
        "enrollment_id": None,
    },
    "config": {
        "event_id": "outbox-9",
        "tenant_key": "acct_123",
        "occurred_at": AT,
        "entity_type": "pool",
        "entity_id": "pool-1",
        "deleted": False,
        "payload": json.dumps({"id": "pool-1", "tenant_key": "acct_123", "name": "sales_pool"}),
    },
    "dispatch": {
        "event_id": "se-1:1",
        "tenant_key": "acct_123",
        "step_execution_id": "se-1",
        "enrollment_id": "enr-1",
        "step_id": "step-2",
        "adapter_id": "adp-gmail-1",
        "channel": "email",
        "recipient": "ada@example.com",
        "from_address": "sales@send.example.com",
        "subject": "Following up",
        "body_text": "Hi Ada",
        "body_html": "<p>Hi Ada</p>",
        "headers": {
            "Message-ID": "<0190f1a2@send.example.com>",
            "In-Reply-To": "<0190f1a1@send.example.com>",
            "References": "<0190f1a1@send.example.com>",
        },
        "idempotency_key": "se-1",
        "attempt": 1,
        "decided_at": AT,
        "not_before": AT,
    },
    "dispatch-results": {
        "event_id": "se-1:1",
        "tenant_key": "acct_123",
        "step_execution_id": "se-1",
        "enrollment_id": "enr-1",
        "adapter_id": "adp-gmail-1",
        "attempt": 1,
        "status": "sent",
        "provider_message_id": "prov-77",
        "error": None,
        "retry_after_ms": None,
        "finished_at": AT,
    },
    "telemetry": {
        "event_id": "tel-1",
        "name": "dispatch.pool_exhausted",
        "tenant_key": "acct_123",
        "at": AT,
        "attributes": json.dumps({"pool_id": "pool-1", "evicted_adapter_ids": ["a", "b"]}),
    },
    "message-events": {
        "id": "me-1",
        "tenant_key": "acct_123",
        "enrollment_id": "enr-1",
        "step_execution_id": "se-1",
        "adapter_id": "adp-gmail-1",
        "event_type": "sent",
        "provider_message_id": "prov-77",
        "in_reply_to": None,
        "references": [],
        "data": "{}",
        "occurred_at": AT,
    },
    "dead-letter": {
        "source_topic": "dripdrop.inbound-messages",
        "partition": 3,
        "offset": 12345678901,
        "key": b"acct_123",
        "value": b"\x00\xff garbage",
        "reason": "malformed_avro",
        "detail": "dripdrop.inbound-messages: malformed Avro in 10 bytes",
        "failed_at": AT,
    },
}


@pytest.fixture(params=["schemaless", "confluent"])
def codecs(request: pytest.FixtureRequest) -> Codecs:
    if request.param == "schemaless":
        return Codecs()
    return Codecs("mock://codecs-test")


def test_examples_cover_every_topic() -> None:
    assert set(EXAMPLES) == set(TOPIC_NAMES)


@pytest.mark.parametrize("topic", TOPIC_NAMES)
def test_codec_example_record_round_trips(codecs: Codecs, topic: str) -> None:
    codec = codecs.for_topic(topic)
    data = codec.encode(EXAMPLES[topic])
    assert codec.decode(data) == EXAMPLES[topic]
    if codecs.wire_format == "confluent":
        assert data[0] == 0
    else:
        assert data[0] != 0 or topic == "dead-letter"


@pytest.mark.parametrize("topic", TOPIC_NAMES)
def test_codec_omitted_defaulted_fields_decode_to_defaults(topic: str) -> None:
    codec = Codecs().for_topic(topic)
    fields = json.loads(codec.schema.text)["fields"]
    minimal = {f["name"]: EXAMPLES[topic][f["name"]] for f in fields if "default" not in f}
    decoded = codec.decode(codec.encode(minimal))
    assert decoded == minimal | {f["name"]: f["default"] for f in fields if "default" in f}


def test_codecs_confluent_header_carries_registered_schema_id() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://header-test"})
    codec = Codecs(registry_client=client).for_topic("telemetry")
    data = codec.encode(EXAMPLES["telemetry"])
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert client.get_schema(schema_id).schema_str == codec.schema.text
    assert codec.subject == "dripdrop.telemetry-value"


def test_codecs_settings_give_prefix_and_registry() -> None:
    settings = Settings(topic_prefix="t1.", schema_registry_url="mock://settings-test")
    codecs = Codecs(settings)
    assert codecs.wire_format == "confluent"
    assert codecs.for_topic("dispatch").topic_name == "t1.dispatch"
    assert Codecs(Settings(schema_registry_url=None)).wire_format == "schemaless"


def test_codecs_unknown_topic_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no codec for topic 'ticks'"):
        Codecs().for_topic("ticks")


def test_codec_decode_uses_writer_schema_from_registry() -> None:
    """A record written with an older registered schema is read with ours (BACKWARD)."""
    client = SchemaRegistryClient.new_client({"url": "mock://evolution-test"})
    codec = Codecs(registry_client=client).for_topic("telemetry")
    old = json.loads(codec.schema.text)
    old["fields"] = [f for f in old["fields"] if f["name"] != "attributes"]
    old_id = client.register_schema(codec.subject, RegistrySchema(json.dumps(old), "AVRO"))
    body = io.BytesIO()
    old_record = {"event_id": "e", "name": "n", "tenant_key": "t", "at": AT}
    schemaless_writer(body, parse_schema(old, named_schemas={}), old_record)
    decoded = codec.decode(struct.pack(">bI", 0, old_id) + body.getvalue())
    assert decoded["attributes"] == "{}"


def _codec(wire_format: str, topic: str = "telemetry") -> Codec:
    return (Codecs() if wire_format == "schemaless" else Codecs("mock://bad")).for_topic(topic)


@pytest.mark.parametrize("wire_format", ["schemaless", "confluent"])
def test_codec_truncated_bytes_raise_malformed_avro(wire_format: str) -> None:
    codec = _codec(wire_format)
    data = codec.encode(EXAMPLES["telemetry"])
    with pytest.raises(CodecError, match="malformed Avro") as info:
        codec.decode(data[:-3])
    assert info.value.reason == "malformed_avro"
    assert isinstance(info.value, RecordError)
    assert "dripdrop.telemetry" in str(info.value)


@pytest.mark.parametrize("wire_format", ["schemaless", "confluent"])
def test_codec_trailing_bytes_raise_malformed_avro(wire_format: str) -> None:
    codec = _codec(wire_format)
    with pytest.raises(CodecError, match="trailing bytes") as info:
        codec.decode(codec.encode(EXAMPLES["telemetry"]) + b"\x00\x00")
    assert info.value.reason == "malformed_avro"


def test_codec_random_bytes_raise_codec_error() -> None:
    codec = _codec("schemaless", "inbound-messages")
    rng = random.Random(7)
    for _ in range(50):
        with pytest.raises(CodecError):
            codec.decode(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))))


_SCHEMALESS = Codecs()


@given(st.binary(max_size=200))
def test_codec_arbitrary_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    for topic in TOPIC_NAMES:
        try:
            record = _SCHEMALESS.for_topic(topic).decode(data)
        except CodecError:
            continue
        assert isinstance(record, dict)


@pytest.mark.parametrize("data", [b"", b"\x01\x00\x00\x00\x01\x02", b"\x00\x00\x00"])
def test_codec_wrong_magic_byte_raises(data: bytes) -> None:
    with pytest.raises(CodecError, match="Confluent wire format") as info:
        _codec("confluent").decode(data)
    assert info.value.reason == "wrong_magic_byte"


def test_codec_unknown_schema_id_raises() -> None:
    with pytest.raises(CodecError, match="schema id 4242 is unknown") as info:
        _codec("confluent").decode(struct.pack(">bI", 0, 4242) + b"\x02a")
    assert info.value.reason == "unknown_schema_id"


def test_codec_incompatible_writer_schema_raises() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://incompatible"})
    foreign = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    schema_id = client.register_schema("other-value", RegistrySchema(json.dumps(foreign), "AVRO"))
    codec = Codecs(registry_client=client).for_topic("telemetry")
    with pytest.raises(CodecError) as info:
        codec.decode(struct.pack(">bI", 0, schema_id) + b"\x02")
    assert info.value.reason == "schema_incompatible"


def test_codec_encode_invalid_value_raises_schema_invalid() -> None:
    codec = _codec("schemaless", "enrollments")
    bad = dict(EXAMPLES["enrollments"], command="subscribe")
    with pytest.raises(CodecError) as info:
        codec.encode(bad)
    assert info.value.reason == "schema_invalid"
    with pytest.raises(CodecError, match="does not match schema"):
        codec.encode({"event_id": "only"})


KAFKA_MURMUR2_VECTORS = {
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_MURMUR2_VECTORS.items())
def test_murmur2_kafka_vectors_match(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@given(st.text(max_size=64), st.integers(min_value=1, max_value=512))
def test_partition_for_matches_aiokafka(key: str, partitions: int) -> None:
    expected = (aiokafka_murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    assert partition_for(key, partitions) == expected


def test_partition_for_rejects_zero_partitions() -> None:
    with pytest.raises(ValueError, match="partitions must be > 0"):
        partition_for("acct_123", 0)


def test_config_key_joins_type_and_id() -> None:
    assert config_key("pool_member", "pool-1:adp-1") == "pool_member:pool-1:adp-1"


def _doc_examples() -> dict[str, dict[str, Any]]:
    text = DOCS.read_text(encoding="utf-8")
    found = re.findall(r"^## `([a-z-]+)`.*?```json\n(.*?)```", text, re.S | re.M)
    return {topic: json.loads(body) for topic, body in found}


@pytest.mark.parametrize("topic", TOPIC_NAMES)
def test_docs_topic_example_encodes(topic: str) -> None:
    example = _doc_examples()[topic]
    codec = Codecs().for_topic(topic)
    for f in json.loads(codec.schema.text)["fields"]:
        value = example.get(f["name"])
        if isinstance(value, str) and "timestamp-millis" in json.dumps(f["type"]):
            example[f["name"]] = datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif isinstance(value, str) and "bytes" in json.dumps(f["type"]):
            example[f["name"]] = value.encode("latin-1")
    assert codec.decode(codec.encode(example))
