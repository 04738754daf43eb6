"""``BatchConsumer`` on a real broker: offsets are committed only for batches that were
handled, so a failed batch (and everything after it) is consumed again by the next owner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.batch_consumer import BatchConsumer, consumer_group
from streams.settings import Settings
from tests.integration.support import producer


def produce_sink(settings: Settings, values: list[bytes]) -> None:
    p = producer(settings)
    for v in values:
        p.produce(settings.topic("sink"), key=b"t", value=v, partition=0)
    assert p.flush(10) == 0


def committed(settings: Settings) -> int:
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": consumer_group(settings, "sink"),
        }
    )
    try:
        (tp,) = probe.committed([TopicPartition(settings.topic("sink"), 0)], timeout=10)
        return int(tp.offset)
    finally:
        probe.close()


def stage(
    settings: Settings, handle: Any, on_failure: Any, seed_group: str | None = None
) -> BatchConsumer:
    return BatchConsumer(
        settings,
        topic="sink",
        role="sink",
        batch_size=500,
        batch_seconds=0.05,
        handle=handle,
        on_failure=on_failure,
        seed_group=seed_group,
    )


async def run_until(sink: BatchConsumer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    await sink.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            assert loop.time() < deadline, "the sink consumer did not get there"
            await asyncio.sleep(0.05)
    finally:
        await sink.stop()


def test_handled_batches_are_committed_at_stop(
    settings: Settings, topics: Callable[..., list[str]]
) -> None:
    topics("sink")
    produce_sink(settings, [b"1", b"2", b"3"])
    seen: list[bytes] = []
    failures: list[BaseException] = []

    async def handle(messages: list[Any]) -> None:
        seen.extend(m.value() for m in messages)

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    sink = stage(settings, handle, on_failure)
    asyncio.run(run_until(sink, lambda: len(seen) >= 3))
    assert seen == [b"1", b"2", b"3"]
    assert not failures
    assert committed(settings) == 3


def test_a_failed_batch_is_not_committed_and_is_replayed(
    settings: Settings, topics: Callable[..., list[str]]
) -> None:
    topics("sink")
    produce_sink(settings, [b"a", b"b"])
    failures: list[BaseException] = []

    async def broken(messages: list[Any]) -> None:
        raise RuntimeError("PostgreSQL is gone for good")

    async def on_failure(exc: BaseException) -> None:
        failures.append(exc)

    first = stage(settings, broken, on_failure)
    asyncio.run(run_until(first, lambda: bool(failures)))
    assert isinstance(first.failed, RuntimeError)
    assert committed(settings) < 0  # nothing stored: no offset ever committed

    replayed: list[bytes] = []

    async def handle(messages: list[Any]) -> None:
        replayed.extend(m.value() for m in messages)

    second = stage(settings, handle, on_failure)
    asyncio.run(run_until(second, lambda: len(replayed) >= 2))
    assert replayed == [b"a", b"b"]
    assert committed(settings) == 2


def test_a_new_group_starts_where_the_faust_group_stopped(
    settings: Settings, topics: Callable[..., list[str]]
) -> None:
    """Upgrading from the sink / sender as Faust agents: their records were committed by
    the Faust group (``{app_id}``); the new group must not replay the whole topic."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    topics("sink")
    produce_sink(settings, [b"old-1", b"old-2", b"new-1"])
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    done = ConsumerGroupTopicPartitions(
        settings.app_id, [TopicPartition(settings.topic("sink"), 0, 2)]
    )
    for future in admin.alter_consumer_group_offsets([done]).values():
        future.result(timeout=10)
    seen: list[bytes] = []

    async def handle(messages: list[Any]) -> None:
        seen.extend(m.value() for m in messages)

    async def on_failure(exc: BaseException) -> None:
        raise AssertionError(exc)

    asyncio.run(
        run_until(stage(settings, handle, on_failure, settings.app_id), lambda: len(seen) >= 1)
    )
    assert seen == [b"new-1"]
    assert committed(settings) == 3
    # Seeded once only: the group's own offsets win from then on.
    produce_sink(settings, [b"new-2"])
    asyncio.run(
        run_until(stage(settings, handle, on_failure, settings.app_id), lambda: len(seen) >= 2)
    )
    assert seen == [b"new-1", b"new-2"]
