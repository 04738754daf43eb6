"""confluent-kafka producer for the host-facing API, the CLI and the outbox relay.

One ``KafkaPublisher`` serves both kinds of records the API writes:

* config changes from the outbox, produced to an **explicit partition**
  (``murmur2(tenant_key) % partitions``, computed when the outbox row is written);
* enrollment and inbound commands keyed by ``tenant_key``, placed by librdkafka's
  ``murmur2_random`` partitioner (the Java client's default, so every producer
  that keys by tenant lands on the same partition).

The producer is idempotent (``enable.idempotence``, ``acks=all``); ``flush`` waits for
every delivery report and raises ``PublishError`` if any record was not acknowledged,
so callers only treat a record as published once the broker confirmed it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.settings import Settings

log = logging.getLogger("dripdrop.kafka")


class PublishError(RuntimeError):
    """The broker did not acknowledge a record (or could not be reached).

    Infrastructure trouble, not bad input: the caller may retry; for outbox rows
    the next relay run does it.
    """


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored one record."""

    topic: str
    partition: int
    offset: int


class Publisher(Protocol):
    """What the API and the outbox relay need from a producer (fakes implement it in tests)."""

    def produce(
        self, topic: str, *, key: str, value: bytes, partition: int | None = None
    ) -> None: ...

    def flush(self, timeout: float = ...) -> list[Delivery]: ...

    def close(self) -> None: ...


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings every DripDrop producer shares: idempotent, ``acks=all``, and
    Java's murmur2 partitioner so keyed records land where Faust and the API expect."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "message.timeout.ms": 30_000,
        **overrides,
    }


class KafkaPublisher:
    """confluent-kafka ``Producer`` with delivery tracking; see the module docstring."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._producer = Producer(producer_config(settings, **overrides))
        self._pending: list[Delivery | KafkaError] = []
        self._closed = False

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._pending.append(err)
        else:
            self._pending.append(
                Delivery(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
            )

    def produce(self, topic: str, *, key: str, value: bytes, partition: int | None = None) -> None:
        if self._closed:
            raise RuntimeError("KafkaPublisher is closed")
        kwargs: dict[str, Any] = {
            "key": key.encode(),
            "value": value,
            "on_delivery": self._on_delivery,
        }
        if partition is not None:
            kwargs["partition"] = partition
        try:
            self._producer.produce(topic, **kwargs)
        except BufferError:
            self._producer.poll(1.0)
            self._producer.produce(topic, **kwargs)
        except KafkaException as exc:
            raise PublishError(f"cannot produce to {topic}: {exc.args[0]}") from exc
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> list[Delivery]:
        """Wait for every outstanding record; return their deliveries or raise ``PublishError``."""
        remaining = self._producer.flush(timeout)
        reports, self._pending = self._pending, []
        failures = [r for r in reports if isinstance(r, KafkaError)]
        if remaining or failures:
            reason = failures[0].str() if failures else f"{remaining} record(s) unacknowledged"
            raise PublishError(f"Kafka did not acknowledge the records: {reason}")
        return [r for r in reports if isinstance(r, Delivery)]

    def close(self) -> None:
        if not self._closed:
            self._producer.flush(5.0)
            self._closed = True


class StreamPublisher:
    """The worker's producer: every output record and every table changelog record.

    Faust's own ``Topic.send`` costs tens of microseconds of Python per record (a future,
    a buffer entry, aiokafka's accumulator); librdkafka does the same work in C on its own
    threads. At-least-once still holds: ``barrier`` waits until every record produced
    before it is acknowledged; the processor's ``Checkpoint`` calls it (for the outputs,
    then for the changelog) before Faust commits any offset, and the sink and sender
    stages before they store theirs, so an input is never committed while an output it
    caused could still be lost.

    Records are counted per *epoch* (each barrier starts a new one), not in total: reports
    arrive per partition in any order, so a count of reports could be reached by records
    produced after the barrier while an earlier one is still unacknowledged. A record that
    is not delivered poisons the publisher: every later barrier raises, so this process
    never commits again and its inputs are replayed after a restart.
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._producer = Producer(
            producer_config(
                settings,
                **{
                    "message.timeout.ms": 60_000,
                    "queue.buffering.max.messages": 1_000_000,
                    **overrides,
                },
            )
        )
        self._epoch = 0
        self._outstanding: dict[int, int] = {}  # epoch → records not yet reported
        self._produced = 0
        self._failure: str | None = None

    def _report(
        self,
        epoch: int,
        on_delivered: Callable[[int, int], None] | None,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        left = self._outstanding[epoch] - 1
        if left:
            self._outstanding[epoch] = left
        else:
            del self._outstanding[epoch]
        if err is not None:
            if self._failure is None:
                self._failure = f"{msg.topic()}[{msg.partition()}]: {err.str()}"
                log.critical(
                    "a record was not delivered; no offset will be committed: %s", self._failure
                )
        elif on_delivered is not None:
            on_delivered(int(msg.partition() or 0), int(msg.offset() or 0))

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        on_delivered: Callable[[int, int], None] | None,
    ) -> bool:
        """One produce attempt; False when librdkafka's queue is full."""
        epoch = self._epoch
        on_delivery = functools.partial(self._report, epoch, on_delivered)
        try:
            if partition is None:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            else:
                self._producer.produce(
                    topic, value=value, key=key, partition=partition, on_delivery=on_delivery
                )
        except BufferError:
            self._producer.poll(0)
            return False
        except KafkaException as exc:  # e.g. a record over the size limit
            raise PublishError(f"cannot produce to {topic}: {exc.args[0]}") from exc
        self._outstanding[epoch] = self._outstanding.get(epoch, 0) + 1
        self._produced += 1
        if self._produced % 256 == 0:
            self._producer.poll(0)
        return True

    async def send(
        self, topic: str, *, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        """Queue one record; waits only while librdkafka's queue is full.

        Raises:
            PublishError: librdkafka refused the record (e.g. over the size limit).
        """
        while not self._produce(topic, key, value, partition, None):
            await asyncio.sleep(0.005)

    def send_nowait(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        on_delivered: Callable[[int, int], None] | None = None,
    ) -> None:
        """Queue one record from synchronous code; ``on_delivered(partition, offset)``
        runs (on this thread, from a later ``poll``) once the broker stored it.

        Raises:
            PublishError: librdkafka refused the record (e.g. over the size limit).
        """
        while not self._produce(topic, key, value, partition, on_delivered):
            self._producer.poll(0.01)  # rare: a million records queued

    async def barrier(self, timeout: float = 60.0) -> None:
        """Return once every record produced before the call is acknowledged.

        Records produced meanwhile belong to the next epoch and are not waited for, so a
        busy worker cannot starve its own commit.

        Raises:
            PublishError: a record was refused (now or earlier in this process), or not
                acknowledged within ``timeout``.
        """
        epoch = self._epoch
        self._epoch += 1
        deadline = time.monotonic() + timeout
        while self._pending_up_to(epoch) and time.monotonic() < deadline:
            self._producer.poll(0)
            if self._pending_up_to(epoch):
                await asyncio.sleep(0.002)
        if self._failure is not None:
            raise PublishError(f"Kafka did not acknowledge a worker record: {self._failure}")
        if self._pending_up_to(epoch):
            raise PublishError(f"worker records unacknowledged after {timeout:.0f} s")

    def _pending_up_to(self, epoch: int) -> bool:
        return any(e <= epoch for e in self._outstanding)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
