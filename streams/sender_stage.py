"""The sender stage: send commands from ``dispatch`` through the providers, results onto
``dispatch-results``.

It reads with its own consumer (``BatchConsumer``, group ``{app_id}-sender``); the
``Sender`` (``streams/sender.py``) claims each row in the ledger right before its own
hand-off and records the outcome; results are produced, and the consumer stores the
batch's offsets only after they are acknowledged. A replayed command finds its row
finished and its result is said again; a row found ``sending`` is ambiguous.

Adapters are read from PostgreSQL when a command names one, and again after
``settings.adapter_refresh_seconds``, so an ``adapter update`` (another host, another secret
reference) reaches a running sender without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from dripdrop_core.models import Adapter
from streams.clock import Clock
from streams.codecs import CodecError, Codecs
from streams.dead_letters import DeadLetters, Place
from streams.kafka import StreamPublisher
from streams.providers import ProviderRegistry
from streams.retrying import until_written
from streams.sender import Sender, SenderDatabaseError
from streams.settings import Settings

log = logging.getLogger("dripdrop.sender")

RETRIES = 5
"""Tries of a batch that failed for a reason other than the database being away (a bug):
then it is left to the processor's redrive."""


class SenderStage:
    """Delivers send commands; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        codecs: Codecs,
        publisher: StreamPublisher,
        dead_letters: DeadLetters,
        pool: Callable[[], Awaitable[AsyncConnectionPool]],
        stopping: Callable[[], bool],
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.codecs = codecs
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.pool = pool
        self.stopping = stopping
        self.clock = clock
        self.registry = ProviderRegistry()
        self.adapters: dict[str, tuple[float, Adapter]] = {}  # id → (read at, adapter)
        # adapter id → when its last send finished: the gap holds across batches (SPEC §5.5)
        self.handoffs: dict[str, datetime] = {}

    async def handle(self, messages: list[Any]) -> None:
        """A batch of send commands (``BatchConsumer`` on ``dispatch``): delivered, their
        results acknowledged on ``dispatch-results``. A record that is not a valid command
        is dead-lettered."""
        codec = self.codecs.for_topic("dispatch")
        commands: list[dict[str, Any]] = []
        for message in messages:
            place = Place.of_record(message)
            try:
                commands.append(codec.decode(place.value))
            except CodecError as exc:
                await self.dead_letters.send(place, exc.reason, str(exc))
        if commands:
            await self.deliver(commands)
        await self.publisher.barrier()

    async def _wait_until(self, at: datetime) -> None:
        """Sleep until ``at`` on the worker's clock (simulated time runs faster)."""
        seconds = (at - self.clock.now()).total_seconds()
        if seconds > 0:
            await asyncio.sleep(self.clock.real_seconds(seconds))

    def _gap(self, adapter_id: str) -> timedelta:
        """The adapter's ``min_gap_seconds`` (simulated, like the clock); 0 if unknown."""
        known = self.adapters.get(adapter_id)
        return timedelta(seconds=known[1].min_gap_seconds if known else 0)

    async def deliver(self, commands: list[dict[str, Any]]) -> None:
        pool = await self.pool()
        sender = Sender(
            pool,
            lambda aid: self.registry.provider_for(self.adapters[aid][1]),
            clock=self.clock.now,
            wait_until=self._wait_until,
            gap=self._gap,
            handoffs=self.handoffs,
        )
        failures = 0

        async def attempt() -> list[Any]:
            await self._load_adapters(pool, {c["adapter_id"] for c in commands})
            try:
                outcome = await sender.deliver(commands)
            except SenderDatabaseError as exc:
                # Outcomes already delivered when recording them failed: real results (a
                # retried batch reports those rows ambiguous).
                await self._publish_results(exc.results)
                raise
            # Finished before (a replay after a crash that lost the result): say it again.
            return [
                *outcome.results,
                *await sender.finished_results(commands, outcome.duplicates),
            ]

        while True:
            try:
                results = await until_written("sender batch", attempt, stopping=self.stopping)
                break
            except Exception as exc:  # noqa: BLE001 - the stage's error policy: not the
                # database being away, so a bug; retried, then left to the redrive
                failures += 1
                log.error("sender batch failed (attempt %d): %r", failures, exc)
                if failures >= RETRIES:
                    return  # the processor redrives these sends (REDRIVE_REAL_SECONDS)
                await asyncio.sleep(0.2 * 2**failures)
        await self._publish_results(results)

    async def _publish_results(self, results: Sequence[Any]) -> None:
        codec = self.codecs.for_topic("dispatch-results")
        for r in results:
            value = dict(r) if isinstance(r, dict) else r.as_record()
            await self.publisher.send(
                self.settings.topic("dispatch-results"),
                key=value["tenant_key"].encode(),
                value=codec.encode(value),
            )

    async def _load_adapters(self, pool: AsyncConnectionPool, ids: set[str]) -> None:
        now = time.monotonic()
        ttl = self.settings.adapter_refresh_seconds
        stale = [i for i in ids if i not in self.adapters or now - self.adapters[i][0] > ttl]
        if not stale:
            return
        from streams.db.authoring import adapter_from_row

        async with pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT * FROM dripdrop.channel_adapters WHERE id = ANY(%s)", (stale,)
            )
            names = [d.name for d in cur.description or []]
            for row in await cur.fetchall():
                adapter = adapter_from_row(dict(zip(names, row, strict=True)))
                self.adapters[adapter.id] = (now, adapter)

    async def close(self) -> None:
        await self.registry.close()
