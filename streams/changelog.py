"""Faust tables whose writes are staged by the ``Checkpoint`` and whose changelog records go
out through librdkafka.

Faust writes a table value into RocksDB at once and sends its changelog record through its
producer buffer and aiokafka. Both are wrong for us: RocksDB then runs ahead of what is
durable (the loss ``streams/checkpoint.py`` explains), and aiokafka costs tens of
microseconds of Python per record. These tables keep everything else of Faust (RocksDB,
recovery, partition assignment, the changelog topic and its format); a write is encoded
once, staged in the checkpoint (where reads find it), produced by ``StreamPublisher`` and
written into RocksDB when the checkpoint commits.

A table on Faust's memory store (never used by the worker; it has no durability to keep)
takes Faust's own write path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import faust
import rocksdict
from faust.streams import current_event

from dripdrop_core.errors import ErrorCode, RecordError
from streams.checkpoint import DELETED, MISS, Checkpoint, Write
from streams.kafka import StreamPublisher

log = logging.getLogger("dripdrop.changelog")

MAX_RECORD_BYTES = 900_000
"""Largest table record (key + value) staged: the broker refuses records over ~1 MB, and a
refusal at commit time would stop every commit of the worker; inside the event it only
fails that event (dead-lettered)."""


class StateTooLargeError(RecordError):
    """A table value over ``MAX_RECORD_BYTES``: the event that wrote it is dead-lettered."""

    code: ErrorCode = "state_too_large"


class ChangelogTable(faust.Table[Any, Any]):
    """A ``faust.Table`` whose writes go through ``checkpoint``; see the module docstring."""

    publisher: StreamPublisher
    checkpoint: Checkpoint

    # ------------------------------------------------------------ writes: staged

    def __setitem__(self, key: Any, value: Any) -> None:
        store: Any = self.data
        if not _serialized(store):
            super().__setitem__(key, value)
            return
        # The store and the changelog hold the same bytes (one serializer registry, and
        # recovery writes changelog bytes into RocksDB as they are): encode once.
        write = Write(
            store._encode_key(key),  # noqa: SLF001 - faust-streaming 0.15, pinned
            store._encode_value(value),  # noqa: SLF001
            store._decode_value,  # noqa: SLF001
        )
        size = len(write.key_bytes) + len(write.value_bytes or b"")
        if size > MAX_RECORD_BYTES:
            raise StateTooLargeError(
                f"{self.name}[{key!r}] would be {size} bytes (limit {MAX_RECORD_BYTES})"
            )
        self.checkpoint.stage(self.name, self._partition(key), key, write)
        self._sensor_on_set(self, key, value)

    def __delitem__(self, key: Any) -> None:
        store: Any = self.data
        if not _serialized(store):
            super().__delitem__(key)
            return
        write = Write(store._encode_key(key), None, store._decode_value)  # noqa: SLF001
        self.checkpoint.stage(self.name, self._partition(key), key, write)
        self._sensor_on_del(self, key)

    # ------------------------------------------------------------ reads: staged first

    def __getitem__(self, key: Any) -> Any:
        staged = self.checkpoint.lookup(self.name, _event_partition(), key)
        if staged is MISS:
            return super().__getitem__(key)
        if staged is DELETED:
            return self.__missing__(key)
        return staged

    def get(self, key: Any, default: Any = None) -> Any:
        staged = self.checkpoint.lookup(self.name, _event_partition(), key)
        if staged is MISS:
            return super().get(key, default)
        return default if staged is DELETED else staged

    def __contains__(self, key: object) -> bool:
        staged = self.checkpoint.lookup(self.name, _event_partition(), key)
        if staged is MISS:
            return bool(super().__contains__(key))
        return staged is not DELETED

    def partition_items(self, partition: int) -> Iterator[tuple[Any, Any]]:
        """One partition's items, staged writes included.

        The RocksDB store keeps a database per partition, and iterating the table would
        decode every partition's values (faust-streaming 0.15's ``_db_for_partition`` /
        ``_visible_items``; pinned in pyproject)."""
        staged = dict(self.checkpoint.staged_items(self.name, partition))
        data: Any = self.data
        if not _serialized(data):  # memory store: one shared dict
            yield from ((k, v) for k, v in list(data.items()) if k not in staged)
        else:
            db = data._db_for_partition(partition)  # noqa: SLF001 - see the docstring
            for key_bytes, value_bytes in data._visible_items(db):  # noqa: SLF001
                key = data._decode_key(key_bytes)  # noqa: SLF001
                if key not in staged:
                    yield key, data._decode_value(value_bytes)  # noqa: SLF001
        yield from ((k, v) for k, v in staged.items() if v is not DELETED)

    # ------------------------------------------------------------ the checkpoint's side

    def produce_changelog(
        self, partition: int, write: Write, on_delivered: Callable[[int, int], None]
    ) -> None:
        self.publisher.send_nowait(
            self.changelog_topic_name,
            key=write.key_bytes,
            value=write.value_bytes,
            partition=partition,
            on_delivered=on_delivered,
        )

    def apply_to_store(
        self, partition: int, writes: list[Write], changelog_offset: int | None
    ) -> None:
        """Write acknowledged values into the partition's RocksDB, and the changelog offset
        they reflect (Faust's persisted offset) in the same atomic batch."""
        store: Any = self.data
        batch = rocksdict.WriteBatch(raw_mode=True)
        for write in writes:
            if write.value_bytes is None:
                batch.delete(write.key_bytes)
            else:
                batch.put(write.key_bytes, write.value_bytes)
        if changelog_offset is not None:
            batch.put(store.offset_key, str(changelog_offset).encode())
        store._db_for_partition(partition).write(batch)  # noqa: SLF001

    # ------------------------------------------------------------ memory store: Faust's path

    def on_key_set(self, key: Any, value: Any) -> None:
        partition = self._partition(key)
        self._publish(partition, key, value, self.value_serializer)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        partition = self._partition(key)
        self._publish(partition, key, None, "raw")
        self._sensor_on_del(self, key)

    def _partition(self, key: Any) -> int:
        """The current event's partition (Faust refuses a table write outside an event)."""
        partition = self.partition_for_key(key)
        assert partition is not None  # noqa: S101 - use_partitioner is never set here
        return partition

    def _publish(self, partition: int, key: Any, value: Any, value_serializer: Any) -> None:
        topic: Any = self.changelog_topic
        key_bytes, headers = topic.prepare_key(key, self.key_serializer)
        value_bytes, _ = topic.prepare_value(value, value_serializer, headers=headers)
        self.publisher.send_nowait(
            self.changelog_topic_name, key=key_bytes, value=value_bytes, partition=partition
        )


def _serialized(store: Any) -> bool:
    """A RocksDB (bytes) store, as opposed to Faust's memory store."""
    return hasattr(store, "_db_for_partition")


def _event_partition() -> int | None:
    """The partition Faust's RocksDB store reads from: the current event's, else any."""
    event = current_event()
    return None if event is None else int(event.message.partition)


def changelog_tables(
    app: faust.App,
    names: tuple[str, ...],
    partitions: int,
    publisher: StreamPublisher,
    checkpoint: Checkpoint,
) -> dict[str, ChangelogTable]:
    """Declare ``names`` on ``app`` as ``ChangelogTable``s (what ``app.Table`` does)."""
    tables: dict[str, ChangelogTable] = {}
    for name in names:
        table = ChangelogTable(
            app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions
        )
        table.publisher = publisher
        table.checkpoint = checkpoint
        checkpoint.register(table)
        app.tables.add(table)
        tables[name] = table
    return tables
