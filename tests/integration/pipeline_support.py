"""Shared helpers of the pipeline behaviour tests (tests/integration/test_pipeline_*.py).

World builders through the ``DripDrop`` API, PostgreSQL queries, topic readers that keep
their position between polls, a worker started on the scaled clock (SPEC §11) and
waited for until Faust reports it ready.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer

from streams.api import DripDrop
from streams.clock import ScaledClock
from streams.codecs import Codecs
from streams.settings import Settings
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for

DAY = timedelta(days=1)


def tenant() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def wire(message_id: str) -> str:
    """The header form of a stored id (``out_message_id`` is stored bare, SPEC §8)."""
    assert not message_id.startswith("<"), f"stored with brackets: {message_id!r}"
    return f"<{message_id}>"


def sent_rows(settings: Settings, enrollment_id: str) -> list[tuple[Any, ...]]:
    """``(step_id, out_message_id, headers, adapter_id)`` of sent executions, oldest first."""
    return rows(
        settings,
        "SELECT step_id::text, out_message_id, payload->'headers', adapter_id::text"
        " FROM dripdrop.step_executions WHERE enrollment_id = %s AND status = 'sent'"
        " ORDER BY inserted_at",
        enrollment_id,
    )


def enrollment_state(settings: Settings, enrollment_id: str) -> tuple[Any, ...] | None:
    """``(state, reason, adapter_id)`` of the enrollment row, or ``None``."""
    found = rows(
        settings,
        "SELECT state, reason, adapter_id::text FROM dripdrop.enrollments WHERE id = %s",
        enrollment_id,
    )
    return found[0] if found else None


# ---------------------------------------------------------------- the world


def create_mailbox(
    dd: DripDrop, smtp: SmtpSink, *, tenant_key: str, name: str, **fields: Any
) -> Any:
    """A healthy SMTP mailbox delivering into ``smtp``."""
    return dd.create_channel_adapter(
        tenant_key=tenant_key,
        name=name,
        provider="smtp",
        from_address=f"{name}@{name}.example",
        health_state=fields.pop("health_state", "active"),
        config=smtp.adapter_config(),
        **fields,
    )


@dataclass
class Outbound:
    """An outbound sequence over a pool of mailboxes (and an override mailbox)."""

    adapters: list[Any]
    pool: Any
    sequence: Any
    version: Any
    steps: list[Any]
    override: Any


def build_outbound(
    dd: DripDrop,
    smtp: SmtpSink,
    *,
    tenant_key: str,
    steps: int = 3,
    weights: tuple[int, ...] = (1,),
    pool_policy: str = "reassign",
    override_step: int | None = None,
    delays: tuple[int, ...] | None = None,
    adapter_fields: dict[str, Any] | None = None,
) -> Outbound:
    """Mailboxes ``mbox0..`` with ``weights`` in one pool, and a sequence of ``steps``."""
    made = [
        create_mailbox(dd, smtp, tenant_key=tenant_key, name=f"mbox{i}", **(adapter_fields or {}))
        for i in range(len(weights))
    ]
    pool = dd.create_adapter_pool(
        tenant_key=tenant_key, name="sales", on_pin_unavailable=pool_policy
    )
    for adapter, weight in zip(made, weights, strict=True):
        dd.add_pool_member(pool.id, tenant_key=tenant_key, adapter_id=adapter.id, weight=weight)
    override = create_mailbox(dd, smtp, tenant_key=tenant_key, name="override")
    sequence = dd.create_sequence(tenant_key=tenant_key, key="cold")
    version = dd.create_sequence_version(
        sequence.id,
        tenant_key=tenant_key,
        version=1,
        mode="outbound",
        config={"pool_id": pool.id},
    )
    created = [
        dd.create_step(
            version.id,
            tenant_key=tenant_key,
            key=f"s{position}",
            position=position,
            subject_template="Hello {{ first_name }}" if position == 0 else "Re: Hello",
            body_template=f"Step {position}",
            delay_seconds=delays[position] if delays else 0,
            adapter_override_id=override.id if position == override_step else None,
        )
        for position in range(steps)
    ]
    return Outbound(made, pool, sequence, version, created, override)


def enroll_many(
    dd: DripDrop, world: Any, tenant_key: str, count: int, *, start: int = 0
) -> list[str]:
    """Enroll ``count`` prospects; return their enrollment ids in order."""
    return [
        str(
            dd.enroll(
                tenant_key=tenant_key,
                sequence_id=world.sequence.id,
                subscriber_id=f"p-{i}",
                recipient=f"prospect{i}@example.org",
                data={"first_name": f"P{i}"},
            ).enrollment_id
        )
        for i in range(start, start + count)
    ]


# ---------------------------------------------------------------- workers and time


def scaled(
    settings: Settings, *, day_seconds: float, epoch: datetime, startup_seconds: float = 0.0
) -> tuple[Settings, ScaledClock]:
    """Worker settings on a scaled clock: one simulated day lasts ``day_seconds`` real.

    The simulation reaches ``epoch`` ``startup_seconds`` real seconds from now; ticks come
    every simulated hour (at least 50 ms real) so timers and day starts fire on time.
    """
    scale = DAY.total_seconds() / day_seconds
    origin = time.time() + startup_seconds
    worker_settings = settings.model_copy(
        update={
            "clock_scale": scale,
            "clock_epoch": epoch.timestamp(),
            "clock_origin": origin,
            "tick_interval_seconds": max(0.05, day_seconds / 24),
        }
    )
    return worker_settings, ScaledClock(scale=scale, epoch=epoch.timestamp(), origin=origin)


def start_worker(
    worker_factory: Callable[..., WorkerProcess], settings: Settings | None = None
) -> WorkerProcess:
    """Start a worker and wait until Faust reports it ready (partitions assigned)."""
    worker = worker_factory(settings)

    def ready() -> bool:
        assert worker.alive(), worker.log_tail()
        return "[^Worker]: Ready" in worker.log_path.read_text(errors="replace")

    wait_for(ready, timeout=60, what="worker ready")
    return worker


def wait_until(clock: ScaledClock, instant: datetime, *, timeout: float = 30) -> None:
    """Poll until the simulated clock has passed ``instant``."""
    wait_for(lambda: clock.now() >= instant, timeout=timeout, interval=0.02, what=f"{instant}")


def next_midnight(at: datetime) -> datetime:
    day = at.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# ---------------------------------------------------------------- topics


class TopicReader:
    """Reads one output topic from the start and keeps what it has read between polls."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.codec = Codecs(settings).for_topic(topic)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"test-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([settings.topic(topic)])
        self.records: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.2) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is not None:
                self.records.append(self.codec.decode(value))
        return self.records

    def wait(
        self,
        match: Callable[[dict[str, Any]], bool],
        *,
        count: int = 1,
        timeout: float = 30,
        what: str = "",
    ) -> list[dict[str, Any]]:
        """Poll until ``count`` records match; return the matching ones."""

        def found() -> list[dict[str, Any]] | None:
            hits = [r for r in self.poll() if match(r)]
            return hits if len(hits) >= count else None

        return wait_for(found, timeout=timeout, interval=0.0, what=what or "records")

    def close(self) -> None:
        self.consumer.close()


def telemetry_named(name: str, **attributes: Any) -> Callable[[dict[str, Any]], bool]:
    """A telemetry matcher: the event ``name`` whose attributes include ``attributes``."""

    def match(record: dict[str, Any]) -> bool:
        if record["name"] != name:
            return False
        attrs = attrs_of(record)
        return all(attrs.get(k) == v for k, v in attributes.items())

    return match


def attrs_of(record: dict[str, Any]) -> dict[str, Any]:
    value = record["attributes"]
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value)


def produce_health_signal(dd: DripDrop, settings: Settings, **record: Any) -> None:
    """A provider event on ``health-signals`` (Avro, key tenant_key, murmur2 partitioner)."""
    value = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC),
        **record,
    }
    encoded = Codecs(settings).for_topic("health-signals").encode(value)
    dd.publisher.produce(settings.topic("health-signals"), key=record["tenant_key"], value=encoded)
    dd.publisher.flush()
