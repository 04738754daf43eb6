"""One ``deliver`` call's concurrency: the send workers, the ledger task that claims a row
for each free worker, and the hand-off pacing (``not_before``, per-adapter gap)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection

from streams.sender._ledger import _UNLOCK_ALL, INTERRUPTED, _Claim
from streams.sender._outcome import (
    BatchOutcome,
    Command,
    DispatchResult,
    SenderDatabaseError,
    _Delivery,
    _result,
)

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
