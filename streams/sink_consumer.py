"""The sink's own Kafka consumer: ``sink`` records → PostgreSQL, outside Faust's consumer.

Why not a Faust agent: Faust feeds all agents of a worker from one consumer, one record at a
time (~85 µs of CPU per record on the 2-core bench machine, ``benchmarks/faust_floor.py``).
The processor emits one sink record per event, so the sink was two of the five records
Faust handled per enrollment; and while the processor had a backlog its full queue held
the sink's records back, so no send command left before the backlog was drained. Here
librdkafka fetches whole batches on its own thread and hands them over in one call.

At-least-once, as with Faust: a batch's offsets are stored only after its rows are
committed in PostgreSQL and every record it caused (send commands, feedback, message
events) is acknowledged (``StreamPublisher.barrier``); librdkafka commits stored offsets
every ``COMMIT_INTERVAL_MS`` and on close. The rows are idempotent, so a batch replayed after
a crash changes nothing. The sink keeps no state, so its consumer group
(``{app_id}-sink``) may split partitions differently from the Faust group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.settings import Settings

log = logging.getLogger("dripdrop.sink")

COMMIT_INTERVAL_MS = 500
POLL_SECONDS = 0.05


def sink_group(settings: Settings) -> str:
    """The consumer group of the sink records (docs/topics.md)."""
    return f"{settings.app_id}-sink"


class SinkConsumer:
    """Feeds batches of raw sink records to ``handle``; see the module docstring.

    ``handle`` returns once the batch's rows are committed and the records they caused are
    acknowledged; it must not raise for bad records (it dead-letters them). If it raises,
    nothing more is consumed or committed in this process and ``on_failure`` is called
    (the worker crashes, so the records are replayed by the next owner).
    """

    def __init__(
        self,
        settings: Settings,
        handle: Callable[[list[Message]], Awaitable[None]],
        on_failure: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._handle = handle
        self._on_failure = on_failure
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": self._settings.kafka_bootstrap,
                "group.id": sink_group(self._settings),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": COMMIT_INTERVAL_MS,
                "fetch.wait.max.ms": 50,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
            }
        )
        self._consumer.subscribe([self._settings.topic("sink")])
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Finish the batch in hand, commit what was stored, leave the group."""
        self._stopping = True
        if self._task is not None:
            await asyncio.wait([self._task])
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(consumer.close)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        batch_size = self._settings.sink_batch_size
        timeout = min(self._settings.sink_batch_seconds, POLL_SECONDS)
        while not self._stopping:
            try:
                messages = await asyncio.to_thread(consumer.consume, batch_size, timeout)
                records = []
                for message in messages:
                    if message.error() is None:
                        records.append(message)
                    else:
                        log.warning("sink consumer: %s", message.error())
                if not records:
                    continue
                await self._handle(records)
                self._store(consumer, records)
            except Exception as exc:  # noqa: BLE001 - stop committing; the next owner replays
                log.critical("the sink stopped; its records will be replayed: %r", exc)
                self.failed = exc
                await self._on_failure(exc)
                return

    def lag(self) -> int | None:
        """Records on this consumer's ``sink`` partitions not yet consumed (for the metrics);
        ``None`` before the first assignment. Blocking: call it off the event loop."""
        consumer = self._consumer
        if consumer is None or not (assigned := consumer.assignment()):
            return None
        total = 0
        for tp in consumer.position(assigned):
            high = consumer.get_watermark_offsets(tp, timeout=5, cached=True)[1]
            if tp.offset >= 0 and high >= 0:
                total += max(0, high - tp.offset)
        return total

    @staticmethod
    def _store(consumer: Consumer, records: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in records:
            last[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # revoked meanwhile: the new owner replays them
            log.info("sink offsets not stored (partitions moved): %s", exc)
