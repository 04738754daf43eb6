"""Transactional outbox for the compacted ``config`` topic (SPEC §4, issue 4).

Writing side (``enqueue_config_change``): an authoring call inserts its rows **and**
one outbox row in the same PostgreSQL transaction. The row already holds the
encoded ``ConfigChange`` value, its key ``"{entity_type}:{entity_id}"`` and its
partition ``murmur2(tenant_key) % partitions``, so commit and event cannot diverge:
either both exist or neither does.

Publishing side (``relay_outbox``): select unpublished rows ``FOR UPDATE SKIP LOCKED``
(concurrent relays never take the same row), produce each to its explicit partition
in id order, wait until the broker acknowledged all of them, then mark them
published and commit. Consequences:

* a process that dies after the authoring commit but before publishing leaves the
  row unpublished; the next relay run (API call, worker, ``dripdrop outbox relay``)
  publishes it: no committed change is ever lost;
* a process that dies after the broker acknowledged but before the mark commits
  publishes the row again on the next run: the duplicate has the same key and the
  same bytes (``event_id`` is the outbox id), which is harmless on a topic
  compacted by entity key; consumers may dedupe on ``event_id``;
* rows of one tenant share a partition and are produced in id (= commit) order by
  an idempotent producer, so a consumer sees each tenant's changes in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Connection, Engine, and_, func, select, text, update

from streams.codecs import Codecs, config_key, partition_for
from streams.db.tables import outbox
from streams.kafka import Publisher
from streams.settings import Settings

EntityType = Literal[
    "adapter", "pool", "pool_member", "sequence", "sequence_version", "step", "domain_throttle"
]

CONFIG_TOPIC = "config"


def enqueue_config_change(
    conn: Connection,
    *,
    settings: Settings,
    codecs: Codecs,
    entity_type: EntityType,
    entity_id: str,
    tenant_key: str,
    entity: BaseModel | None,
) -> int:
    """Insert the ``ConfigChange`` of one entity into the outbox; return the outbox id.

    ``entity=None`` records a deletion (``deleted=true``, null payload). Must run
    inside the transaction that changed the entity.
    """
    row = conn.execute(
        select(
            func.nextval(text("pg_get_serial_sequence('dripdrop.outbox', 'id')")),
            func.now(),
        )
    ).one()
    outbox_id, committed_at = int(row[0]), row[1]
    assert isinstance(committed_at, datetime)
    record = {
        "event_id": str(outbox_id),
        "tenant_key": tenant_key,
        "occurred_at": committed_at,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "deleted": entity is None,
        "payload": None if entity is None else entity.model_dump_json(),
    }
    conn.execute(
        outbox.insert().values(
            id=outbox_id,
            tenant_key=tenant_key,
            topic=settings.topic(CONFIG_TOPIC),
            key=config_key(entity_type, entity_id),
            partition=partition_for(tenant_key, settings.partitions),
            value=codecs.for_topic(CONFIG_TOPIC).encode(record),
        )
    )
    return outbox_id


def _unpublished(topic_prefix: str | None) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = outbox.c.published_at.is_(None)
    if topic_prefix is not None:
        condition = and_(condition, outbox.c.topic.startswith(topic_prefix, autoescape=True))
    return condition


def relay_outbox(
    engine: Engine, producer: Publisher, batch: int = 500, *, topic_prefix: str | None = None
) -> int:
    """Publish one batch of unpublished outbox rows; return how many were published.

    Rows are marked published only after the broker acknowledged every one of them
    (``producer.flush`` raises ``PublishError`` otherwise and the transaction rolls
    back, leaving them for the next run). ``topic_prefix`` limits the relay to one
    deployment's topics (the API passes its own ``Settings.topic_prefix``), so a
    deployment never publishes, or waits on, another one's rows.
    """
    with engine.begin() as conn:
        rows = conn.execute(
            select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.partition, outbox.c.value)
            .where(_unpublished(topic_prefix))
            .order_by(outbox.c.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        for row in rows:
            producer.produce(
                row.topic, key=row.key, value=bytes(row.value), partition=row.partition
            )
        producer.flush()
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([row.id for row in rows]))
            .values(published_at=func.now())
        )
        return len(rows)


def relay_all(
    engine: Engine, producer: Publisher, batch: int = 500, *, topic_prefix: str | None = None
) -> int:
    """Relay until no unpublished row is left (rows locked by another relay are skipped)."""
    total = 0
    while (published := relay_outbox(engine, producer, batch, topic_prefix=topic_prefix)) > 0:
        total += published
        if published < batch:
            break
    return total


def pending_count(engine: Engine, *, topic_prefix: str | None = None) -> int:
    """Unpublished outbox rows (for ``dripdrop outbox pending`` and tests)."""
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(outbox).where(_unpublished(topic_prefix))
        ).scalar_one()
    return int(count)
