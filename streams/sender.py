"""The send ledger: delivers ``dispatch`` commands at most once per step execution (SPEC §7).

``dripdrop.step_executions`` is the ledger. A row moves ``intent → sending`` in a claim
transaction, its email goes out, and a later transaction writes ``sent`` / ``failed`` /
``ambiguous``. A row becomes ``sending`` only when a send worker is free to hand it to the
provider at once: each of the ``concurrency`` workers holds at most one row, and one ledger
task claims a row for every worker that asks, in the same transaction (one round trip) that
records the outcomes those workers just finished. So at any moment at most ``concurrency``
rows of a batch are ``sending``, and a crash leaves only those (the sends really in flight)
``ambiguous``, never a batch claimed ahead (issue 11). What makes it safe:

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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from streams.providers import UnknownProviderError
from streams.providers.base import (
    AmbiguousDeliveryError,
    OutboundEmail,
    Provider,
    ProviderError,
    RecipientDeferredError,
    RecipientRejectedError,
    TransientDeliveryError,
)

log = logging.getLogger(__name__)

Command = Mapping[str, Any]
"""A decoded ``dispatch`` record (``schemas/dispatch.avsc``)."""

DispatchResult = dict[str, Any]
"""A ``dispatch-results`` record (``schemas/dispatch-results.avsc``)."""

DEFAULT_CONCURRENCY = 8
"""Sends in flight per batch: as many as a Python SMTP sink can absorb (≈8 connections),
so the server, not the sender, is the limit; more only queues inside the provider pool.
Also the most rows of a batch that are ``sending`` at once: what a crash can leave
``ambiguous``."""


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
SET status = CASE WHEN v.status IN ('retry', 'deferred') THEN 'intent'
                  WHEN v.status = 'bounced' THEN 'failed' ELSE v.status END,
    provider_message_id = v.provider_message_id,
    -- The ledger keeps a bounce as failed; the prefix lets a replayed command report it
    -- as the bounce it was (_FINISHED).
    error = CASE WHEN v.status = 'bounced' THEN 'bounced: ' || v.error ELSE v.error END,
    sent_at = CASE WHEN v.status = 'sent' THEN v.finished_at ELSE se.sent_at END,
    updated_at = now()
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
  AS v(id, status, provider_message_id, error, finished_at)
WHERE se.id = v.id AND se.status = 'sending'
"""

_FINISHED = """
SELECT id::text, tenant_key,
       CASE WHEN status = 'failed' AND error LIKE 'bounced: %%' THEN 'bounced' ELSE status END,
       provider_message_id, error, coalesce(sent_at, updated_at)
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
    retry_after_ms: int | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_GAP = timedelta(0)


def _not_before(command: Command) -> datetime | None:
    """The command's hand-off time (``not_before``), if it has a valid one."""
    at = command.get("not_before")
    return at if isinstance(at, datetime) and at.tzinfo is not None else None


def _adapter_of(command: Command) -> str | None:
    adapter_id = command.get("adapter_id")
    return adapter_id if isinstance(adapter_id, str) else None


def _no_gap(_adapter_id: str) -> timedelta:
    return _NO_GAP


async def _real_wait_until(at: datetime) -> None:
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


def _retry_after_ms(exc: TransientDeliveryError) -> int | None:
    """The provider's requested wait (``Retry-After``), in milliseconds, if it gave one."""
    return None if exc.retry_after is None else int(exc.retry_after * 1000)


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
                    claim=self._claim,
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

    async def _claim(
        self,
        conn: AsyncConnection[Any],
        by_id: Mapping[str, Command],
        *,
        outcomes: Mapping[str, _Delivery] | None = None,
        then: str | None = None,
    ) -> _Claim:
        """One transaction in one round trip: record ``outcomes``, then lock the rows of
        ``by_id``, mark orphans, claim, cancel; ``then`` runs after the commit."""
        ids = list(by_id)
        tenants = [_tenant_key(by_id[id_]) for id_ in ids]
        statements: list[tuple[str, Sequence[Any]]] = []
        if outcomes:
            statements.append(_record_statement(outcomes))
        if ids:
            statements += [
                (_LOCK_ROWS, (ids,)),
                (_MARK_ORPHANED, (INTERRUPTED, ids, tenants)),
                (_CLAIM, (ids, tenants)),
                (_CANCEL, (ids, tenants)),
            ]
        replies = await _atomically(conn, *statements, then=then)
        if not ids:
            return _Claim((), (), (), (), ())
        locked, orphans, claims, cancels = replies[-4:]
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
            # One try: a failure that took nothing goes back to the processor, which sends
            # the same again after a back-off of seconds to minutes (``dripdrop_core.outcomes``),
            # never a burst of tries within a second.
            provider_id = await provider.send(email)
        except RecipientDeferredError as exc:
            # This recipient's server said "later" (4xx at RCPT/DATA): the same send goes
            # again with back-off, up to the recipient retry limit (SPEC §7).
            return _Delivery("retry", None, str(exc), self._clock(), _retry_after_ms(exc))
        except TransientDeliveryError as exc:
            # Nothing was handed over and nothing is wrong with the recipient (an outage, a
            # refused connection, 421, a rejected login): the row goes back to ``intent`` and
            # the processor re-issues the same send later and counts it in the adapter's
            # circuit breaker; the step is never failed for it.
            return _Delivery("deferred", None, str(exc), self._clock(), _retry_after_ms(exc))
        except UnknownProviderError as exc:
            # Configuration, not the message: fixing the adapter fixes every held send.
            return _Delivery("deferred", None, str(exc), self._clock())
        except RecipientRejectedError as exc:
            return _Delivery("bounced", None, str(exc), self._clock())
        except AmbiguousDeliveryError as exc:
            return _Delivery("ambiguous", None, str(exc), self._clock())
        except ProviderError as exc:
            return _Delivery("failed", None, str(exc), self._clock())
        except LookupError as exc:
            # An adapter this worker does not know (yet: its config may still be on the
            # way): nothing was sent, and nothing is wrong with the message.
            return _Delivery("deferred", None, f"adapter_unknown: {exc}", self._clock())
        except TypeError as exc:
            # A malformed command: nothing was sent, and it would fail the same way again.
            return _Delivery("failed", None, f"undeliverable: {type(exc).__name__}", self._clock())
        except Exception as exc:  # noqa: BLE001 - a provider bug must still end the claim
            # The provider may have written to the network before failing: ambiguous, not
            # failed, so nobody resends it; the traceback goes to the log for the bug.
            log.exception("provider bug for step execution %s", command["step_execution_id"])
            return _Delivery(
                "ambiguous", None, f"provider_bug: {type(exc).__name__}", self._clock()
            )
        return _Delivery("sent", provider_id, None, self._clock())


class _Stream:
    """One ``deliver`` call: rows claimed on demand, one per free worker, never ahead.

    Each of ``concurrency`` workers loops: ask the ledger task for a row (handing over the
    outcome of its previous send), send it, ask again. The ledger task serves everyone who
    asked since its last transaction in one transaction on the batch's connection (which
    owns the advisory locks): the outcomes are recorded and as many rows are claimed as
    workers wait. While one transaction is in flight the next requests queue up, so a
    slower database means larger transactions, not more rows ``sending``: a row is
    ``sending`` from the claim that gives it to a free worker until the transaction that
    records its outcome, so at most ``concurrency`` rows of the batch are at any time.

    A ledger failure stops further claims and records. Rows already claimed are in a
    worker's hands and are still sent; then ``SenderDatabaseError`` carries every outcome
    delivered so far.
    """

    def __init__(
        self,
        conn: AsyncConnection[Any],
        by_id: Mapping[str, Command],
        *,
        claim: Callable[..., Awaitable[_Claim]],
        send: Callable[[Command], Awaitable[_Delivery]],
        clock: Callable[[], datetime],
        wait_until: Callable[[datetime], Awaitable[None]],
        concurrency: int,
        gap: Callable[[str], timedelta] = _no_gap,
        handoffs: dict[str, datetime] | None = None,
    ) -> None:
        self._conn = conn
        self._by_id = by_id
        self._claim = claim
        self._send = send
        self._clock = clock
        self._wait_until = wait_until
        # Ids not claimed yet, by hand-off time (``not_before``), then in batch order.
        self._todo = deque(sorted(by_id, key=lambda i: _not_before(by_id[i]) or _EPOCH))
        self._workers = min(concurrency, len(by_id))
        self._active = self._workers  # workers not yet told that the batch is over
        self._requests: list[tuple[str | None, asyncio.Future[str | None]]] = []
        self._wake = asyncio.Event()
        self._claims: list[_Claim] = []
        self._orphaned: list[DispatchResult] = []
        self._delivered: dict[str, _Delivery] = {}
        self._error: Exception | None = None
        self._error_what = "ledger"
        self._gap = gap
        self._handoffs = {} if handoffs is None else handoffs
        # Adapters with a gap whose send is claimed or in flight, and a wake-up when one ends.
        self._busy: set[str] = set()
        self._freed = asyncio.Event()
        self.locks_released = False
        """True once the last outcomes were recorded and the advisory locks dropped with them."""

    async def run(self) -> BatchOutcome:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._ledger())
            for _ in range(self._workers):
                tasks.create_task(self._work())
        claimed = [id_ for claim in self._claims for id_ in claim.claimed]
        results = self._orphaned + [_result(self._by_id[i], self._delivered[i]) for i in claimed]
        if isinstance(self._error, psycopg.Error):
            raise SenderDatabaseError(
                f"{self._error_what}: {type(self._error).__name__}", results=results
            ) from self._error
        if self._error is not None:
            raise self._error  # a bug, not the database: surfaces as before, after the sends
        return BatchOutcome(
            results=tuple(results),
            cancelled=tuple(id_ for claim in self._claims for id_ in claim.cancelled),
            duplicates=tuple(id_ for claim in self._claims for id_ in claim.duplicates),
            unknown=tuple(id_ for claim in self._claims for id_ in claim.unknown),
        )

    async def _work(self) -> None:
        finished: str | None = None
        while True:
            row: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._requests.append((finished, row))
            self._wake.set()
            id_ = await row
            if id_ is None:
                return
            delivery = await self._send(self._by_id[id_])
            self._delivered[id_] = delivery
            adapter_id = _adapter_of(self._by_id[id_])
            if adapter_id is not None and adapter_id in self._busy:
                last = self._handoffs.get(adapter_id)
                self._handoffs[adapter_id] = max(last or delivery.finished_at, delivery.finished_at)
                self._free(adapter_id)
            finished = id_

    async def _ledger(self) -> None:
        while self._active:
            if not self._requests:
                self._wake.clear()
                await self._wake.wait()
                continue
            requests, self._requests = self._requests, []
            await self._serve(
                [id_ for id_, _ in requests if id_ is not None], [row for _, row in requests]
            )

    async def _serve(self, finished: list[str], waiting: list[asyncio.Future[str | None]]) -> None:
        """Record ``finished`` and hand a claimed row to each of ``waiting`` (``None``: done).

        A claim can yield fewer rows than it was given ids (duplicates, cancelled, orphans):
        then the next ids are claimed for the workers still waiting, until none is left.
        """
        while waiting:
            now = self._clock()
            if self._todo and not self._error:
                # Held until its hand-off time, *before* its claim: a row is ``sending`` only
                # while it is really being handed over (a crash in the wait leaves it intent).
                now = await self._until_ready()
            take = [] if self._error else self._take(len(waiting), now)
            # Everyone still working is asking and nothing is left: the batch's last
            # transaction, which also drops the locks (after COMMIT: they guard nothing now).
            last = not take and len(waiting) == self._active
            if (finished or take) and self._error is None:
                try:
                    claim = await self._claim(
                        self._conn,
                        {id_: self._by_id[id_] for id_ in take},
                        outcomes={id_: self._delivered[id_] for id_ in finished},
                        then=_UNLOCK_ALL if last else None,
                    )
                except Exception as exc:  # noqa: BLE001 - re-raised by run() after the sends
                    # Rolled back: nothing of ``take`` was claimed, ``finished`` not recorded.
                    self._error = exc
                    self._error_what = "ledger" if take else "ledger outcome"
                    claimed: tuple[str, ...] = ()
                else:
                    self.locks_released = last
                    self._add(claim)
                    claimed = claim.claimed
                    for id_ in claim.claimed:
                        waiting.pop(0).set_result(id_)
                for id_ in set(take) - set(claimed):  # not sent: its adapter is free again
                    adapter_id = _adapter_of(self._by_id[id_])
                    if adapter_id is not None:
                        self._free(adapter_id)
                finished = []
            if not take:
                for row in waiting:
                    row.set_result(None)
                self._active -= len(waiting)
                return

    def _ready_at(self, id_: str) -> datetime | None:
        """When ``id_`` may be handed over: its ``not_before``, and for an adapter with a gap
        one gap after its previous send finished (``None`` while that send is out)."""
        command = self._by_id[id_]
        at = _not_before(command) or _EPOCH
        adapter_id = _adapter_of(command)
        if adapter_id is None or self._gap(adapter_id) <= _NO_GAP:
            return at
        if adapter_id in self._busy:
            return None
        last = self._handoffs.get(adapter_id)
        return at if last is None else max(at, last + self._gap(adapter_id))

    async def _until_ready(self) -> datetime:
        """Wait until an id not claimed yet may be handed over; return that ``now``."""
        while True:
            self._freed.clear()
            now = self._clock()
            times = [at for id_ in self._todo if (at := self._ready_at(id_)) is not None]
            if times and min(times) <= now or not times and not self._busy:
                return now
            # Until the earliest hand-off time, or until a send ends (its adapter's next).
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._freed.wait())]
            if times:
                waits.append(asyncio.ensure_future(self._wait_until(min(times))))
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
            if times and waits[1] in done:
                waits[1].result()
                return max(self._clock(), min(times))  # it was waited for

    def _take(self, count: int, now: datetime) -> list[str]:
        """The next ``count`` ids of the batch not claimed yet whose hand-off time has come
        (see ``_ready_at``), in ``not_before`` order; fewer near its end. One per adapter
        with a gap: the next one waits for it to finish."""
        taken: list[str] = []
        for id_ in list(self._todo):
            if len(taken) >= count:
                break
            at = self._ready_at(id_)
            if at is None or at > now:
                continue
            taken.append(id_)
            self._todo.remove(id_)
            adapter_id = _adapter_of(self._by_id[id_])
            if adapter_id is not None and self._gap(adapter_id) > _NO_GAP:
                self._busy.add(adapter_id)
        if not taken and self._todo and not self._busy:
            taken.append(self._todo.popleft())  # waited for; never end a batch with ids left
        return taken

    def _free(self, adapter_id: str) -> None:
        self._busy.discard(adapter_id)
        self._freed.set()

    def _add(self, claim: _Claim) -> None:
        self._claims.append(claim)
        now = self._clock()
        self._orphaned.extend(
            _result(self._by_id[id_], _Delivery("ambiguous", None, INTERRUPTED, now))
            for id_ in claim.orphaned
        )


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


def _record_statement(outcomes: Mapping[str, _Delivery]) -> tuple[str, Sequence[Any]]:
    """All outcomes in one statement; only rows still ``sending`` change."""
    deliveries = list(outcomes.values())
    return (
        _RECORD,
        (
            list(outcomes),
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
    event_id = str(command["event_id"])
    if delivery.status in ("retry", "deferred"):  # one per try; the outcome keeps the id
        event_id = f"{event_id}:retry:{int(delivery.finished_at.timestamp() * 1000)}"
    return {
        "event_id": event_id,
        "tenant_key": command["tenant_key"],
        "step_execution_id": str(command["step_execution_id"]),
        "enrollment_id": command.get("enrollment_id"),
        "adapter_id": command["adapter_id"],
        "attempt": command.get("attempt", 1),
        "status": delivery.status,
        "provider_message_id": delivery.provider_message_id,
        "error": delivery.error,
        "retry_after_ms": delivery.retry_after_ms,
        "finished_at": delivery.finished_at,
    }
