"""The produce path: health-signal records onto Kafka, each event id once per process.

The only Kafka access of the receiver; a request is answered 200 only after ``flush``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from streams.codecs import Codecs
from streams.kafka import KafkaPublisher, Publisher, PublishError
from streams.settings import Settings
from streams.webhooks._adapters import WebhookAdapter
from streams.webhooks._errors import UnavailableError
from streams.webhooks._recent import Recent
from streams.webhooks._signal import Signal

Publish = Callable[[WebhookAdapter, Sequence[Signal]], Awaitable[int]]
"""Produce an adapter's signals; return how many were new (``SignalPublisher.publish``)."""


class SignalPublisher:
    """``health-signals`` records for one receiver: encoded, produced, flushed, remembered.

    ``publisher`` replaces the Kafka producer (tests); without it one ``KafkaPublisher`` is
    opened on first use and closed by ``close``.
    """

    def __init__(
        self, settings: Settings, *, publisher: Publisher | None, recent_size: int
    ) -> None:
        self._settings = settings
        self._codec = Codecs(settings).for_topic("health-signals")
        self._topic = settings.topic("health-signals")
        self._given = publisher
        self._own: Publisher | None = None
        self._produced = Recent(recent_size, 7 * 86400.0)
        self._lock = asyncio.Lock()

    def _producer(self) -> Publisher:
        if self._given is not None:
            return self._given
        if self._own is None:
            self._own = KafkaPublisher(self._settings)
        return self._own

    async def publish(self, adapter: WebhookAdapter, signals: Sequence[Signal]) -> int:
        """Produce the signals not produced before (a redelivery is a duplicate) and flush.

        Raises:
            UnavailableError: Kafka did not take them (503: the provider retries).
        """
        records = [
            {**s, "tenant_key": adapter.tenant_key, "adapter_id": adapter.id}
            for s in signals
            if f"{adapter.tenant_key}\0{s['event_id']}" not in self._produced
        ]
        if not records:
            return 0
        values = [self._codec.encode(r) for r in records]

        def send() -> None:
            out = self._producer()
            for value in values:
                out.produce(self._topic, key=adapter.tenant_key, value=value)
            out.flush()

        async with self._lock:
            try:
                await asyncio.to_thread(send)
            except PublishError as exc:
                raise UnavailableError(f"Kafka: {exc}") from None
        for r in records:
            self._produced.add(f"{adapter.tenant_key}\0{r['event_id']}")
        return len(records)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
