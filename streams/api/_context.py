"""What the API's collaborators share: settings, engine, codecs, the lazily created publisher
and the after-commit hook, with the three ways a call writes (config change, outbox, produce).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine

from streams.codecs import Codecs, partition_for
from streams.db.tables import outbox
from streams.kafka import Delivery, Publisher, PublishError
from streams.outbox import EntityType, enqueue_config_change
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Context:
    """Built once by ``DripDrop``; ``publisher()`` raises once the client is closed."""

    settings: Settings
    engine: Engine
    codecs: Codecs
    publisher: Callable[[], Publisher]
    after_commit: Callable[[], None]
    """Relays the outbox after an authoring commit (``DripDrop._after_commit``)."""

    def config(
        self,
        conn: Connection,
        entity_type: EntityType,
        entity_id: str,
        tenant_key: str,
        entity: BaseModel | None,
    ) -> None:
        """Insert the ``config`` change of an entity (``None``: deleted) into the outbox."""
        enqueue_config_change(
            conn,
            settings=self.settings,
            codecs=self.codecs,
            entity_type=entity_type,
            entity_id=entity_id,
            tenant_key=tenant_key,
            entity=entity,
        )

    def enqueue(
        self, conn: Connection, topic: str, tenant_key: str, record: dict[str, Any]
    ) -> None:
        """Insert one record of ``topic`` into the outbox, in the caller's transaction."""
        conn.execute(
            outbox.insert().values(
                tenant_key=tenant_key,
                topic=self.settings.topic(topic),
                key=tenant_key,
                partition=partition_for(tenant_key, self.settings.partitions),
                value=self.codecs.for_topic(topic).encode(record),
            )
        )

    def produce(self, topic: str, tenant_key: str, record: dict[str, Any]) -> Delivery:
        """Produce one record keyed by ``tenant_key`` and wait for the broker's ack."""
        value = self.codecs.for_topic(topic).encode(record)
        publisher = self.publisher()
        publisher.produce(self.settings.topic(topic), key=tenant_key, value=value)
        deliveries = publisher.flush()
        if not deliveries:
            raise PublishError(f"no delivery report for the {topic} record")
        return deliveries[-1]
