"""``StreamPublisher.barrier``: the at-least-once gate before every offset commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.kafka import PublishError, StreamPublisher
from streams.settings import Settings


class _Msg:
    def __init__(self, partition: int) -> None:
        self._partition = partition

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return 7


class _Err:
    def str(self) -> str:
        return "MSG_TIMED_OUT"


class FakeProducer:
    """Holds delivery callbacks; the test decides when and in which order they fire."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.callbacks.append(kwargs["on_delivery"])

    def poll(self, timeout: float = 0) -> int:
        return 0

    def deliver(self, index: int, err: Any = None) -> None:
        self.callbacks[index](err, _Msg(0))


def publisher() -> tuple[StreamPublisher, FakeProducer]:
    pub = StreamPublisher(Settings())
    fake = FakeProducer()
    pub._producer = fake  # type: ignore[assignment]  # noqa: SLF001 - the seam under test
    return pub, fake


def test_barrier_waits_for_each_earlier_record_not_for_a_count_of_reports() -> None:
    asyncio.run(_test_barrier_waits_for_each_earlier_record_not_for_a_count_of_reports())


async def _test_barrier_waits_for_each_earlier_record_not_for_a_count_of_reports() -> None:
    pub, fake = publisher()
    await pub.send("t", key=b"k", value=b"0", partition=0)
    await pub.send("t", key=b"k", value=b"1", partition=1)
    barrier = asyncio.ensure_future(pub.barrier(timeout=5))
    await asyncio.sleep(0.01)
    await pub.send("t", key=b"k", value=b"2", partition=2)  # after the barrier began
    fake.deliver(2)
    fake.deliver(1)  # two reports, as many as records before the barrier: not enough
    await asyncio.sleep(0.02)
    assert not barrier.done()
    fake.deliver(0)
    await asyncio.wait_for(barrier, 1)


def test_a_failed_delivery_fails_every_later_barrier() -> None:
    asyncio.run(_test_a_failed_delivery_fails_every_later_barrier())


async def _test_a_failed_delivery_fails_every_later_barrier() -> None:
    pub, fake = publisher()
    await pub.send("t", key=b"k", value=b"0", partition=0)
    fake.deliver(0, _Err())
    with pytest.raises(PublishError, match="MSG_TIMED_OUT"):
        await pub.barrier(timeout=1)
    await pub.send("t", key=b"k", value=b"1", partition=0)
    fake.deliver(1)
    with pytest.raises(PublishError):  # the process must never commit again
        await pub.barrier(timeout=1)


def test_unacknowledged_records_time_out_the_barrier() -> None:
    asyncio.run(_test_unacknowledged_records_time_out_the_barrier())


async def _test_unacknowledged_records_time_out_the_barrier() -> None:
    pub, _ = publisher()
    pub.send_nowait("t", key=b"k", value=b"0", partition=0)
    with pytest.raises(PublishError, match="unacknowledged"):
        await pub.barrier(timeout=0.05)


def test_delivered_changelog_records_report_their_offset() -> None:
    asyncio.run(_test_delivered_changelog_records_report_their_offset())


async def _test_delivered_changelog_records_report_their_offset() -> None:
    pub, fake = publisher()
    seen: list[tuple[int, int]] = []
    pub.send_nowait(
        "t", key=b"k", value=b"v", partition=0, on_delivered=lambda p, o: seen.append((p, o))
    )
    fake.deliver(0)
    await pub.barrier(timeout=1)
    assert seen == [(0, 7)]
