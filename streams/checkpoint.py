"""The one owner of the processor's commit order: local state is never ahead of what is
durable.

The loss this replaces (issue 11): a table write went into RocksDB at once while its
changelog record and the outputs it caused were still in the producer's buffer. After a
SIGKILL the uncommitted inputs were replayed against local state that already held their
effects, were answered as duplicates, and their rows and sends never existed. Recovery made
it worse: it replays the changelog from the last *acknowledged* offset over RocksDB, so
keys that had a durable older record went back in time while their neighbours did not.

The rule, as Quix Streams' ``checkpointing/checkpoint.py`` and Kafka Streams' checkpoint
file order it: a write is *staged* here (readable by the events after it, nowhere else)
and reaches RocksDB only after everything it depends on is acknowledged. ``commit`` runs
right before Faust commits input offsets, and does, in this order:

0. wait until no input event is half done (``processing``: an event's table writes and
   its outputs enter an epoch together);
1. wait until every output produced so far (sink, dispatch, telemetry, …) is acknowledged;
2. produce the epoch's changelog records (the last value of each key: a key written by
   many events costs one record) and wait until they are acknowledged;
3. write the epoch into RocksDB and, in the same partition DB, the changelog offset it
   reflects (Faust's persisted offset, from which recovery replays);
4. return: Faust commits the input offsets.

Why it is complete, crash by crash:

* before 2 ends: nothing of the epoch is in RocksDB and its input offsets are not
  committed, so the inputs are replayed and re-decided; outputs already acknowledged are
  repeated, and every consumer of them is idempotent (deterministic ids, ``claim_send``);
* after 2, before 3 ends: RocksDB's persisted offset is older than the changelog, so
  recovery replays the changelog up to the end: state equals what was acknowledged;
* after 3, before the offset commit: the inputs are replayed against state that holds
  them *and* whose outputs are acknowledged (1 came first): duplicates, correctly.

A restart on an empty data directory or on another worker is the middle case. What no
ordering can make atomic is step 2 across topics: a crash while the epoch's changelog
records are in flight can leave some tables' records durable and others not
(docs/architecture.md says what repairs each). Standbys are off (``app.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from streams import crashpoints
from streams.kafka import StreamPublisher

DELETED: Any = object()
"""What a staged delete reads as."""
MISS: Any = object()
"""``lookup``'s answer when nothing is staged for the key."""


@dataclass(slots=True)
class Write:
    """One staged write: the bytes it becomes, and what it reads as until then."""

    key_bytes: bytes
    value_bytes: bytes | None  # None: a delete
    decode: Callable[[bytes], Any]

    def value(self) -> Any:
        return DELETED if self.value_bytes is None else self.decode(self.value_bytes)


class StagedTable(Protocol):
    """What the checkpoint needs of a table (``streams.changelog.ChangelogTable``)."""

    name: str

    def produce_changelog(
        self, partition: int, write: Write, on_delivered: Callable[[int, int], None]
    ) -> None: ...

    def apply_to_store(
        self, partition: int, writes: list[Write], changelog_offset: int | None
    ) -> None: ...


Epoch = dict[tuple[str, int], dict[Any, Write]]
"""(table, partition) → key → its last write in the epoch."""


class Checkpoint:
    """Staged table writes and the commit that makes them durable; see the module doc."""

    def __init__(self, publisher: StreamPublisher) -> None:
        self.publisher = publisher
        self._tables: dict[str, StagedTable] = {}
        self._open: Epoch = {}  # written since the last commit began
        self._committing: Epoch = {}  # the epoch a commit is making durable
        self._scratch: Epoch | None = None  # the writes of the event being written
        self._lock = asyncio.Lock()
        self._revoked: set[int] = set()  # partitions whose commit in flight is void
        self.commits = 0
        self.records = 0  # changelog records produced (after per-epoch dedup)

    def register(self, table: StagedTable) -> None:
        self._tables[table.name] = table

    # ------------------------------------------------------------ staging and reads

    def stage(self, table: str, partition: int, key: Any, write: Write) -> None:
        epoch = self._open if self._scratch is None else self._scratch
        epoch.setdefault((table, partition), {})[key] = write

    @contextmanager
    def event(self) -> Iterator[None]:
        """The writes staged inside land together, or (on an exception) not at all: a
        value refused midway (over Kafka's size limit) leaves none of its event's writes."""
        self._scratch = {}
        try:
            yield
            for table_partition, writes in self._scratch.items():
                self._open.setdefault(table_partition, {}).update(writes)
        finally:
            self._scratch = None

    def lookup(self, table: str, partition: int | None, key: Any) -> Any:
        """The staged value of ``key`` (``DELETED`` for a staged delete), else ``MISS``.

        ``partition`` None (a read outside an event) looks in every partition, as Faust's
        RocksDB store does then."""
        for epoch in (self._scratch or {}, self._open, self._committing):
            if partition is not None:
                write = epoch.get((table, partition), {}).get(key)
                if write is not None:
                    return write.value()
                continue
            for (name, _), writes in epoch.items():
                if name == table and key in writes:
                    return writes[key].value()
        return MISS

    def staged_items(self, table: str, partition: int) -> Iterator[tuple[Any, Any]]:
        """Staged (key, value-or-``DELETED``) of one partition, newest write per key."""
        merged = dict(self._committing.get((table, partition), {}))
        merged.update(self._open.get((table, partition), {}))
        for key, write in merged.items():
            yield key, write.value()

    def staged_count(self) -> int:
        return sum(len(w) for w in self._open.values()) + sum(
            len(w) for w in self._committing.values()
        )

    def revoke(self, partitions: set[int]) -> None:
        """Partitions leaving this process: their staged writes are dropped, never applied.

        Always safe: RocksDB stays behind the changelog, and recovery (here or at the new
        owner) replays the changelog from the persisted offset."""
        self._revoked |= partitions
        for epoch in (self._open, self._committing):
            for table_partition in [tp for tp in epoch if tp[1] in partitions]:
                del epoch[table_partition]

    # ------------------------------------------------------------ commit

    def processing(self) -> asyncio.Lock:
        """Held by the processor around each input event, from its first table write to
        its last output produced (``async with checkpoint.processing():``).

        ``commit`` takes the same lock, so it never freezes an epoch between an event's
        writes and its outputs. Without it, a commit that ran while an event awaited
        (an urgent PostgreSQL write, a full producer queue) made the event's state durable
        while its outputs were not yet produced; a crash after the changelog then replayed
        the input against state that already held it, answered it as a duplicate, and its
        outputs never existed (376 of 1,900 suppressions lost at ``before_store``).
        """
        return self._lock

    async def commit(self) -> None:
        """Make every write staged so far durable, in the order of the module docstring.

        Raises:
            PublishError: an output or changelog record was not acknowledged; nothing of
                the epoch reaches RocksDB and the caller must not commit offsets.
        """
        async with self._lock:
            await self._commit()

    async def _commit(self) -> None:
        # The epoch is frozen first: every output of its events was produced before this
        # line, so the barrier below covers them all (an event staged while it waits
        # belongs to the next epoch, its outputs possibly not yet acknowledged).
        epoch, self._open = self._open, {}
        self._committing = epoch
        self._revoked = set()
        try:
            # 1. Outputs first, including those of the events Faust is committing.
            await self.publisher.barrier()
            if not epoch:
                return
            crashpoints.reached("checkpoint.before_changelog")
            # 2. The epoch's changelog, one record per key; the offsets they got.
            offsets: dict[tuple[str, int], int] = {}
            for (name, partition), writes in epoch.items():
                table = self._tables[name]
                on_delivered = _max_offset(offsets, name)
                for write in writes.values():
                    table.produce_changelog(partition, write, on_delivered)
                self.records += len(writes)
            crashpoints.reached("checkpoint.changelog_in_flight")
            await self.publisher.barrier()
            crashpoints.reached("checkpoint.before_store")
            # 3. Into RocksDB, with the changelog offset the partition now reflects.
            for (name, partition), writes in epoch.items():
                if partition in self._revoked:
                    continue  # left this process meanwhile: recovery rebuilds it
                self._tables[name].apply_to_store(
                    partition, list(writes.values()), offsets.get((name, partition))
                )
            self.commits += 1
            crashpoints.reached("checkpoint.before_offset_commit")
        except BaseException:
            # Not durable (or not known to be): keep reading it, try again next commit.
            # Producing it twice is harmless (the changelog is compacted, last value wins).
            for table_partition, writes in epoch.items():
                newer = self._open.get(table_partition, {})
                self._open[table_partition] = {**writes, **newer}
            raise
        finally:
            self._committing = {}


def _max_offset(offsets: dict[tuple[str, int], int], name: str) -> Callable[[int, int], None]:
    def delivered(partition: int, offset: int) -> None:
        key = (name, partition)
        if offset > offsets.get(key, -1):
            offsets[key] = offset

    return delivered
