"""The send ledger: delivers ``dispatch`` commands at most once per step execution (SPEC §7).

``dripdrop.step_executions`` is the ledger. A row moves ``intent → sending`` in one
transaction per batch (the claim), the claimed emails go out concurrently, and a second
transaction writes ``sent`` / ``failed`` / ``ambiguous``. What makes it safe:

* Only a row claimed from ``intent`` is sent, so a duplicate or replayed command is a no-op.
* The claim re-reads the enrollment: a reply committed before the claim means no send
  (reply-to-stop is causal, SPEC §8); such rows become ``cancelled``.
* While it sends, the claimer holds a session advisory lock per claimed row. A row found in
  ``sending`` whose lock is free belonged to a worker that died mid-send: it becomes
  ``ambiguous`` and is never resent. A row whose lock is held is being sent right now by
  another worker (a zombie during a rebalance): it is left alone.

No Faust and no Kafka here; the sender agent decodes, calls ``deliver_batch`` and publishes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from streams.providers.base import (
    AmbiguousDeliveryError,
    OutboundEmail,
    Provider,
    ProviderError,
    TransientDeliveryError,
)

log = logging.getLogger(__name__)

Command = Mapping[str, Any]
"""A decoded ``dispatch`` record (``schemas/dispatch.avsc``)."""

DispatchResult = dict[str, Any]
"""A ``dispatch-results`` record (``schemas/dispatch-results.avsc``)."""

DEFAULT_CONCURRENCY = 8
"""Sends in flight per batch: as many as a Python SMTP sink can absorb (≈8 connections),
so the server, not the sender, is the limit; more only queues inside the provider pool."""

DEFAULT_TRANSIENT_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = 0.05  # 0.05 s, then 0.2 s: a refused connect is usually brief

# 64 random bits of the uuid (uuid7's leading bits are a timestamp, shared within a ms).
_LOCK_KEY = "('x' || right(replace({0}::text, '-', ''), 16))::bit(64)::bigint"

_LOCK_ROWS = """
SELECT id::text, tenant_key, status
FROM dripdrop.step_executions
WHERE id = ANY(%s::uuid[])
ORDER BY id
FOR UPDATE
"""

_CLAIM = """
UPDATE dripdrop.step_executions AS se
SET status = 'sending', updated_at = now()
WHERE se.id = ANY(%s::uuid[])
  AND se.status = 'intent'
  AND NOT EXISTS (
    SELECT 1 FROM dripdrop.enrollments e
    WHERE e.id = se.enrollment_id AND e.state <> 'active'
  )
RETURNING se.id::text
"""

_HOLD = f"SELECT pg_advisory_lock({_LOCK_KEY.format('t.id')}) FROM unnest(%s::uuid[]) AS t(id)"

_CANCEL = """
UPDATE dripdrop.step_executions AS se
SET status = 'cancelled', error = 'enrollment_' || e.state, updated_at = now()
FROM dripdrop.enrollments e
WHERE se.id = ANY(%s::uuid[])
  AND se.status = 'intent'
  AND e.tenant_key = se.tenant_key AND e.id = se.enrollment_id
  AND e.state <> 'active'
RETURNING se.id::text
"""

# try-lock never waits, so it cannot deadlock with a claimer; it succeeds only when no
# live session holds the row, i.e. the worker that claimed it is gone.
_ORPHANED = (
    f"SELECT t.id::text FROM unnest(%s::uuid[]) AS t(id)"
    f" WHERE pg_try_advisory_xact_lock({_LOCK_KEY.format('t.id')})"
)

_MARK_AMBIGUOUS = """
UPDATE dripdrop.step_executions
SET status = 'ambiguous', error = %s, updated_at = now()
WHERE id = ANY(%s::uuid[]) AND status = 'sending'
RETURNING id::text
"""

_RECORD = """
UPDATE dripdrop.step_executions AS se
SET status = v.status,
    provider_message_id = v.provider_message_id,
    error = v.error,
    sent_at = CASE WHEN v.status = 'sent' THEN v.finished_at ELSE se.sent_at END,
    updated_at = now()
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
  AS v(id, status, provider_message_id, error, finished_at)
WHERE se.id = v.id AND se.status = 'sending'
"""

_FINISHED = """
SELECT id::text, tenant_key, status, provider_message_id, error, coalesce(sent_at, updated_at)
FROM dripdrop.step_executions
WHERE id = ANY(%s::uuid[]) AND status IN ('sent', 'failed', 'ambiguous')
"""

INTERRUPTED = "interrupted_while_sending"
"""``error`` of a row found in ``sending`` with no live owner (its worker crashed)."""


class SenderDatabaseError(Exception):
    """PostgreSQL failed; the whole batch may be retried (the ledger makes that safe).

    Attributes:
        results: outcomes of messages already delivered when the failure came while
            recording them. Publish them: a retried batch reports those rows
            ``ambiguous`` instead, because their outcome never reached the ledger.
    """

    code = "transient"

    def __init__(self, message: str, *, results: Sequence[DispatchResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What ``deliver`` did with each command of a batch.

    Attributes:
        results: ``dispatch-results`` records: rows sent, failed, or ambiguous (including
            rows found orphaned in ``sending``).
        cancelled: step execution ids not sent because the enrollment is no longer active.
        duplicates: ids already finished, or being sent right now by another worker.
        unknown: ids with no ledger row for the command's tenant (nothing done).
    """

    results: tuple[DispatchResult, ...]
    cancelled: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Claim:
    claimed: tuple[str, ...]
    orphaned: tuple[str, ...]
    cancelled: tuple[str, ...]
    duplicates: tuple[str, ...]
    unknown: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Delivery:
    status: str
    provider_message_id: str | None
    error: str | None
    finished_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Sender:
    """Deliver batches of ``dispatch`` commands through the ledger.

    Args:
        pool: an open psycopg ``AsyncConnectionPool`` on the DripDrop database. One
            connection per ``deliver`` call is held for the batch: it owns the locks.
        providers: ``adapter_id`` → provider (e.g. ``ProviderRegistry.provider_for`` over
            the adapters the worker knows). A ``LookupError`` or ``ProviderError`` from it
            fails that message.
        concurrency: sends in flight per batch.
        transient_attempts: tries per message while the provider says nothing was sent.
        backoff_seconds: first pause between those tries (then ×4).
        clock: ``now`` for ``sent_at`` / ``finished_at``; the scaled clock in demos.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        providers: Callable[[str], Provider],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        transient_attempts: int = DEFAULT_TRANSIENT_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._pool = pool
        self._providers = providers
        self._concurrency = max(1, concurrency)
        self._attempts = max(1, transient_attempts)
        self._backoff = backoff_seconds
        self._clock = clock

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
                try:
                    outcome = await self._deliver_on(conn, by_id)
                finally:
                    await _release_locks(conn)
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

    async def _deliver_on(
        self, conn: AsyncConnection[Any], by_id: Mapping[str, Command]
    ) -> BatchOutcome:
        claim = await self._claim(conn, by_id)
        now = self._clock()
        orphaned = [
            _result(by_id[id_], _Delivery("ambiguous", None, INTERRUPTED, now))
            for id_ in claim.orphaned
        ]
        deliveries = await self._send_all([by_id[id_] for id_ in claim.claimed])
        sent = [_result(by_id[id_], d) for id_, d in zip(claim.claimed, deliveries, strict=True)]
        try:
            await _record(conn, claim.claimed, deliveries)
        except psycopg.Error as exc:
            raise SenderDatabaseError(
                f"ledger outcome: {type(exc).__name__}", results=orphaned + sent
            ) from exc
        return BatchOutcome(
            results=tuple(orphaned + sent),
            cancelled=claim.cancelled,
            duplicates=claim.duplicates,
            unknown=claim.unknown,
        )

    async def _claim(self, conn: AsyncConnection[Any], by_id: Mapping[str, Command]) -> _Claim:
        """One transaction: lock the rows, claim, hold locks, cancel, find orphans."""
        async with conn.transaction():
            rows = await _fetch(conn, _LOCK_ROWS, list(by_id))
            intent: list[str] = []
            sending: list[str] = []
            finished: list[str] = []
            found: set[str] = set()
            for id_, tenant_key, status in rows:
                if tenant_key != by_id[id_]["tenant_key"]:
                    continue  # another tenant's row: treat as unknown, never touch it
                found.add(id_)
                {"intent": intent, "sending": sending}.get(status, finished).append(id_)
            unknown = tuple(id_ for id_ in by_id if id_ not in found)
            claimed = [row[0] for row in await _fetch(conn, _CLAIM, intent)]
            if claimed:
                await conn.execute(_HOLD, (claimed,))
            rest = [id_ for id_ in intent if id_ not in set(claimed)]
            cancelled = [row[0] for row in await _fetch(conn, _CANCEL, rest)] if rest else []
            orphaned: list[str] = []
            if sending:
                free = [row[0] for row in await _fetch(conn, _ORPHANED, sending)]
                if free:
                    marked = await _fetch(conn, _MARK_AMBIGUOUS, INTERRUPTED, free)
                    orphaned = [row[0] for row in marked]
        in_flight = [id_ for id_ in sending if id_ not in set(orphaned)]
        # An intent row neither claimed nor cancelled: its enrollment changed between the two
        # statements (e.g. paused → active). Nothing was done; a later command may send it.
        skipped = [id_ for id_ in rest if id_ not in set(cancelled)]
        if unknown:
            log.warning("dispatch commands without a ledger row: %s", ", ".join(unknown))
        return _Claim(
            claimed=tuple(claimed),
            orphaned=tuple(orphaned),
            cancelled=tuple(cancelled),
            duplicates=tuple(finished + in_flight + skipped),
            unknown=unknown,
        )

    async def _send_all(self, commands: Sequence[Command]) -> list[_Delivery]:
        gate = asyncio.Semaphore(self._concurrency)

        async def bounded(command: Command) -> _Delivery:
            async with gate:
                return await self._send_one(command)

        return list(await asyncio.gather(*(bounded(command) for command in commands)))

    async def _send_one(self, command: Command) -> _Delivery:
        """Send one claimed command; every outcome is a ``_Delivery``, never an exception."""
        try:
            email = OutboundEmail.from_command(command)
            provider = self._providers(str(command["adapter_id"]))
            provider_id = await self._with_retries(lambda: provider.send(email))
        except TransientDeliveryError as exc:
            return _Delivery("failed", None, f"retries_exhausted: {exc}", self._clock())
        except AmbiguousDeliveryError as exc:
            return _Delivery("ambiguous", None, str(exc), self._clock())
        except ProviderError as exc:
            return _Delivery("failed", None, str(exc), self._clock())
        except (LookupError, TypeError) as exc:
            # A malformed command or an adapter this worker does not know: nothing was sent.
            return _Delivery("failed", None, f"undeliverable: {type(exc).__name__}", self._clock())
        except Exception as exc:  # noqa: BLE001 - a provider bug must still end the claim
            # The provider may have written to the network before failing: ambiguous, not
            # failed, so nobody resends it; the traceback goes to the log for the bug.
            log.exception("provider bug for step execution %s", command["step_execution_id"])
            return _Delivery(
                "ambiguous", None, f"provider_bug: {type(exc).__name__}", self._clock()
            )
        return _Delivery("sent", provider_id, None, self._clock())

    async def _with_retries(self, send: Callable[[], Awaitable[str]]) -> str:
        """Retry while the provider says nothing was handed over; re-raise the last error."""
        for attempt in range(self._attempts):
            try:
                return await send()
            except TransientDeliveryError:
                if attempt + 1 >= self._attempts:
                    raise
                await asyncio.sleep(self._backoff * 4**attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def _fetch(conn: AsyncConnection[Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return list(await cursor.fetchall())


async def _record(
    conn: AsyncConnection[Any], ids: Sequence[str], deliveries: Sequence[_Delivery]
) -> None:
    """Write all outcomes in one statement; only rows still ``sending`` change."""
    if not ids:
        return
    async with conn.transaction():
        await conn.execute(
            _RECORD,
            (
                list(ids),
                [d.status for d in deliveries],
                [d.provider_message_id for d in deliveries],
                [d.error for d in deliveries],
                [d.finished_at for d in deliveries],
            ),
        )


async def _release_locks(conn: AsyncConnection[Any]) -> None:
    """Drop this session's advisory locks before the connection goes back to the pool.

    On a broken connection there is nothing to release: the server ended the session.
    """
    if conn.closed or conn.broken:
        return
    try:
        await conn.execute("SELECT pg_advisory_unlock_all()")
        await conn.commit()
    except psycopg.Error:
        log.warning("could not release advisory locks; the connection will be discarded")
        await conn.close()


def _result(command: Command, delivery: _Delivery) -> DispatchResult:
    return {
        "event_id": command["event_id"],
        "tenant_key": command["tenant_key"],
        "step_execution_id": str(command["step_execution_id"]),
        "enrollment_id": command.get("enrollment_id"),
        "adapter_id": command["adapter_id"],
        "attempt": command.get("attempt", 1),
        "status": delivery.status,
        "provider_message_id": delivery.provider_message_id,
        "error": delivery.error,
        "finished_at": delivery.finished_at,
    }
