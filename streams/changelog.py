"""Faust tables whose changelog records go out through librdkafka.

Faust sends each table write through its producer buffer and aiokafka: a future, a
buffer slot, a background task step and an accumulator append, tens of microseconds of
Python per write, which made changelog writes the largest cost of the processor. These
tables keep everything else of Faust (RocksDB, recovery, partition assignment, the
changelog topic and its format) and hand the serialized record to ``StreamPublisher``.

At-least-once is unchanged: the publisher's ``barrier`` runs before every offset commit
(``Pipeline._chain_flush``), as Faust's own producer flush does; the persisted changelog
offset in each RocksDB partition (what a restart replays from) is recorded from the
delivery report, as Faust does from its send future.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import TP

from streams.kafka import StreamPublisher

log = logging.getLogger("dripdrop.changelog")


class ChangelogTable(faust.Table):  # type: ignore[misc]  # faust's types are not strict
    """A ``faust.Table`` whose ``on_key_set`` / ``on_key_del`` publish via librdkafka."""

    publisher: StreamPublisher

    def __setitem__(self, key: Any, value: Any) -> None:
        # Faust encodes the value twice (store, then changelog); the bytes are the same
        # (one serializer registry, one key/value type), and recovery writes changelog
        # bytes into RocksDB as they are, so encode once and use the bytes for both.
        store = self.data
        if not hasattr(store, "_set"):  # not a serialized (RocksDB) store: Faust's own path
            super().__setitem__(key, value)
            return
        partition = self.partition_for_key(key)
        key_bytes = store._encode_key(key)  # noqa: SLF001 - faust-streaming 0.15, pinned
        value_bytes = store._encode_value(value)  # noqa: SLF001
        self._send(partition, key_bytes, value_bytes)  # first, as Faust: a refused record
        store._set(key_bytes, value_bytes)  # noqa: SLF001 - leaves the store untouched
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_set(self, key: Any, value: Any) -> None:
        partition = self.partition_for_key(key)
        self._publish(partition, key, value, self.value_serializer)
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        partition = self.partition_for_key(key)
        self._publish(partition, key, None, "raw")
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)

    def _publish(self, partition: int, key: Any, value: Any, value_serializer: Any) -> None:
        topic = self.changelog_topic
        key_bytes, headers = topic.prepare_key(key, self.key_serializer)
        value_bytes, _ = topic.prepare_value(value, value_serializer, headers=headers)
        self._send(partition, key_bytes, value_bytes)

    def _send(self, partition: int, key_bytes: bytes, value_bytes: bytes | None) -> None:
        self.publisher.send_nowait(
            self.changelog_topic_name,
            key=key_bytes,
            value=value_bytes,
            partition=partition,
            on_delivered=self._persist_offset,
        )

    def _persist_offset(self, partition: int, offset: int) -> None:
        try:
            self.data.set_persisted_offset(TP(self.changelog_topic_name, partition), offset)
        except Exception as exc:  # noqa: BLE001 - e.g. the partition was revoked meanwhile
            # Only a later restart's replay gets longer: it starts from an older offset.
            log.debug("persisted offset not recorded for %s[%d]: %s", self.name, partition, exc)


def changelog_tables(
    app: faust.App, names: tuple[str, ...], partitions: int, publisher: StreamPublisher
) -> dict[str, faust.Table]:
    """Declare ``names`` on ``app`` as ``ChangelogTable``s (what ``app.Table`` does)."""
    tables: dict[str, faust.Table] = {}
    for name in names:
        table = ChangelogTable(
            app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions
        )
        table.publisher = publisher
        tables[name] = app.tables.add(table)
    return tables
