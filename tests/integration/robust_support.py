"""Helpers for the robustness tests (crash, rebalance, dead letters): worlds, load, invariants.

The invariants are checked against what really happened, not against the worker's view:
the SMTP sink's received messages and the PostgreSQL ledger (``step_executions``,
``adapter_day_counters``, ``enrollments``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import crashpoints
from streams.api import DripDrop
from streams.codecs import Codecs
from streams.pipeline import EXIT_SKIPPED_INPUT
from streams.settings import Settings
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

READY = "[^Worker]: Ready"
STEP_BODY = re.compile(r"Step (\d+) for ")


def rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def scaled(settings: Settings, *, day_seconds: float, **extra: Any) -> Settings:
    """Settings whose simulated clock starts at a UTC midnight and runs a day per
    ``day_seconds`` real seconds; ticks are frequent so deferred steps fire promptly."""
    now = time.time()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return settings.model_copy(
        update={
            "clock_scale": 86400 / day_seconds,
            "clock_epoch": midnight.timestamp() + 86400,  # tomorrow 00:00: a fresh day
            "clock_origin": now,
            "tick_interval_seconds": 0.2,
            **extra,
        }
    )


def wait_ready(worker: WorkerProcess, *, times: int = 1, timeout: float = 45.0) -> None:
    """Poll the worker's log until Faust reported ``Ready`` ``times`` times (after recovery)."""

    def ready() -> bool:
        assert worker.alive(), worker.log_tail()
        return worker.log_path.read_text(errors="replace").count(READY) >= times

    wait_for(ready, timeout=timeout, interval=0.1, what=f"worker ready x{times}")


@dataclass
class World:
    tenant: str
    adapters: list[Any]
    caps: dict[str, int]
    pool: Any
    sequence: Any
    version: Any
    steps: list[Any]


def build_world(
    dd: DripDrop,
    smtp: SmtpSink,
    *,
    tenant: str,
    caps: Iterable[int],
    steps: int = 3,
    delays: tuple[int, ...] | None = None,
) -> World:
    """One tenant: capped mailboxes (weight = cap) in a ``reassign`` pool, an outbound
    sequence of ``steps`` steps (body ``Step <position> for <name>``)."""
    adapters = []
    for i, cap in enumerate(caps):
        adapters.append(
            dd.create_channel_adapter(
                tenant_key=tenant,
                name=f"mbox-{i}",
                provider="smtp",
                from_address=f"sender{i}@{tenant}.example",
                health_state="active",
                daily_cap=cap,
                config=smtp.adapter_config(),
            )
        )
    pool = dd.create_adapter_pool(tenant_key=tenant, name="sales", on_pin_unavailable="reassign")
    adapter_caps: dict[str, int] = {}
    for adapter in adapters:
        assert adapter.daily_cap is not None, "created with a daily cap above"
        adapter_caps[adapter.id] = adapter.daily_cap
        dd.add_pool_member(
            pool.id, tenant_key=tenant, adapter_id=adapter.id, weight=adapter.daily_cap
        )
    sequence = dd.create_sequence(tenant_key=tenant, key="cold")
    version = dd.create_sequence_version(
        sequence.id, tenant_key=tenant, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    made = [
        dd.create_step(
            version.id,
            tenant_key=tenant,
            key=f"s{position}",
            position=position,
            subject_template="Hello {{ first_name }}" if position == 0 else "Re: Hello",
            body_template=f"Step {position} for {{{{ first_name }}}}",
            delay_seconds=delays[position] if delays else 0,
        )
        for position in range(steps)
    ]
    return World(
        tenant=tenant,
        adapters=adapters,
        caps=adapter_caps,
        pool=pool,
        sequence=sequence,
        version=version,
        steps=made,
    )


def enroll_many(dd: DripDrop, world: World, count: int, *, start: int = 0) -> list[str]:
    return [
        dd.enroll(
            tenant_key=world.tenant,
            sequence_id=world.sequence.id,
            subscriber_id=f"p-{i}",
            recipient=f"p{i}@{world.tenant}.example",
            data={"first_name": f"P{i}"},
        ).enrollment_id
        or ""
        for i in range(start, start + count)
    ]


# ---------------------------------------------------------------- invariants


def tenant_messages(smtp: SmtpSink, world: World) -> list[Any]:
    domains = {a.from_address for a in world.adapters}
    return [m for m in smtp.messages if m.mail_from in domains]


def finished(settings: Settings, world: World, expected: int) -> bool:
    """Every enrollment of the tenant is in PostgreSQL and no longer active."""
    states = rows(
        settings,
        "SELECT state, count(*) FROM dripdrop.enrollments WHERE tenant_key = %s GROUP BY state",
        world.tenant,
    )
    by_state = dict(states)
    return sum(by_state.values()) == expected and not by_state.get("active")


def resolve_ambiguous(dd: DripDrop, smtp: SmtpSink, world: World) -> int:
    """Settle the tenant's ambiguous sends as an operator would (docs/operations.md).

    An ambiguous send holds its enrollment (issue 11), so a run with a crash mid-send only
    finishes once they are resolved: ``sent`` when the SMTP server has the Message-ID, else
    ``not sent`` (re-issued once with the same Message-ID). Call it once the restarted
    worker found them (seconds after the kill): the server's sessions that the kill cut are
    over by then, so "received" is final. Returns how many were settled.
    """
    # Listed ids are bare, as stored (SPEC §8); the server saw the wire form.
    received = {
        str(m.header("Message-ID")).strip().strip("<>") for m in tenant_messages(smtp, world)
    }
    held = dd.list_ambiguous_sends(tenant_key=world.tenant)
    for send in held:
        dd.resolve_ambiguous_send(
            send.step_execution_id, tenant_key=world.tenant, sent=send.message_id in received
        )
    return len(held)


def assert_exactly_once(settings: Settings, smtp: SmtpSink, world: World) -> dict[str, Any]:
    """Nothing sent twice, nothing lost, no cap exceeded; returns a summary for messages.

    * every SMTP message's Message-ID is unique and is the ``out_message_id`` of a ledger
      row of this (enrollment, step); at most one message per (recipient, step);
    * every enrollment completed, with one ledger row per step: ``sent`` (delivered once)
      or ``ambiguous`` (interrupted mid-send: then it may have arrived at most once);
    * per adapter and local day, rows ≤ cap and ``adapter_day_counters.sent`` = rows.
    """
    messages = tenant_messages(smtp, world)
    # The ledger stores ids bare (SPEC §8); the SMTP server saw the wire form.
    ids = Counter(str(m.header("Message-ID")).strip().strip("<>") for m in messages)
    twice = {k: n for k, n in ids.items() if n > 1}
    assert not twice, f"Message-IDs received more than once: {twice}"
    per_step = Counter(
        (m.rcpt_tos[0], int(STEP_BODY.search(m.message.get_content()).group(1)))  # type: ignore[union-attr]
        for m in messages
    )
    doubled = {k: n for k, n in per_step.items() if n > 1}
    assert not doubled, f"(recipient, step) delivered more than once: {doubled}"

    ledger = rows(
        settings,
        "SELECT x.enrollment_id::text, s.position, x.status, x.out_message_id,"
        " x.adapter_id::text, e.recipient"
        " FROM dripdrop.step_executions x JOIN dripdrop.steps s ON s.id = x.step_id"
        " JOIN dripdrop.enrollments e ON e.id = x.enrollment_id WHERE x.tenant_key = %s",
        world.tenant,
    )
    by_message = {r[3]: r for r in ledger}
    strangers = [k for k in ids if k not in by_message]
    assert not strangers, f"SMTP messages whose Message-ID is not in the ledger: {strangers[:5]}"
    for mid in ids:
        _, position, status, _, _, recipient = by_message[mid]
        assert status in ("sent", "ambiguous"), (mid, status)
        assert per_step[(recipient, position)] == 1
    statuses = Counter(r[2] for r in ledger)
    assert set(statuses) <= {"sent", "ambiguous"}, f"unexpected ledger statuses {statuses}"
    sent_ids = {r[3] for r in ledger if r[2] == "sent"}
    missing = sent_ids - set(ids)
    assert not missing, f"ledger rows 'sent' that never arrived: {sorted(missing)[:5]}"
    per_enrollment = Counter(r[0] for r in ledger)
    positions = Counter((r[0], r[1]) for r in ledger)
    assert max(positions.values()) == 1
    enrollments = dict(
        rows(
            settings,
            "SELECT id::text, state FROM dripdrop.enrollments WHERE tenant_key = %s",
            world.tenant,
        )
    )
    steps = len(world.steps)
    incomplete = {
        k: (enrollments[k], per_enrollment.get(k, 0))
        for k in enrollments
        if enrollments[k] != "completed" or per_enrollment.get(k, 0) != steps
    }
    assert not incomplete, f"enrollments not completed with {steps} steps: {incomplete}"

    day_rows = rows(
        settings,
        "SELECT x.adapter_id::text, (x.scheduled_for AT TIME ZONE 'UTC')::date, count(*),"
        " max(c.sent) FROM dripdrop.step_executions x"
        " JOIN dripdrop.adapter_day_counters c ON c.adapter_id = x.adapter_id"
        "  AND c.local_day = (x.scheduled_for AT TIME ZONE 'UTC')::date"
        " WHERE x.tenant_key = %s GROUP BY 1, 2 ORDER BY 2, 1",
        world.tenant,
    )
    for adapter_id, day, count, counter in day_rows:
        assert count <= world.caps[adapter_id], f"{adapter_id} on {day}: {count} > cap"
        assert counter == count, f"{adapter_id} on {day}: counter {counter} != rows {count}"
    counters = rows(
        settings,
        "SELECT coalesce(sum(sent), 0) FROM dripdrop.adapter_day_counters WHERE tenant_key = %s",
        world.tenant,
    )[0][0]
    assert counters == len(ledger), f"counters total {counters} != ledger rows {len(ledger)}"
    return {
        "messages": len(messages),
        "ledger": dict(statuses),
        "days": sorted({str(d) for _, d, _, _ in day_rows}),
    }


# ---------------------------------------------------------------- Kafka inspection


def group_assignment(settings: Settings, topic: str = "enrollments") -> dict[str, set[int]]:
    """Member id → partitions of ``topic`` it owns in the worker's consumer group."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    future = admin.describe_consumer_groups([settings.app_id])[settings.app_id]
    group = future.result(timeout=10)
    full = settings.topic(topic)
    out: dict[str, set[int]] = {}
    for member in group.members:
        parts = {tp.partition for tp in member.assignment.topic_partitions if tp.topic == full}
        out[member.member_id] = parts
    return out


class TopicReader:
    """Reads a whole topic from the beginning, decoding values; call ``poll`` repeatedly."""

    def __init__(self, settings: Settings, topic: str, *, decode: bool = True) -> None:
        self.codec = Codecs(settings).for_topic(topic) if decode else None
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"test-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )

        # Right after the topic is created the metadata may not list its partitions yet; a
        # reader assigned to none would see nothing, ever.
        def listed() -> dict[int, Any] | None:
            meta = self.consumer.list_topics(settings.topic(topic), timeout=10)
            found = meta.topics[settings.topic(topic)].partitions
            return found if len(found) >= settings.partitions else None

        partitions = wait_for(listed, timeout=30, interval=0.2, what=f"{topic}'s partitions")
        self.consumer.assign([TopicPartition(settings.topic(topic), p, 0) for p in partitions])
        self.records: list[Any] = []

    def poll(self, seconds: float = 0.5) -> list[Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            value = msg.value()
            if self.codec:
                assert value is not None, "a tombstone on a topic read with a codec"
                self.records.append(self.codec.decode(value))
            else:
                self.records.append(value)
        return self.records

    def until(self, check: Callable[[list[Any]], bool], *, timeout: float, what: str) -> list[Any]:
        return wait_for(
            lambda: self.records if check(self.poll(0.3)) else None,
            timeout=timeout,
            interval=0.0,
            what=what,
        )

    def close(self) -> None:
        self.consumer.close()


IN_MAKE_TEST = "checkpoint.before_store"
"""The crash point ``make test`` runs: the changelog durable, RocksDB and the offsets
behind (a replay meets state that already holds it). ``make test-long`` runs them all."""


def crash_matrix(sigkill: str, nth: int) -> list[Any]:
    """Parameters of a crash test: the SIGKILL at a random moment (``sigkill``) and each
    checkpoint crash point at its ``nth`` reach; all but ``IN_MAKE_TEST`` marked long."""
    return [
        sigkill,
        *(
            f"{point}:{nth}"
            if point == IN_MAKE_TEST
            else pytest.param(f"{point}:{nth}", marks=pytest.mark.long)
            for point in crashpoints.POINTS
        ),
    ]


def restart_if_skipped(
    worker: WorkerProcess, start: Callable[[], WorkerProcess], restarts: list[int]
) -> WorkerProcess:
    """``worker``, or a new one when it left with ``EXIT_SKIPPED_INPUT`` (it found input
    records Faust skipped after a table recovery and stopped uncommitted; the next start
    reads them). Any other exit fails the test; ``restarts`` counts the restarts."""
    if worker.alive():
        return worker
    code = worker.proc.returncode
    assert code == EXIT_SKIPPED_INPUT, worker.log_tail()
    assert "input records skipped by the consumer" in worker.log_path.read_text()
    assert len(restarts) < 2, "skipped input again after two restarts"
    restarts.append(code)
    worker.kill()  # reaps it and closes its log
    return start()
