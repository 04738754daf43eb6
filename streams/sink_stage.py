"""The sink stage: row operations from ``sink`` into PostgreSQL, and what they mean for Kafka.

It reads with its own consumer (``BatchConsumer``, group ``{app_id}-sink``), writes a
batch in one transaction (``PostgresSink``), then produces what the committed batch
decided: refused claims back to the processor (``sink-feedback``), granted send commands
(``dispatch``) and ``message-events``. The consumer stores the batch's offsets only after
all of that is acknowledged (``publisher.barrier``), so a crash replays the batch and every
write is idempotent.

``write_urgent`` is the same write for rows the processor must see committed before its
event is (a reply's stop).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from streams.codecs import Codecs
from streams.dead_letters import DeadLetters, Place
from streams.kafka import StreamPublisher
from streams.retrying import until_written
from streams.settings import Settings
from streams.sink import PostgresSink, SinkDatabaseError, SinkResult

log = logging.getLogger("dripdrop.sink")

Ops = list[dict[str, Any]]


def encode(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


class SinkStage:
    """Writes sink records into PostgreSQL; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        codecs: Codecs,
        publisher: StreamPublisher,
        dead_letters: DeadLetters,
        pool: Callable[[], Awaitable[AsyncConnectionPool]],
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.codecs = codecs
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.pool = pool
        self.stopping = stopping

    async def handle(self, messages: list[Any]) -> None:
        """A batch of sink records (``BatchConsumer``): one per processed event, carrying
        all of its row operations (a bare operation: a record written before that format).

        A record that is not an object with a list of operations is dead-lettered
        (``invalid_sink_record``); so is one PostgreSQL refuses for good (``sink_rejected``:
        bad data, a malformed operation), found by halving the batch. The others are
        written. While PostgreSQL is unreachable the batch waits.
        """
        records: list[tuple[Place, Ops]] = []
        for message in messages:
            place = Place.of_record(message)
            try:
                record = orjson.loads(place.value)
                if not isinstance(record, dict):
                    raise ValueError("a sink record must be a JSON object")
                ops = record.get("ops", [record])
                if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
                    raise ValueError("a sink record's ops must be a list of objects")
            except ValueError as exc:  # orjson.JSONDecodeError is one
                await self.dead_letters.send(place, "invalid_sink_record", str(exc))
                continue
            records.append((place, ops))
        await self._write_records(records)
        await self.publisher.barrier()

    async def write_urgent(self, ops: Ops, partition: int) -> SinkResult | None:
        """Rows that must be committed before the event is (a reply's stop): written now,
        not through ``sink``. Operations PostgreSQL refuses for good are dead-lettered."""
        sink = PostgresSink(await self.pool())
        try:
            result = await self._write("urgent write", sink, ops)
        except SinkDatabaseError as exc:
            log.error("urgent rows refused by PostgreSQL: %s", exc)
            place = Place.produced(self.settings.topic("sink"), partition, encode({"ops": ops}))
            await self.dead_letters.send(place, "sink_rejected", str(exc))
            return None
        await self.publish_events(result.events)
        return result

    async def _write(self, what: str, sink: PostgresSink, ops: Ops) -> SinkResult:
        return await until_written(what, lambda: sink.write(ops), stopping=self.stopping)

    async def _write_records(self, records: list[tuple[Place, Ops]]) -> None:
        if not records:
            return
        sink = PostgresSink(await self.pool())
        ops = [op for _, record_ops in records for op in record_ops]
        try:
            result = await self._write("sink batch", sink, ops)
        except SinkDatabaseError as exc:
            if len(records) == 1:
                log.error("sink record refused by PostgreSQL: %s", exc)
                await self.dead_letters.send(records[0][0], "sink_rejected", str(exc))
                return
            half = len(records) // 2
            await self._write_records(records[:half])
            await self._write_records(records[half:])
            return
        await self._publish(result)

    async def _publish(self, result: SinkResult) -> None:
        """What a committed sink batch means for Kafka: feedback, commands, events."""
        for refused in result.refused:  # before the commands: a replayed claim's Message-ID
            await self.publisher.send(
                self.settings.topic("sink-feedback"),
                key=refused["tenant_key"].encode(),
                value=encode(refused),
            )
        dispatch = self.codecs.for_topic("dispatch")
        for command in result.commands:
            # The sink topic is JSON: its times come back as ISO strings.
            command = {
                **command,
                **{
                    name: datetime.fromisoformat(command[name])
                    for name in ("decided_at", "not_before")
                    if isinstance(command.get(name), str)
                },
            }
            await self.publisher.send(
                self.settings.topic("dispatch"),
                key=command["tenant_key"].encode(),
                value=dispatch.encode(command),
            )
        await self.publish_events(result.events)

    async def publish_events(self, rows: list[dict[str, Any]]) -> None:
        """``message-events`` for the event rows a write inserted."""
        codec = self.codecs.for_topic("message-events")
        for row in rows:
            value = {
                "id": row["id"],
                "tenant_key": row["tenant_key"],
                "enrollment_id": row.get("enrollment_id"),
                "step_execution_id": row.get("step_execution_id"),
                "adapter_id": row.get("adapter_id"),
                "event_type": row["event_type"],
                "provider_message_id": None,
                "in_reply_to": row.get("in_reply_to"),
                "references": [],
                "data": orjson.dumps(row.get("data") or {}).decode(),
                "occurred_at": datetime.fromisoformat(row["occurred_at"]),
            }
            await self.publisher.send(
                self.settings.topic("message-events"),
                key=row["tenant_key"].encode(),
                value=codec.encode(value),
            )
