"""The checkpoint's commit order, step by step, with a recording publisher and tables.

The real thing runs against a broker in tests/integration/test_pipeline_crash_pinning.py;
these pin the order itself: outputs acknowledged → changelog produced and acknowledged →
RocksDB written with the offset → return (then Faust commits the offsets).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from streams.checkpoint import DELETED, MISS, Checkpoint, Write
from streams.kafka import PublishError


class Log(list[str]):
    pass


class FakePublisher:
    def __init__(self, log: Log, fail_at: int | None = None) -> None:
        self.log = log
        self.calls = 0
        self.fail_at = fail_at
        self.pending: list[Callable[[], None]] = []

    async def barrier(self) -> None:
        self.calls += 1
        self.log.append(f"barrier{self.calls}")
        if self.calls == self.fail_at:
            raise PublishError("not acknowledged")
        for deliver in self.pending:
            deliver()
        self.pending = []


class FakeTable:
    def __init__(self, name: str, log: Log, publisher: FakePublisher) -> None:
        self.name = name
        self.log = log
        self.publisher = publisher
        self.store: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int] = {}
        self.next_offset = 100

    def produce_changelog(
        self, partition: int, write: Write, on_delivered: Callable[[int, int], None]
    ) -> None:
        self.log.append(f"produce {self.name}[{partition}] {write.key_bytes.decode()}")
        offset, self.next_offset = self.next_offset, self.next_offset + 1
        self.publisher.pending.append(lambda: on_delivered(partition, offset))

    def apply_to_store(self, partition: int, writes: list[Write], offset: int | None) -> None:
        self.log.append(f"apply {self.name}[{partition}] x{len(writes)} @{offset}")
        db = self.store.setdefault(partition, {})
        for w in writes:
            if w.value_bytes is None:
                db.pop(w.key_bytes, None)
            else:
                db[w.key_bytes] = w.value_bytes
        if offset is not None:
            self.offsets[partition] = offset


def write(key: str, value: Any) -> Write:
    data = None if value is None else json.dumps(value).encode()
    return Write(key.encode(), data, json.loads)


def make(fail_at: int | None = None) -> tuple[Checkpoint, FakeTable, Log, FakePublisher]:
    log = Log()
    publisher = FakePublisher(log, fail_at)
    checkpoint = Checkpoint(publisher)  # type: ignore[arg-type]
    table = FakeTable("enrollments", log, publisher)
    checkpoint.register(table)
    return checkpoint, table, log, publisher


def test_commit_orders_outputs_then_changelog_then_store() -> None:
    checkpoint, table, log, _ = make()
    checkpoint.stage("enrollments", 3, "e1", write("e1", {"v": 1}))
    checkpoint.stage("enrollments", 3, "e1", write("e1", {"v": 2}))  # same key: one record
    checkpoint.stage("enrollments", 3, "e2", write("e2", {"v": 1}))
    assert table.store == {}  # staged, not in the store
    asyncio.run(checkpoint.commit())
    assert log == [
        "barrier1",  # the outputs of every event so far
        "produce enrollments[3] e1",
        "produce enrollments[3] e2",
        "barrier2",  # the changelog
        "apply enrollments[3] x2 @101",  # the store, with the offset it reflects
    ]
    assert json.loads(table.store[3][b"e1"]) == {"v": 2}
    assert checkpoint.records == 2 and checkpoint.staged_count() == 0


def test_staged_writes_are_read_before_the_store_and_deletes_read_as_deleted() -> None:
    checkpoint, _, _, _ = make()
    assert checkpoint.lookup("enrollments", 1, "e1") is MISS
    checkpoint.stage("enrollments", 1, "e1", write("e1", {"v": 1}))
    assert checkpoint.lookup("enrollments", 1, "e1") == {"v": 1}
    assert checkpoint.lookup("enrollments", 2, "e1") is MISS  # another partition's key
    assert checkpoint.lookup("enrollments", None, "e1") == {"v": 1}  # outside an event
    checkpoint.stage("enrollments", 1, "e1", write("e1", None))
    assert checkpoint.lookup("enrollments", 1, "e1") is DELETED
    assert dict(checkpoint.staged_items("enrollments", 1)) == {"e1": DELETED}


def test_writes_staged_during_a_commit_stay_readable_and_wait_for_the_next() -> None:
    checkpoint, table, log, publisher = make()
    checkpoint.stage("enrollments", 0, "e1", write("e1", {"v": 1}))

    async def run() -> None:
        original = publisher.barrier

        async def barrier() -> None:
            await original()
            if publisher.calls == 1:  # an event runs while the changelog is in flight
                checkpoint.stage("enrollments", 0, "e2", write("e2", {"v": 1}))
                assert checkpoint.lookup("enrollments", 0, "e1") == {"v": 1}

        publisher.barrier = barrier  # type: ignore[method-assign]
        await checkpoint.commit()

    asyncio.run(run())
    assert set(table.store[0]) == {b"e1"}
    assert checkpoint.lookup("enrollments", 0, "e2") == {"v": 1}
    asyncio.run(checkpoint.commit())
    assert set(table.store[0]) == {b"e1", b"e2"}
    assert log.count("apply enrollments[0] x1 @100") == 1


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_commit_that_fails_writes_nothing_and_keeps_the_epoch_readable(fail_at: int) -> None:
    checkpoint, table, log, _ = make(fail_at)
    checkpoint.stage("enrollments", 0, "e1", write("e1", {"v": 1}))
    with pytest.raises(PublishError):
        asyncio.run(checkpoint.commit())
    assert table.store == {} and not any(line.startswith("apply") for line in log)
    assert checkpoint.lookup("enrollments", 0, "e1") == {"v": 1}


def test_revoked_partitions_are_dropped_never_applied() -> None:
    checkpoint, table, _, _ = make()
    checkpoint.stage("enrollments", 0, "e1", write("e1", {"v": 1}))
    checkpoint.stage("enrollments", 1, "e2", write("e2", {"v": 1}))
    checkpoint.revoke({1})
    asyncio.run(checkpoint.commit())
    assert set(table.store) == {0}
    assert checkpoint.lookup("enrollments", 1, "e2") is MISS


def test_an_event_that_fails_while_staging_leaves_none_of_its_writes() -> None:
    checkpoint, _, _, _ = make()
    with pytest.raises(ValueError), checkpoint.event():
        checkpoint.stage("enrollments", 0, "e1", write("e1", {"v": 1}))
        assert checkpoint.lookup("enrollments", 0, "e1") == {"v": 1}  # readable meanwhile
        raise ValueError("the second write is over Kafka's limit")
    assert checkpoint.lookup("enrollments", 0, "e1") is MISS
    with checkpoint.event():
        checkpoint.stage("enrollments", 0, "e2", write("e2", {"v": 1}))
    assert checkpoint.lookup("enrollments", 0, "e2") == {"v": 1}
