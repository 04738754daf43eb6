"""Avro value codecs for every public topic (SPEC §3), and the Kafka key partitioner.

Schemas are read from ``schemas/<topic>.avsc`` and parsed once. Two wire formats:
schemaless Avro (default) and the Confluent wire format (``0x00`` + 4-byte big-endian
schema id + Avro body) when a schema registry is configured. Pure: no Kafka I/O here,
only the registry client. Library errors become ``CodecError`` (a ``RecordError``).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.types import Schema

from dripdrop_core.errors import RecordError
from streams.settings import TOPIC_NAMES, Settings

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
"""Where the ``.avsc`` files live (one per topic, named after the topic)."""

DEFAULT_TOPIC_PREFIX = "dripdrop."
MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")  # Confluent wire format: magic byte, schema id (big-endian)

CodecReason = Literal[
    "malformed_avro",  # bytes that do not decode as the topic's schema
    "wrong_magic_byte",  # registry mode, but no 0x00 + schema id header
    "unknown_schema_id",  # the registry does not know the header's schema id
    "schema_incompatible",  # the writer schema cannot be read with ours (not BACKWARD)
    "schema_invalid",  # a value that does not match the schema, or an unparseable schema
]
"""Dead-letter reason codes a codec can give (snake_case, style guide B2)."""

# What fastavro raises on bad bytes or bad values; translated at this boundary (B4).
_AVRO_ERRORS = (
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    OverflowError,
    AttributeError,
    struct.error,
)


class CodecError(RecordError):
    """A record that cannot be encoded or decoded; it belongs on the dead-letter topic.

    Attributes:
        reason: the ``CodecReason`` code, used as the dead-letter ``reason``.
        topic: the full topic name.
    """

    def __init__(self, message: str, *, reason: CodecReason, topic: str) -> None:
        super().__init__(f"{topic}: {message}")
        self.reason: CodecReason = reason
        self.topic = topic


class SchemaRegistryUnavailableError(RuntimeError):
    """The schema registry could not be reached or answered with an error (retry later)."""


def murmur2(data: bytes) -> int:
    """Return Kafka's murmur2 hash of ``data`` as a signed 32-bit int (``Utils.murmur2``)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """Return the partition Kafka's default (Java) partitioner picks for a string key.

    ``toPositive(murmur2(utf8(key))) % partitions``: the same as aiokafka/Faust and as
    librdkafka with ``partitioner=murmur2_random``.
    """
    if partitions <= 0:
        raise ValueError(f"partitions must be > 0, got {partitions}")
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def config_key(entity_type: str, entity_id: str) -> str:
    """Return the compacted ``config`` topic key of one entity: ``"{type}:{id}"``."""
    return f"{entity_type}:{entity_id}"


@dataclass(frozen=True, slots=True)
class TopicSchema:
    """One topic's value schema: the ``.avsc`` text (for the registry) and its parse."""

    topic: str
    text: str
    parsed: Schema


def load_schema(topic: str, *, schema_dir: Path = SCHEMA_DIR) -> TopicSchema:
    """Read and parse ``schemas/<topic>.avsc``.

    Raises:
        ValueError: ``topic`` has no schema file, or the file is not a valid schema.
    """
    path = schema_dir / f"{topic}.avsc"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = parse_schema(raw, named_schemas={})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot load schema {path}: {exc}") from exc
    return TopicSchema(topic=topic, text=json.dumps(raw, separators=(",", ":")), parsed=parsed)


@dataclass(slots=True)
class _Registry:
    """The registry client plus the caches that keep it off the hot path."""

    client: SchemaRegistryClient
    auto_register: bool = True
    writers: dict[int, Schema] = field(default_factory=dict)

    def schema_id(self, subject: str, schema_text: str) -> int:
        from confluent_kafka.schema_registry import Schema as RegistrySchema

        schema = RegistrySchema(schema_text, "AVRO")
        try:
            if self.auto_register:
                return int(self.client.register_schema(subject, schema))
            found = self.client.lookup_schema(subject, schema).schema_id
        except _registry_errors() as exc:
            raise SchemaRegistryUnavailableError(
                f"schema registry refused subject {subject}: {exc}"
            ) from exc
        if found is None:
            raise SchemaRegistryUnavailableError(f"schema registry gave no id for {subject}")
        return int(found)

    def writer_schema(self, schema_id: int, topic: str) -> Schema:
        cached = self.writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self.client.get_schema(schema_id)
        except _registry_errors() as exc:
            if getattr(exc, "http_status_code", None) == 404:
                raise CodecError(
                    f"schema id {schema_id} is unknown to the registry",
                    reason="unknown_schema_id",
                    topic=topic,
                ) from exc
            raise SchemaRegistryUnavailableError(
                f"schema registry failed for id {schema_id}: {exc}"
            ) from exc
        try:
            parsed = parse_schema(json.loads(registered.schema_str or ""), named_schemas={})
        except (ValueError, KeyError, TypeError) as exc:
            raise CodecError(
                f"registry schema id {schema_id} is not a valid Avro schema: {exc}",
                reason="schema_invalid",
                topic=topic,
            ) from exc
        self.writers[schema_id] = parsed
        return parsed


class Codec:
    """Encode and decode the values of one topic."""

    def __init__(
        self, schema: TopicSchema, *, topic_name: str, registry: _Registry | None = None
    ) -> None:
        self.schema = schema
        self.topic_name = topic_name
        self._registry = registry
        self._schema_id: int | None = None

    @property
    def subject(self) -> str:
        """The registry subject (TopicNameStrategy): ``<full topic>-value``."""
        return f"{self.topic_name}-value"

    def encode(self, value: Mapping[str, Any]) -> bytes:
        """Serialize one record.

        Raises:
            CodecError: ``schema_invalid`` when ``value`` does not match the schema.
            SchemaRegistryUnavailableError: registry mode and the registry failed.
        """
        buffer = io.BytesIO()
        if self._registry is not None:
            if self._schema_id is None:
                self._schema_id = self._registry.schema_id(self.subject, self.schema.text)
            buffer.write(_HEADER.pack(MAGIC_BYTE, self._schema_id))
        try:
            schemaless_writer(buffer, self.schema.parsed, dict(value))
        except _AVRO_ERRORS as exc:
            raise CodecError(
                f"value does not match schema {self.schema.topic}.avsc: {exc}",
                reason="schema_invalid",
                topic=self.topic_name,
            ) from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Deserialize one record; in registry mode the writer schema comes from its id.

        Raises:
            CodecError: ``malformed_avro``, ``wrong_magic_byte``, ``unknown_schema_id``,
                ``schema_incompatible`` or ``schema_invalid``.
            SchemaRegistryUnavailableError: registry mode and the registry failed.
        """
        writer = self.schema.parsed
        start = 0
        if self._registry is not None:
            if len(data) < _HEADER.size or data[0] != MAGIC_BYTE:
                raise CodecError(
                    "expected the Confluent wire format (magic byte 0x00 and a 4-byte schema "
                    f"id), got {len(data)} bytes starting with {data[:1].hex() or 'nothing'}",
                    reason="wrong_magic_byte",
                    topic=self.topic_name,
                )
            _, schema_id = _HEADER.unpack_from(data)
            writer = self._registry.writer_schema(schema_id, self.topic_name)
            start = _HEADER.size
        return self._read(data, start, writer)

    def _read(self, data: bytes, start: int, writer: Schema) -> dict[str, Any]:
        buffer = io.BytesIO(data)
        buffer.seek(start)
        reader = None if writer is self.schema.parsed else self.schema.parsed
        try:
            record = schemaless_reader(buffer, writer, reader)
        except SchemaResolutionError as exc:
            raise CodecError(
                f"writer schema cannot be read as {self.schema.topic}.avsc: {exc}",
                reason="schema_incompatible",
                topic=self.topic_name,
            ) from exc
        except _AVRO_ERRORS as exc:
            kind = type(exc).__name__
            raise CodecError(
                f"malformed Avro in {len(data)} bytes ({kind}: {exc or 'truncated'})",
                reason="malformed_avro",
                topic=self.topic_name,
            ) from exc
        if buffer.tell() != len(data):
            raise CodecError(
                f"malformed Avro: {len(data) - buffer.tell()} trailing bytes after the record",
                reason="malformed_avro",
                topic=self.topic_name,
            )
        if not isinstance(record, dict):
            raise CodecError(
                "decoded value is not a record", reason="malformed_avro", topic=self.topic_name
            )
        return record


class Codecs:
    """Every topic's codec, built once: ``Codecs(settings).for_topic("enrollments")``.

    Args:
        source: ``Settings`` (topic prefix and ``schema_registry_url``), a registry URL,
            or ``None`` for schemaless Avro.
        registry_client: a ready ``SchemaRegistryClient`` (overrides any URL); tests
            share one ``mock://`` client between a producer and a consumer side.
        topic_prefix: used when ``source`` is not a ``Settings``.
        auto_register: register our schemas on first encode; ``False`` only looks them up.
    """

    def __init__(
        self,
        source: Settings | str | None = None,
        *,
        registry_client: SchemaRegistryClient | None = None,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        auto_register: bool = True,
    ) -> None:
        url = source.schema_registry_url if isinstance(source, Settings) else source
        self.topic_prefix = source.topic_prefix if isinstance(source, Settings) else topic_prefix
        client = registry_client if registry_client is not None else _registry_client(url)
        registry = None if client is None else _Registry(client, auto_register=auto_register)
        self.wire_format: Literal["schemaless", "confluent"] = (
            "schemaless" if registry is None else "confluent"
        )
        self._codecs = {
            name: Codec(load_schema(name), topic_name=self.topic_prefix + name, registry=registry)
            for name in TOPIC_NAMES
        }

    def for_topic(self, name: str) -> Codec:
        """Return the codec of a public topic, by its short name (``"dispatch"``).

        Raises:
            KeyError: ``name`` is not one of ``TOPIC_NAMES``.
        """
        try:
            return self._codecs[name]
        except KeyError:
            raise KeyError(
                f"no codec for topic {name!r}; known: {', '.join(TOPIC_NAMES)}"
            ) from None


def _registry_client(url: str | None) -> SchemaRegistryClient | None:
    if not url:
        return None
    # Imported here so that schemaless mode needs no confluent-kafka[schemaregistry] extras.
    from confluent_kafka.schema_registry import SchemaRegistryClient

    # new_client() maps "mock://…" URLs to the in-process MockSchemaRegistryClient.
    return SchemaRegistryClient.new_client({"url": url})


def _registry_errors() -> tuple[type[Exception], ...]:
    """What the registry client raises: HTTP error answers and transport failures."""
    import httpx2
    from confluent_kafka.schema_registry import SchemaRegistryError

    return (SchemaRegistryError, httpx2.HTTPError, OSError)
