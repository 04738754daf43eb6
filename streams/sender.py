"""The send ledger: delivers ``dispatch`` commands at most once per step execution (SPEC §7).

``dripdrop.step_executions`` is the ledger. A row moves ``intent → sending`` in a claim
transaction, its email goes out, and a later transaction writes ``sent`` / ``failed`` /
``ambiguous``. A batch is streamed: it is claimed in chunks (a small first one, so sending
starts after one short transaction), eight workers send each row as soon as its chunk is
claimed, and outcomes are written in chunks while other sends are still in flight; every
transaction travels in one round trip. What makes it safe:

* Only a row claimed from ``intent`` (by a command of the row's own tenant) is sent, so a
  duplicate or replayed command is a no-op; another tenant's row is never touched.
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
from psycopg.pq import TransactionStatus
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

FIRST_CLAIM_ROUNDS = 2
"""The first claim of a batch covers this many rounds of sends (× concurrency): small, so
the first sends start after one short transaction, and enough to keep every connection
busy while the rest of the batch is claimed."""

CLAIM_CHUNK = 256
"""Rows per later claim transaction."""

RECORD_CHUNK_ROUNDS = 2
"""Outcomes are recorded while sends are in flight once this many rounds (× concurrency)
have finished; whatever is left is recorded when the last send of the batch ends."""

DRAIN_RECORD_DIVISOR = 2
"""While a batch drains (nothing left to hand out), record every concurrency / this."""

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

# The command's (id, tenant_key) pairs: a row of another tenant never matches, so it is never
# touched and its id is reported unknown.
_COMMANDS = "unnest(%s::uuid[], %s::text[]) AS c(id, tenant_key)"

# A row in ``sending`` whose advisory lock is free belonged to a worker that is gone. The
# try-lock never waits, so it cannot deadlock with a claimer; it is only tried on this
# tenant's ``sending`` rows (CASE fixes the evaluation order) and held until commit.
_MARK_ORPHANED = f"""
UPDATE dripdrop.step_executions AS se
SET status = 'ambiguous', error = %s, updated_at = now()
FROM {_COMMANDS}
WHERE se.id = c.id
  AND CASE WHEN se.status = 'sending' AND se.tenant_key = c.tenant_key
      THEN pg_try_advisory_xact_lock({_LOCK_KEY.format("se.id")}) ELSE false END
RETURNING se.id::text
"""

# Claim and take the session advisory lock of every claimed row, in one statement.
_CLAIM = f"""
UPDATE dripdrop.step_executions AS se
SET status = 'sending', updated_at = now()
FROM {_COMMANDS}
WHERE se.id = c.id AND se.tenant_key = c.tenant_key
  AND se.status = 'intent'
  AND NOT EXISTS (
    SELECT 1 FROM dripdrop.enrollments e
    WHERE e.id = se.enrollment_id AND e.state <> 'active'
  )
RETURNING se.id::text, pg_advisory_lock({_LOCK_KEY.format("se.id")})
"""

# After _CLAIM: the rows still ``intent`` are exactly those it did not claim.
_CANCEL = f"""
UPDATE dripdrop.step_executions AS se
SET status = 'cancelled', error = 'enrollment_' || e.state, updated_at = now()
FROM {_COMMANDS}, dripdrop.enrollments e
WHERE se.id = c.id AND se.tenant_key = c.tenant_key
  AND se.status = 'intent'
  AND e.tenant_key = se.tenant_key AND e.id = se.enrollment_id
  AND e.state <> 'active'
RETURNING se.id::text
"""

_UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"

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
                autocommit = conn.autocommit
                await conn.set_autocommit(True)  # see _atomically: one round trip per transaction
                stream = _Stream(
                    conn,
                    by_id,
                    claim=self._claim,
                    send=self._send_one,
                    clock=self._clock,
                    concurrency=self._concurrency,
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

    async def _claim(self, conn: AsyncConnection[Any], by_id: Mapping[str, Command]) -> _Claim:
        """One transaction in one round trip: lock the rows, mark orphans, claim, cancel."""
        ids = list(by_id)
        tenants = [_tenant_key(by_id[id_]) for id_ in ids]
        locked, orphans, claims, cancels = await _atomically(
            conn,
            (_LOCK_ROWS, (ids,)),
            (_MARK_ORPHANED, (INTERRUPTED, ids, tenants)),
            (_CLAIM, (ids, tenants)),
            (_CANCEL, (ids, tenants)),
        )
        intent: list[str] = []
        sending: list[str] = []
        finished: list[str] = []
        found: set[str] = set()
        for id_, tenant_key, status in locked:  # each row as it was when locked
            if tenant_key != by_id[id_]["tenant_key"]:
                continue  # another tenant's row: treat as unknown (no statement touched it)
            found.add(id_)
            {"intent": intent, "sending": sending}.get(status, finished).append(id_)
        unknown = tuple(id_ for id_ in by_id if id_ not in found)
        claimed = [row[0] for row in claims]
        orphaned = {row[0] for row in orphans}
        cancelled = [row[0] for row in cancels]
        in_flight = [id_ for id_ in sending if id_ not in orphaned]
        # An intent row neither claimed nor cancelled: its enrollment changed between the two
        # statements (e.g. paused → active). Nothing was done; a later command may send it.
        done = {*claimed, *cancelled}
        skipped = [id_ for id_ in intent if id_ not in done]
        if unknown:
            log.warning("dispatch commands without a ledger row: %s", ", ".join(unknown))
        return _Claim(
            claimed=tuple(claimed),
            orphaned=tuple(id_ for id_ in sending if id_ in orphaned),
            cancelled=tuple(cancelled),
            duplicates=tuple(finished + in_flight + skipped),
            unknown=unknown,
        )

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


class _Stream:
    """One ``deliver`` call as a pipeline over the batch's single ledger connection.

    The batch is claimed in chunks (a small first chunk, so sends start after one short
    transaction); each claimed id goes straight to a queue that ``concurrency`` workers
    drain through the provider; finished sends are recorded in chunks while others are
    still in flight. Claims and records take turns on the connection (it owns the advisory
    locks); each claim applies to its chunk the checks and locks a claim of the whole
    batch applied, and a row is sent only once its claim has committed.

    A ledger failure stops further claims. Rows already claimed are still sent (as before:
    a claimed row is always attempted) and their outcomes are recorded if the connection
    still works; then ``SenderDatabaseError`` carries every outcome delivered so far.
    """

    def __init__(
        self,
        conn: AsyncConnection[Any],
        by_id: Mapping[str, Command],
        *,
        claim: Callable[[AsyncConnection[Any], Mapping[str, Command]], Awaitable[_Claim]],
        send: Callable[[Command], Awaitable[_Delivery]],
        clock: Callable[[], datetime],
        concurrency: int,
    ) -> None:
        self._conn = conn
        self._by_id = by_id
        self._claim = claim
        self._send = send
        self._clock = clock
        self._first_claim = FIRST_CLAIM_ROUNDS * concurrency
        self._record_chunk = RECORD_CHUNK_ROUNDS * concurrency
        self._drain_record_chunk = max(1, concurrency // DRAIN_RECORD_DIVISOR)
        self._db = asyncio.Lock()  # one statement sequence at a time on the connection
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._workers = min(concurrency, len(by_id))
        self._busy_workers = self._workers
        self._unsent = 0  # claimed ids no worker has picked up yet
        self._claiming = True
        self._progress = asyncio.Event()
        self._claims: list[_Claim] = []
        self._orphaned: list[DispatchResult] = []
        self._delivered: dict[str, _Delivery] = {}
        self._unrecorded: list[str] = []
        self._claim_error: Exception | None = None
        self._record_error: Exception | None = None
        self.locks_released = False
        """True once the last outcomes were recorded and the advisory locks dropped with them."""

    async def run(self) -> BatchOutcome:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._claim_all())
            for _ in range(self._workers):
                tasks.create_task(self._work())
            tasks.create_task(self._record_all())
        claimed = [id_ for claim in self._claims for id_ in claim.claimed]
        results = self._orphaned + [_result(self._by_id[i], self._delivered[i]) for i in claimed]
        for error, what in ((self._record_error, "ledger outcome"), (self._claim_error, "ledger")):
            if isinstance(error, psycopg.Error):
                raise SenderDatabaseError(
                    f"{what}: {type(error).__name__}", results=results
                ) from error
            if error is not None:
                raise error  # a bug, not the database: surfaces as before, after the sends
        return BatchOutcome(
            results=tuple(results),
            cancelled=tuple(id_ for claim in self._claims for id_ in claim.cancelled),
            duplicates=tuple(id_ for claim in self._claims for id_ in claim.duplicates),
            unknown=tuple(id_ for claim in self._claims for id_ in claim.unknown),
        )

    async def _claim_all(self) -> None:
        try:
            for chunk in _chunks(list(self._by_id), self._first_claim):
                async with self._db:
                    claim = await self._claim(self._conn, {id_: self._by_id[id_] for id_ in chunk})
                self._claims.append(claim)
                now = self._clock()
                self._orphaned.extend(
                    _result(self._by_id[id_], _Delivery("ambiguous", None, INTERRUPTED, now))
                    for id_ in claim.orphaned
                )
                for id_ in claim.claimed:
                    self._queue.put_nowait(id_)
                self._unsent += len(claim.claimed)
                await asyncio.sleep(0)  # let the workers start these sends before the next claim
        except Exception as exc:  # noqa: BLE001 - re-raised by run() once claimed rows are sent
            self._claim_error = exc  # nothing of this chunk was claimed: its txn rolled back
        finally:
            self._claiming = False
            self._progress.set()
            for _ in range(self._workers):
                self._queue.put_nowait(None)

    async def _work(self) -> None:
        try:
            while (id_ := await self._queue.get()) is not None:
                self._unsent -= 1
                self._delivered[id_] = await self._send(self._by_id[id_])
                self._unrecorded.append(id_)
                self._progress.set()
        finally:
            self._busy_workers -= 1
            self._progress.set()

    async def _record_all(self) -> None:
        """Record finished sends in chunks while others are in flight; the rest at the end.

        Once every claimed row is in a worker's hands (the batch is draining), smaller
        chunks are recorded, so the record that the batch waits for after its last send
        holds only the last few rows.
        """
        minimum = self._record_chunk
        while self._record_error is None:
            finished = self._busy_workers == 0
            if not self._claiming and self._unsent == 0:
                minimum = self._drain_record_chunk  # draining: keep the last record small
            if self._unrecorded and (finished or len(self._unrecorded) >= minimum):
                ids, self._unrecorded = self._unrecorded, []
                try:
                    async with self._db:
                        # The last record of the batch also drops the locks (after COMMIT):
                        # every claimed row is finished, so they guard nothing any more.
                        unlock = _UNLOCK_ALL if finished else None
                        await _record(
                            self._conn, ids, [self._delivered[i] for i in ids], then=unlock
                        )
                    self.locks_released = finished
                except Exception as exc:  # noqa: BLE001 - re-raised by run() after the sends
                    self._record_error = exc
                continue
            if finished:
                return
            self._progress.clear()
            await self._progress.wait()


def _chunks(ids: list[str], first: int) -> list[list[str]]:
    """``first`` ids, then the rest in claims of at most ``CLAIM_CHUNK``."""
    chunks = [ids[:first]]
    chunks.extend(ids[start : start + CLAIM_CHUNK] for start in range(first, len(ids), CLAIM_CHUNK))
    return [chunk for chunk in chunks if chunk]


async def _fetch(conn: AsyncConnection[Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return list(await cursor.fetchall())


async def _atomically(
    conn: AsyncConnection[Any], *statements: tuple[str, Sequence[Any]], then: str | None = None
) -> list[list[tuple[Any, ...]]]:
    """Run ``BEGIN; statements; COMMIT`` (then ``then``, outside it) in one round trip.

    The connection is in autocommit mode (``deliver`` sets it), so psycopg adds no implicit
    ``BEGIN`` with a sync of its own, and pipeline mode sends everything before reading any
    reply. Semantics are those of one ordinary transaction: statements run in order, a
    failing one aborts the rest and nothing commits (rolled back here, then re-raised).

    Returns:
        The rows of each statement (empty for one without ``RETURNING``).
    """
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            cursors = [await conn.execute(sql, params) for sql, params in statements]
            await conn.execute("COMMIT")
            if then is not None:
                await conn.execute(then)
    except psycopg.Error:
        await _rollback(conn)
        raise
    return [list(await c.fetchall()) if c.description else [] for c in cursors]


async def _rollback(conn: AsyncConnection[Any]) -> None:
    """Leave an aborted explicit transaction; a connection that cannot is closed."""
    if conn.closed or conn.broken or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        await conn.execute("ROLLBACK")
    except psycopg.Error:
        await conn.close()


async def _record(
    conn: AsyncConnection[Any],
    ids: Sequence[str],
    deliveries: Sequence[_Delivery],
    *,
    then: str | None = None,
) -> None:
    """Write all outcomes in one statement; only rows still ``sending`` change."""
    await _atomically(
        conn,
        (
            _RECORD,
            (
                list(ids),
                [d.status for d in deliveries],
                [d.provider_message_id for d in deliveries],
                [d.error for d in deliveries],
                [d.finished_at for d in deliveries],
            ),
        ),
        then=then,
    )


async def _release_locks(conn: AsyncConnection[Any]) -> None:
    """Drop this session's advisory locks before the connection goes back to the pool.

    On a broken connection there is nothing to release: the server ended the session.
    """
    if conn.closed or conn.broken:
        return
    try:
        await _rollback(conn)
        await conn.execute(_UNLOCK_ALL)
        await conn.commit()  # a no-op in autocommit mode
    except psycopg.Error:
        log.warning("could not release advisory locks; the connection will be discarded")
        await conn.close()


async def _restore_autocommit(conn: AsyncConnection[Any], autocommit: bool) -> None:
    """Give the connection back to the pool as it came; one that cannot be reset is closed."""
    if conn.closed or conn.broken:
        return
    try:
        await conn.set_autocommit(autocommit)
    except psycopg.Error:
        await conn.close()


def _tenant_key(command: Command) -> str | None:
    """The command's tenant as a SQL parameter; anything but a string matches no row."""
    tenant_key = command.get("tenant_key")
    return tenant_key if isinstance(tenant_key, str) else None


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
