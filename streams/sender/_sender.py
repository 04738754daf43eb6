"""``Sender``: one ``deliver`` per batch of ``dispatch`` commands, on one pooled connection
(the package docstring tells the ledger's rules)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from streams.providers.base import Provider
from streams.sender._ledger import (
    _FINISHED,
    _claim,
    _fetch,
    _release_locks,
    _restore_autocommit,
)
from streams.sender._outcome import (
    BatchOutcome,
    Command,
    DispatchResult,
    SenderDatabaseError,
    _Delivery,
    _result,
    _send_one,
)
from streams.sender._stream import _no_gap, _Stream

DEFAULT_CONCURRENCY = 8
"""Sends in flight per batch: as many as a Python SMTP sink can absorb (≈8 connections),
so the server, not the sender, is the limit; more only queues inside the provider pool.
Also the most rows of a batch that are ``sending`` at once: what a crash can leave
``ambiguous``."""


async def _real_wait_until(at: datetime) -> None:
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Sender:
    """Deliver batches of ``dispatch`` commands through the ledger.

    Args:
        pool: an open psycopg ``AsyncConnectionPool`` on the DripDrop database. One
            connection per ``deliver`` call is held for the batch: it owns the locks.
        providers: ``adapter_id`` → provider (e.g. ``ProviderRegistry.provider_for`` over
            the adapters the worker knows). A ``LookupError`` from it defers that message.
        concurrency: sends in flight per batch.
        clock: ``now`` for ``sent_at`` / ``finished_at``; the scaled clock in demos.
        wait_until: sleeps until a command's ``not_before`` on that clock (the pipeline's
            converts simulated to real time); by default real time.
        gap: ``adapter_id`` → its ``min_gap_seconds`` (SPEC §5.5). A send of an adapter
            with a gap is handed over only once the adapter's previous send has finished
            and the gap has passed since, so commands that queued up behind a slow batch
            go out spaced, never as a burst, even when their ``not_before`` has passed.
        handoffs: ``adapter_id`` → when its last send finished; give the same dict to
            every ``Sender`` of a process so the spacing holds across batches.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        providers: Callable[[str], Provider],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], datetime] = _utc_now,
        wait_until: Callable[[datetime], Awaitable[None]] | None = None,
        gap: Callable[[str], timedelta] = _no_gap,
        handoffs: dict[str, datetime] | None = None,
    ) -> None:
        self._pool = pool
        self._providers = providers
        self._concurrency = max(1, concurrency)
        self._clock = clock
        self._wait_until = wait_until or _real_wait_until
        self._gap = gap
        self._handoffs = {} if handoffs is None else handoffs

    async def deliver_batch(self, commands: Sequence[Command]) -> list[DispatchResult]:
        """Deliver ``commands``; return a result for each row sent, failed or ambiguous.

        Duplicates, cancelled and unknown rows produce no result (see ``deliver``).

        Raises:
            SenderDatabaseError: PostgreSQL failed; retry the batch.
        """
        return list((await self.deliver(commands)).results)

    async def deliver(self, commands: Sequence[Command]) -> BatchOutcome:
        """Claim, send and record one batch; per-message problems become results.

        Raises:
            SenderDatabaseError: PostgreSQL failed; retry the batch.
        """
        by_id: dict[str, Command] = {}
        malformed: list[str] = []
        for command in commands:  # a command repeated within the batch acts once
            raw = str(command.get("step_execution_id"))
            try:
                by_id.setdefault(str(uuid.UUID(raw)), command)
            except ValueError:
                malformed.append(raw)  # no ledger row can match it; the cast would fail
        if not by_id:
            return BatchOutcome(results=(), unknown=tuple(malformed))
        try:
            async with self._pool.connection() as conn:
                autocommit = conn.autocommit
                await conn.set_autocommit(True)  # see _atomically: one round trip per transaction
                stream = _Stream(
                    conn,
                    by_id,
                    claim=_claim,
                    send=self._send_one,
                    clock=self._clock,
                    wait_until=self._wait_until,
                    concurrency=self._concurrency,
                    gap=self._gap,
                    handoffs=self._handoffs,
                )
                try:
                    outcome = await stream.run()
                finally:
                    if not stream.locks_released:
                        await _release_locks(conn)
                    await _restore_autocommit(conn, autocommit)
        except psycopg.Error as exc:
            raise SenderDatabaseError(f"ledger: {type(exc).__name__}") from exc
        if malformed:
            return replace(outcome, unknown=outcome.unknown + tuple(malformed))
        return outcome

    async def finished_results(
        self, commands: Sequence[Command], ids: Sequence[str]
    ) -> list[DispatchResult]:
        """Results of ``ids`` whose ledger row is already ``sent`` / ``failed`` / ``ambiguous``.

        A command replayed after a crash between recording its outcome and publishing the
        result finds its row finished (a duplicate): nothing is sent again, but the result
        is published again so the processor can advance (it ignores results it has seen).

        Raises:
            SenderDatabaseError: PostgreSQL failed; retry.
        """
        if not ids:
            return []
        by_id = {str(c.get("step_execution_id")): c for c in commands}
        try:
            async with self._pool.connection() as conn:
                found = await _fetch(conn, _FINISHED, list(ids))
        except psycopg.Error as exc:
            raise SenderDatabaseError(f"ledger: {type(exc).__name__}") from exc
        return [
            _result(by_id[id_], _Delivery(status, provider_id, error, at))
            for id_, tenant_key, status, provider_id, error, at in found
            if id_ in by_id and by_id[id_]["tenant_key"] == tenant_key
        ]

    async def _send_one(self, command: Command) -> _Delivery:
        """Send one claimed command with this sender's providers and clock (``_send_one``)."""
        return await _send_one(command, providers=self._providers, clock=self._clock)
