"""Read the output topics for the audit (confluent-kafka) and load what PostgreSQL knows.

Reads ``dispatch``, ``dispatch-results``, ``message-events``, ``telemetry`` and ``enrollments``
from the start, or between two record timestamps (``offsets_for_times``), up to the high
watermark seen when the replay started, with a manually assigned consumer (no group offsets
are committed); ``dead-letter`` from the same start to its end, since a record's dead letter
may come after the range. The processor group's committed offsets on ``enrollments`` say
which commands it has finished (the completeness check skips the others). The checks
themselves live in ``streams.audit.checks`` (and the ``pacing``, ``sends`` and ``ledger``
modules it gathers) and do no I/O.
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

from streams.audit.checks import (
    AuditInput,
    AuditReport,
    Completeness,
    GapBasis,
    dead_letter_sources,
    run_checks,
    sent_sends,
)
from streams.codecs import CodecError, Codecs
from streams.db import queries
from streams.settings import Settings

TOPICS = (
    "dispatch",
    "dispatch-results",
    "message-events",
    "telemetry",
    "enrollments",
    "dead-letter",
)
OPEN_ENDED = frozenset({"dead-letter"})
"""Read to their end whatever ``--to`` says: a record's dead letter may be written later."""
POSITIONED = frozenset({"enrollments"})
"""Decoded records of these keep ``_partition`` and ``_offset`` (dead letters name them)."""
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
    committed: Mapping[int, int] | None = None
    """The processor group's committed offset per ``enrollments`` partition (-1: none);
    ``None`` when not read."""
    topic_prefix: str = ""
    sink_backlog: int = 0
    """Records the sink had not written when the processor's offsets were read."""


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
    """The offset range of every partition of ``topics``, for ``[start, end)``
    (``[start, high watermark)`` for ``OPEN_ENDED`` topics)."""
    names = [settings.topic(t) for t in topics]
    open_ended = {settings.topic(t) for t in OPEN_ENDED}
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
            until = None if name in open_ended else end
            last = _offset_at(consumer, name, partition, until, default=high, high=high)
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
        replayed = _consume(consumer, settings, spans, progress)
        if "enrollments" not in topics:
            return replayed
        committed = processed_offsets(settings)
        return Replayed(
            replayed.records,
            replayed.undecodable,
            committed,
            settings.topic_prefix,
            sink_backlog(settings),
        )
    except KafkaException as exc:
        raise ReplayError(f"cannot read the topics: {exc.args[0]}") from exc
    finally:
        consumer.close()


def group_offsets(settings: Settings, group: str, short: str) -> dict[int, tuple[int, int]]:
    """(committed offset, high watermark) per partition of topic ``short`` for ``group``
    (committed -1: none). ``committed()`` reads the offsets without joining the group."""
    topic = settings.topic(short)
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        meta = probe.list_topics(topic, timeout=TIMEOUT_SECONDS).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        out = {}
        for tp in probe.committed(tps, timeout=TIMEOUT_SECONDS):
            low, high = probe.get_watermark_offsets(tp, timeout=TIMEOUT_SECONDS)
            out[tp.partition] = (tp.offset if tp.offset >= 0 else -1, high if high >= low else low)
        return out
    finally:
        probe.close()


def processed_offsets(settings: Settings) -> dict[int, int]:
    """The offset the processor (the Faust group, ``app_id``) committed per ``enrollments``
    partition: every command before it is processed and its outputs acknowledged."""
    return {p: c for p, (c, _) in group_offsets(settings, settings.app_id, "enrollments").items()}


def sink_backlog(settings: Settings) -> int:
    """Records on ``sink`` its group (``{app_id}-sink``) has not committed: rows still on
    their way to PostgreSQL. Read after ``processed_offsets``, so it covers their outputs."""
    offsets = group_offsets(settings, f"{settings.app_id}-sink", "sink")
    return sum(max(0, high - max(committed, 0)) for committed, high in offsets.values())


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
                if short[topic] in POSITIONED:
                    decoded = {**decoded, "_partition": key[1], "_offset": offset}
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
    gap_basis: GapBasis = "decided",
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
    completeness = None
    if replayed.committed is not None:
        completeness = _completeness(
            conn, replayed, records, commands, results, log_complete=end is None
        )
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
        completeness=completeness,
        gap_basis=gap_basis,
    )


def _completeness(
    conn: Connection,
    replayed: Replayed,
    records: Mapping[str, list[dict[str, Any]]],
    commands: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    *,
    log_complete: bool,
) -> Completeness:
    """The processed enrollment commands of the scope and the rows they and the sends name."""
    committed = replayed.committed or {}
    processed = [
        c
        for c in records.get("enrollments", [])
        if c["_offset"] < committed.get(c["_partition"], -1)
    ]
    enrolls = [c for c in processed if c.get("command") == "enroll"]
    rows = queries.enrollments_by_id(conn, {c["enrollment_id"] for c in enrolls})
    missing = [c for c in enrolls if c["enrollment_id"] not in rows]
    identities = {
        (
            c["tenant_key"],
            c.get("sequence_id") or "",
            c.get("subscriber_id") or (c.get("recipient") or "").strip(),
        )
        for c in missing
    }
    dead_lettered, refused = dead_letter_sources(
        replayed.records.get("dead-letter", []),
        enrollments_topic=f"{replayed.topic_prefix}enrollments",
        sink_topic=f"{replayed.topic_prefix}sink",
    )
    named = {c["step_execution_id"] for c in commands} | {r["step_execution_id"] for r in results}
    return Completeness(
        enrollments=processed,
        unprocessed=len(records.get("enrollments", [])) - len(processed),
        rows=rows,
        live_rows=queries.live_enrollments(conn, identities),
        dead_lettered=dead_lettered,
        refused_rows=refused,
        execution_status=queries.execution_status(conn, named),
        log_complete=log_complete,
    )


def run_replay(
    settings: Settings,
    conn: Connection,
    *,
    tenant_key: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
    gap_basis: GapBasis = "decided",
) -> AuditReport:
    """Read the topics, load PostgreSQL, run every check (``gap_basis``: the time the
    ``min_gap`` check spaces, ``checks.check_gaps``)."""
    replayed = read_topics(settings, start=start, end=end, progress=progress)
    data = audit_input(
        conn, replayed, tenant_key=tenant_key, start=start, end=end, gap_basis=gap_basis
    )
    report = run_checks(data)
    if replayed.undecodable:
        notes = (*report.notes, f"{replayed.undecodable} record(s) could not be decoded")
        report = AuditReport(report.records, report.sends, report.violations, notes)
    if replayed.committed is not None and not any(o >= 0 for o in replayed.committed.values()):
        notes = (*report.notes, f"no offsets committed by group {settings.app_id} on enrollments")
        report = AuditReport(report.records, report.sends, report.violations, notes)
    if replayed.sink_backlog:
        notes = (
            *report.notes,
            f"the sink is {replayed.sink_backlog} record(s) behind: rows still on their way may"
            " be named lost_enrollment / enrollment_state; run again when it has caught up",
        )
        report = AuditReport(report.records, report.sends, report.violations, notes)
    return report
