"""The stateless stages' own Kafka consumers: ``sink`` → PostgreSQL, ``dispatch`` → sender.

Why not Faust agents: Faust feeds all agents of a worker from one consumer, one record at
a time (~90 µs of CPU per record on the 2-core bench machine, ``benchmarks/faust_floor.py``;
librdkafka's batch consume: ~2 µs), and while the processor has a backlog its full queue
holds every other agent's records back: no send command was written, and no mail sent,
before the backlog was drained. The sink and the sender keep no table state, so they need
nothing of Faust; each gets a ``BatchConsumer`` in its own consumer group
(``{app_id}-sink``, ``{app_id}-sender``), which may split partitions differently from the
Faust group. The processor, whose tables need Faust's co-partitioning and recovery, stays
a Faust agent.

At-least-once, as with Faust: a batch's offsets are stored only after ``handle`` returned,
i.e. after its rows are committed in PostgreSQL and every record it caused is acknowledged
(``StreamPublisher.barrier``); librdkafka commits stored offsets every
``COMMIT_INTERVAL_MS`` and on close. A batch replayed after a crash changes nothing: sink
rows are idempotent and the sender's ledger refuses a second delivery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.settings import Settings

log = logging.getLogger("dripdrop.consumer")

COMMIT_INTERVAL_MS = 500
STOP_GRACE_SECONDS = 20.0
"""How long ``stop`` lets the batch in hand finish (e.g. SMTP sends) before cancelling it;
a cancelled batch is not committed, and the ledger and idempotent rows make its replay
safe."""
MAX_POLL_INTERVAL_MS = 1_000_000
"""Faust's own default: a batch of slow SMTP sends must not cost the consumer its group."""


def consumer_group(settings: Settings, role: str) -> str:
    """The consumer group of a stateless stage (``sink``, ``sender``; docs/topics.md)."""
    return f"{settings.app_id}-{role}"


class BatchConsumer:
    """Feeds batches of raw records of one topic to ``handle``; see the module docstring.

    ``handle`` returns once the batch is done and everything it caused is acknowledged; it
    must not raise for bad records (it dead-letters them). If it raises, nothing more is
    consumed or committed in this process and ``on_failure`` is called (the worker crashes,
    so the records are replayed by the next owner).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str,
        role: str,
        batch_size: int,
        batch_seconds: float,
        handle: Callable[[list[Message]], Awaitable[None]],
        on_failure: Callable[[BaseException], Awaitable[None]],
        seed_group: str | None = None,
    ) -> None:
        self.topic = topic
        self.role = role
        self._settings = settings
        self._batch_size = batch_size
        self._batch_seconds = batch_seconds
        self._seed_group = seed_group
        self._handle = handle
        self._on_failure = on_failure
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self.failed: BaseException | None = None

    async def start(self) -> None:
        if self._seed_group is not None:
            await asyncio.to_thread(self._seed_offsets, self._seed_group)
        self._consumer = Consumer(
            {
                "bootstrap.servers": self._settings.kafka_bootstrap,
                "group.id": consumer_group(self._settings, self.role),
                "client.id": f"{self._settings.app_id}-{self.role}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": COMMIT_INTERVAL_MS,
                "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
                "fetch.wait.max.ms": 50,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
        self._consumer.subscribe([self._settings.topic(self.topic)])
        self._task = asyncio.ensure_future(self._run())
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        if (exc := task.exception()) is not None:  # e.g. on_failure itself failed
            log.critical("the %s consumer ended: %r", self.role, exc)

    async def stop(self) -> None:
        """Finish the batch in hand (up to ``STOP_GRACE_SECONDS``), commit what was
        stored, leave the group."""
        self._stopping = True
        task = self._task
        if task is not None:
            await asyncio.wait([task], timeout=STOP_GRACE_SECONDS)
            if not task.done():
                log.warning("%s: the batch in hand is abandoned (replayed later)", self.role)
                task.cancel()
                await asyncio.wait([task])
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.info("%s consumer stopped: %r", self.role, exc)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(self._close, consumer)

    def _close(self, consumer: Consumer) -> None:
        with self._lock:  # not while ``lag`` reads it
            consumer.close()

    def _seed_offsets(self, seed_group: str) -> None:
        """A new group starts where ``seed_group`` stopped, not at the topic's beginning.

        Before this consumer existed its topic was read by Faust's group (``{app_id}``):
        the first start after the upgrade would otherwise replay the whole retained topic
        ahead of new records. Only a group with no committed offset is seeded.
        """
        topic = self._settings.topic(self.topic)
        ours = consumer_group(self._settings, self.role)
        bootstrap = self._settings.kafka_bootstrap
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": ours})
        try:
            meta = probe.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                return
            tps = [TopicPartition(topic, p) for p in meta.partitions]
            if any(tp.offset >= 0 for tp in probe.committed(tps, timeout=10)):
                return
        finally:
            probe.close()
        old = Consumer({"bootstrap.servers": bootstrap, "group.id": seed_group})
        try:
            found = [tp for tp in old.committed(tps, timeout=10) if tp.offset >= 0]
        finally:
            old.close()
        if not found:
            return
        admin = AdminClient({"bootstrap.servers": bootstrap})
        request = ConsumerGroupTopicPartitions(ours, found)
        try:
            done = [
                tp
                for future in admin.alter_consumer_group_offsets([request]).values()
                for tp in future.result(timeout=10).topic_partitions or []
                if tp.error is None
            ]
        except KafkaException as exc:  # e.g. another worker of the group got there first
            log.info("%s: offsets not seeded from %s: %s", self.role, seed_group, exc)
            return
        log.info(
            "%s: %d of %d partitions start from %s's offsets on %s",
            self.role,
            len(done),
            len(found),
            seed_group,
            topic,
        )

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            try:
                messages = await asyncio.to_thread(
                    consumer.consume, self._batch_size, self._batch_seconds
                )
                records = []
                for message in messages:
                    if message.error() is None:
                        records.append(message)
                    else:
                        log.warning("%s consumer: %s", self.role, message.error())
                if not records:
                    continue
                await self._handle(records)
                self._store(consumer, records)
            except Exception as exc:  # noqa: BLE001 - stop committing; the next owner replays
                log.critical("the %s stopped; its records will be replayed: %r", self.role, exc)
                self.failed = exc
                await self._on_failure(exc)
                return

    def lag(self) -> int | None:
        """Records on this consumer's partitions not yet consumed (for the metrics);
        ``None`` before the first assignment. Blocking: call it off the event loop."""
        with self._lock:  # not while ``stop`` closes the consumer
            consumer = self._consumer
            if consumer is None or not (assigned := consumer.assignment()):
                return None
            total = 0
            for tp in consumer.position(assigned):
                high = consumer.get_watermark_offsets(tp, timeout=5, cached=True)[1]
                if tp.offset >= 0 and high >= 0:
                    total += max(0, high - tp.offset)
            return total

    def _store(self, consumer: Consumer, records: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in records:
            last[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # revoked meanwhile: the new owner replays them
            log.info("%s offsets not stored (partitions moved): %s", self.role, exc)
