"""Dead letters: a record the worker cannot process goes to ``dead-letter`` with its reason
and its original bytes, and the worker goes on (SPEC §10, docs/topics.md).

``Place`` says where the record came from. One type for all sources: a Faust event (the
processor's inputs), a confluent-kafka message (the sink and sender stages), a parked
record, or output this worker produced and could not deliver (``offset`` = ``PRODUCED``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.codecs import Codecs
from streams.kafka import StreamPublisher

PRODUCED = -1
"""``Place.offset`` of output this worker produced (never read from a topic)."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where a record was read (topic, partition, offset) and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @classmethod
    def of_event(cls, message: Any) -> Place:
        """The place of a Faust event's message (attributes)."""
        return cls(
            message.topic, message.partition, message.offset, message.key, message.value or b""
        )

    @classmethod
    def of_record(cls, message: Any) -> Place:
        """The place of a confluent-kafka message (methods)."""
        return cls(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.value() or b"",
        )

    @classmethod
    def produced(cls, topic: str, partition: int, value: bytes) -> Place:
        """Output of this worker that could not be delivered or written."""
        return cls(topic, partition, PRODUCED, None, value)


class DeadLetters:
    """Produces dead letters; ``hooks`` see each reason (the metrics count them)."""

    def __init__(self, publisher: StreamPublisher, codecs: Codecs, topic: str) -> None:
        self.publisher = publisher
        self.codec = codecs.for_topic("dead-letter")
        self.topic = topic
        self.hooks: list[Callable[[str], None]] = []

    async def send(self, place: Place, reason: str, detail: str) -> None:
        for hook in self.hooks:
            hook(reason)
        value = self.codec.encode(
            {
                "source_topic": place.topic,
                "partition": place.partition,
                "offset": place.offset,
                "key": place.key,
                "value": place.value,
                "reason": reason[:200],
                "detail": detail[:2000],
                "failed_at": datetime.now(UTC),
            }
        )
        await self.publisher.send(self.topic, key=place.key, value=value)
