"""Read the output topics for the audit (confluent-kafka) and load what PostgreSQL knows.

Reads ``dispatch``, ``dispatch-results``, ``message-events`` and ``telemetry`` from the start,
or between two record timestamps (``offsets_for_times``), up to the high watermark seen when
the replay started, with a manually assigned consumer (no group offsets are committed).
The checks themselves live in ``streams.audit.checks`` and do no I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from sqlalchemy import Connection

from streams.audit.checks import AuditInput, AuditReport, run_checks, sent_sends
from streams.codecs import CodecError, Codecs
from streams.db import queries
from streams.settings import Settings

TOPICS = ("dispatch", "dispatch-results", "message-events", "telemetry")
TIMEOUT_SECONDS = 10.0
STALL_SECONDS = 60.0
"""Give up when no record arrives for this long although offsets remain (broker gone)."""

Progress = Callable[[int, int], None]
"""Called with (records read so far, total records to read)."""


class ReplayError(Exception):
    """The topics could not be read (broker unreachable, stalled partition)."""

    code = "kafka"


@dataclass(frozen=True, slots=True)
class Span:
    """Offsets ``[start, end)`` of one partition to read."""

    topic: str
    partition: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Replayed:
    """Decoded records per short topic name, and how many could not be decoded."""

    records: Mapping[str, list[dict[str, Any]]]
    undecodable: int = 0


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def plan(
    consumer: Consumer,
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    topics: Sequence[str] = TOPICS,
) -> list[Span]:
    """The offset range of every partition of ``topics``, for ``[start, end)``."""
    names = [settings.topic(t) for t in topics]
    metadata = consumer.list_topics(timeout=TIMEOUT_SECONDS)
    spans: list[Span] = []
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            continue
        for partition in sorted(topic.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(name, partition), timeout=TIMEOUT_SECONDS
            )
            first = _offset_at(consumer, name, partition, start, default=low, high=high)
            last = _offset_at(consumer, name, partition, end, default=high, high=high)
            if last > first:
                spans.append(Span(name, partition, max(first, low), last))
    return spans


def _offset_at(
    consumer: Consumer, topic: str, partition: int, at: datetime | None, *, default: int, high: int
) -> int:
    if at is None:
        return default
    (found,) = consumer.offsets_for_times(
        [TopicPartition(topic, partition, _ms(at))], timeout=TIMEOUT_SECONDS
    )
    return high if found.offset < 0 else min(found.offset, high)


def read_topics(
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
    topics: Sequence[str] = TOPICS,
) -> Replayed:
    """Decode every record of ``topics`` (short names) in ``[start, end)`` (record timestamps).

    Raises:
        ReplayError: the broker is unreachable or a partition stops delivering.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"dripdrop-audit-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        spans = plan(consumer, settings, start=start, end=end, topics=topics)
        return _consume(consumer, settings, spans, progress)
    except KafkaException as exc:
        raise ReplayError(f"cannot read the topics: {exc.args[0]}") from exc
    finally:
        consumer.close()


def _consume(
    consumer: Consumer, settings: Settings, spans: Sequence[Span], progress: Progress | None
) -> Replayed:
    codecs = Codecs(settings)
    short = {settings.topic(t): t for t in TOPICS}
    records: dict[str, list[dict[str, Any]]] = {t: [] for t in TOPICS}
    ends = {(s.topic, s.partition): s.end for s in spans}
    total = sum(s.end - s.start for s in spans)
    done = 0
    undecodable = 0
    if progress:
        progress(0, total)
    if not spans:
        return Replayed(records)
    consumer.assign([TopicPartition(s.topic, s.partition, s.start) for s in spans])
    last_progress = time.monotonic()
    while ends:
        batch = consumer.consume(500, timeout=1.0)
        if not batch and time.monotonic() - last_progress > STALL_SECONDS:
            raise ReplayError(f"no records for {STALL_SECONDS:.0f}s; {len(ends)} partition(s) left")
        for msg in batch:
            topic, offset = msg.topic() or "", msg.offset() or 0
            key = (topic, msg.partition() or 0)
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's name
                    ends.pop(key, None)
                    continue
                raise ReplayError(f"{topic}[{key[1]}]: {error.str()}")
            end = ends.get(key)
            if end is None or offset >= end:
                ends.pop(key, None)
                continue
            last_progress = time.monotonic()
            done += 1
            try:
                decoded = codecs.for_topic(short[topic]).decode(msg.value() or b"")
                records[short[topic]].append(decoded)
            except CodecError:
                undecodable += 1
            if offset + 1 >= end:
                ends.pop(key, None)
        if progress and batch:
            progress(done, total)
    return Replayed(records, undecodable)


def audit_input(
    conn: Connection,
    replayed: Replayed,
    *,
    tenant_key: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> AuditInput:
    """Filter the records to ``tenant_key`` and add what PostgreSQL knows about them."""
    records = {
        topic: [r for r in items if tenant_key is None or r.get("tenant_key") == tenant_key]
        for topic, items in replayed.records.items()
    }
    commands, results = records["dispatch"], records["dispatch-results"]
    sends = sent_sends(commands, results)
    tenants = sorted(
        {r["tenant_key"] for items in records.values() for r in items if r.get("tenant_key")}
        | ({tenant_key} if tenant_key else set())
    )
    sent_ids = [r["step_execution_id"] for r in results if r.get("status") == "sent"]
    return AuditInput(
        commands=commands,
        results=results,
        events=records["message-events"],
        telemetry=records["telemetry"],
        adapters=queries.adapters_by_id(conn, {s.adapter_id for s in sends}),
        override_steps=queries.override_step_ids(conn, {s.step_id for s in sends}),
        unthreaded_steps=queries.unthreaded_step_ids(conn, {s.step_id for s in sends}),
        recorded_caps=queries.recorded_caps(conn, {s.adapter_id for s in sends}),
        executions=queries.executions_for_audit(
            conn, tenants=tenants, ids=sent_ids, sent_from=start, sent_to=end
        ),
    )


def run_replay(
    settings: Settings,
    conn: Connection,
    *,
    tenant_key: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Read the topics, load PostgreSQL, run every check."""
    replayed = read_topics(settings, start=start, end=end, progress=progress)
    report = run_checks(audit_input(conn, replayed, tenant_key=tenant_key, start=start, end=end))
    if replayed.undecodable:
        notes = (*report.notes, f"{replayed.undecodable} record(s) could not be decoded")
        report = AuditReport(report.records, report.sends, report.violations, notes)
    return report
