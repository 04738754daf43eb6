"""Pipeline throughput and reply-to-stop latency through one real worker (issue 5).

Run: ``.venv/bin/python -m benchmarks.pipeline_bench [--enrollments 20000] [--runs 3]``.

* Throughput: N enroll commands are produced onto ``enrollments`` (8 tenants, so every
  partition works) before the worker starts. The headline rate is **end to end**: N over
  the time from the worker's first output (the first enrollment processed) to the last
  send command on ``dispatch`` (Kafka timestamps), i.e. enrollment → pin → decision →
  PostgreSQL claim committed → send command published, for all N. The rate between the
  first and the last send command is printed too (the figure earlier versions reported);
  it is higher because Faust feeds the agents from one consumer, so with a backlog the
  processor's queue fills first and the sink starts late. Adapters use the
  in-process ``memory`` provider so the SMTP server is not part of this figure (the sender
  is measured on its own by ``benchmarks.sender_bench``); the sender agent still claims and
  records every row in PostgreSQL in the same worker.
* Reply-to-stop: replies to already-sent first steps are produced one at a time onto
  ``inbound-messages``; the latency is produce → the enrollment row is ``replied`` in
  PostgreSQL (the commit after which no later send can be claimed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer

from streams.admin import create_topics, delete_topics_with_prefix
from streams.api import DripDrop
from streams.codecs import Codecs
from streams.localrun import WorkerProcess
from streams.settings import Settings

TENANTS = 8


def author(dd: DripDrop, run: str) -> list[dict[str, str]]:
    """Per tenant: two memory-provider mailboxes in a pool, a two-step outbound sequence."""
    worlds = []
    for t in range(TENANTS):
        tenant = f"bench-{run}-{t}"
        pool = dd.create_adapter_pool(tenant_key=tenant, name="pool")
        for i in range(2):
            adapter = dd.create_channel_adapter(
                tenant_key=tenant,
                name=f"m{i}",
                provider="memory",
                from_address=f"m{i}@bench.example",
                health_state="active",
            )
            dd.add_pool_member(pool.id, tenant_key=tenant, adapter_id=adapter.id)
        sequence = dd.create_sequence(tenant_key=tenant, key="bench")
        version = dd.create_sequence_version(
            sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
        )
        for position, delay in enumerate((0, 30 * 86400)):
            dd.create_step(
                version.id,
                tenant_key=tenant,
                key=f"s{position}",
                position=position,
                delay_seconds=delay,
                subject_template="Hello {{ name }}",
                body_template="Hi {{ name }}",
            )
        worlds.append({"tenant": tenant, "sequence_id": sequence.id, "adapter": adapter.id})
    return worlds


def produce_enrollments(settings: Settings, worlds: list[dict[str, str]], n: int) -> None:
    codec = Codecs(settings).for_topic("enrollments")
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
        }
    )
    now = datetime.now(UTC)
    for i in range(n):
        world = worlds[i % len(worlds)]
        value = codec.encode(
            {
                "event_id": str(uuid.uuid4()),
                "tenant_key": world["tenant"],
                "occurred_at": now,
                "command": "enroll",
                "enrollment_id": str(uuid.uuid4()),
                "sequence_id": world["sequence_id"],
                "subscriber_id": f"s{i}",
                "recipient": f"p{i}@example.org",
                "data": json.dumps({"name": f"P{i}"}),
            }
        )
        producer.produce(settings.topic("enrollments"), key=world["tenant"].encode(), value=value)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)


def dispatch_span(
    settings: Settings, n: int, timeout: float, topic: str = "dispatch"
) -> tuple[int, int, list[dict[str, Any]]]:
    """Consume ``topic`` until n records; return the first and last timestamps (ms) and
    the first records."""
    codec = Codecs(settings).for_topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic(topic)])
    stamps: list[int] = []
    commands: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < n and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    stamps.append(msg.timestamp()[1])
                    if len(commands) < 200:
                        value = msg.value()
                        assert value is not None, f"a tombstone on {topic}"
                        commands.append(codec.decode(value))
    finally:
        consumer.close()
    if len(stamps) < n:
        raise RuntimeError(f"only {len(stamps)} of {n} {topic} records within {timeout:.0f}s")
    return min(stamps), max(stamps), commands


def first_timestamp(settings: Settings, name: str) -> int:
    """The earliest record timestamp (ms) on a topic: when the worker started producing."""
    from confluent_kafka import TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"bench-{uuid.uuid4()}"}
    )
    try:
        first = []
        for p in range(settings.partitions):
            consumer.assign([TopicPartition(settings.topic(name), p, 0)])
            msg = consumer.poll(5)
            if msg is not None and msg.error() is None:
                first.append(msg.timestamp()[1])
        if not first:
            raise RuntimeError(f"no record on {settings.topic(name)}: did the worker start?")
        return min(first)
    finally:
        consumer.close()


def wait_idle(settings: Settings, timeout: float = 300.0) -> None:
    """Wait until the worker has consumed everything (no backlog): replies are then timed
    on an idle pipeline, as a reply to a mail sent minutes or days earlier would be."""
    from confluent_kafka import TopicPartition

    from streams.batch_consumer import consumer_group

    groups = {
        settings.app_id: [
            "enrollments",
            "inbound-messages",
            "health-signals",
            "config",
            "dispatch-results",
            "sink-feedback",
        ],
        consumer_group(settings, "sink"): ["sink"],
        consumer_group(settings, "sender"): ["dispatch"],
    }
    deadline = time.monotonic() + timeout
    for group, names in groups.items():
        probe = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
            }
        )
        tps = [
            TopicPartition(settings.topic(n), p) for n in names for p in range(settings.partitions)
        ]
        try:
            while True:
                lag = 0
                for tp in probe.committed(tps, timeout=10):
                    high = probe.get_watermark_offsets(tp, timeout=10)[1]
                    lag += max(0, high - max(tp.offset, 0))
                if lag == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not catch up")
                time.sleep(0.5)
        finally:
            probe.close()


def reply_latencies(
    settings: Settings,
    commands: list[dict[str, Any]],
    worlds: list[dict[str, str]],
    replies: int,
    gap: float | None = None,
) -> list[float]:
    """Reply to ``commands`` and time each until its enrollment is ``replied``: one at a
    time, or (``gap``) produced ``gap`` seconds apart and awaited together."""
    codec = Codecs(settings).for_topic("inbound-messages")
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 0,
        }
    )
    latencies = []
    pending: dict[str, float] = {}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for command in commands[:replies]:
            value = codec.encode(
                {
                    "event_id": str(uuid.uuid4()),
                    "tenant_key": command["tenant_key"],
                    "occurred_at": datetime.now(UTC),
                    "adapter_id": command["adapter_id"],
                    "message_id": f"<r-{uuid.uuid4()}@example.org>",
                    "in_reply_to": command["headers"]["Message-ID"],
                    "references": [],
                    "from": command["recipient"],
                    "to": "m@bench.example",
                    "subject": "Re",
                    "headers": {},
                    "received_at": datetime.now(UTC),
                    "intent": "reply",
                }
            )
            started = time.perf_counter()
            producer.produce(
                settings.topic("inbound-messages"), key=command["tenant_key"].encode(), value=value
            )
            producer.flush(10)
            if gap is not None:
                pending[command["enrollment_id"]] = started
                time.sleep(gap)
                continue
            while True:
                row = conn.execute(
                    "SELECT state FROM dripdrop.enrollments WHERE id = %s",
                    (command["enrollment_id"],),
                ).fetchone()
                if row and row[0] == "replied":
                    break
                if time.perf_counter() - started > 30:
                    raise RuntimeError("reply not applied within 30 s")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - started)
        deadline = time.perf_counter() + 120
        while pending and time.perf_counter() < deadline:
            done = conn.execute(
                "SELECT id::text FROM dripdrop.enrollments WHERE id = ANY(%s)"
                " AND state = 'replied'",
                (list(pending),),
            ).fetchall()
            now = time.perf_counter()
            for (eid,) in done:
                latencies.append(now - pending.pop(eid))
            time.sleep(0.005)
        if pending:
            raise RuntimeError(f"{len(pending)} replies not applied within 120 s")
    return latencies


def replies_under_load(
    settings: Settings, worlds: list[dict[str, str]], replies: int, out: list[float]
) -> None:
    """While the worker still has a backlog: reply to the first ``replies`` send commands
    as they appear (an auto-reply comes back within seconds), 50 ms apart, and time each
    reply to its enrollment row ``replied``. Runs on its own thread; fills ``out``."""
    codec = Codecs(settings).for_topic("dispatch")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic("dispatch")])
    commands: list[dict[str, Any]] = []
    try:
        while len(commands) < replies:
            for msg in consumer.consume(replies - len(commands), 0.5):
                if msg.error() is None:
                    value = msg.value()
                    assert value is not None, "a tombstone on dispatch"
                    commands.append(codec.decode(value))
    finally:
        consumer.close()
    out.extend(reply_latencies(settings, commands, worlds, replies, gap=0.05))


CLEANUP_ORDER = (
    "message_events",
    "step_executions",
    "enrollments",
    "steps",
    "sequence_versions",
    "sequences",
    "adapter_pool_members",
    "adapter_pools",
    "adapter_health_transitions",
    "adapter_day_counters",
    "suppressions",
    "outbox",
    "channel_adapters",
)


def forget_run(settings: Settings, run: str) -> None:
    """Delete the run's rows: every run adds ~N enrollments and executions, and a ledger
    grown to millions of rows by earlier runs made later runs measurably slower."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        scoped = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'dripdrop' AND column_name = 'tenant_key'"
            ).fetchall()
        }
        for table in CLEANUP_ORDER:
            if table in scoped:
                conn.execute(
                    f"DELETE FROM dripdrop.{table} WHERE tenant_key LIKE %s",  # noqa: S608
                    (f"bench-{run}-%",),
                )


def one_run(
    base: Settings, n: int, replies: int, loaded: int = 0
) -> tuple[float, float, float, list[float], list[float]]:
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="dripdrop-bench-"))
    settings = base.model_copy(
        update={
            "topic_prefix": f"bench{run}.",
            "app_id": f"bench-{run}",
            "data_dir": str(tmp / "data"),
        }
    )
    create_topics(settings)
    try:
        with DripDrop(settings) as dd:
            worlds = author(dd, run)
        produce_enrollments(settings, worlds, n)
        worker = WorkerProcess(settings, tmp / "worker.log")
        under_load: list[float] = []
        loader = threading.Thread(
            target=replies_under_load, args=(settings, worlds, loaded, under_load), daemon=True
        )
        if loaded:
            loader.start()
        try:
            first, last, commands = dispatch_span(settings, n, timeout=max(120.0, n / 50))
            # The worker's first output for the first enrollment it processed.
            started = first_timestamp(settings, "telemetry")
            # Every send delivered (memory provider) and its result published.
            _, delivered, _ = dispatch_span(
                settings, n, timeout=max(120.0, n / 50), topic="dispatch-results"
            )
            if loaded:
                loader.join(180)
            latencies: list[float] = []
            if replies:
                wait_idle(settings)
                latencies = reply_latencies(settings, commands, worlds, replies)
        finally:
            worker.stop()
        return (
            n / ((last - started) / 1000),
            (n - 1) / ((last - first) / 1000),
            n / ((delivered - started) / 1000),
            latencies,
            under_load,
        )
    finally:
        delete_topics_with_prefix(settings)
        forget_run(settings, run)


def main() -> None:
    parser = argparse.ArgumentParser(description="pipeline throughput and reply latency")
    parser.add_argument("--enrollments", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replies", type=int, default=100)
    parser.add_argument(
        "--replies-under-load",
        type=int,
        default=0,
        help="also reply to this many of the first sends while the backlog is processed",
    )
    args = parser.parse_args()
    rates, spans, sent, latencies, loaded = [], [], [], [], []
    for i in range(args.runs):
        rate, span, done, lat, under = one_run(
            Settings(),
            args.enrollments,
            args.replies if i == 0 else 0,
            args.replies_under_load if i == 0 else 0,
        )
        loaded.extend(under)
        rates.append(rate)
        spans.append(span)
        sent.append(done)
        latencies.extend(lat)
        print(
            f"run {i + 1}: {rate:,.0f} enrollments/s end to end"
            f" (first enrollment processed -> last send command committed);"
            f" {span:,.0f}/s between the first and the last send command;"
            f" {done:,.0f}/s to the last send delivered",
            flush=True,
        )
    print(
        f"median over {args.runs} runs: {statistics.median(rates):,.0f} enrollments/s end to end,"
        f" {statistics.median(spans):,.0f}/s between first and last send command,"
        f" {statistics.median(sent):,.0f}/s to the last send delivered"
    )
    for what, values in (("", latencies), (" during the backlog", loaded)):
        if values:
            q = statistics.quantiles(values, n=100, method="inclusive")
            print(
                f"reply-to-stop{what} over {len(values)} replies: p50 {q[49] * 1000:.0f} ms, "
                f"p99 {q[98] * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
