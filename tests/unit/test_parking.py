"""Parking (``streams/parking.py``): records that overtook their config wait in order, are
retried per tick, settle after ``PARK_ATTEMPTS``, and keep their original place and bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from streams import parking
from streams.dead_letters import Place
from streams.parking import PARK_ATTEMPTS, PARKED_MAX, PARKED_MAX_BYTES, Parked, Parking


def topic(name: str) -> str:
    return f"run-{name}"


def place(offset: int, value: bytes = b"v", key: bytes | None = b"tenant") -> Place:
    return Place(topic("enrollments"), 3, offset, key, value)


def test_a_parked_record_round_trips_with_its_place_and_bytes() -> None:
    index: dict[str, Any] = {}
    p = Parking(index, topic)
    assert p.park(3, "enrollments", place(7, b"\x00\xffbytes"), "unknown sequence s")
    assert p.park(3, "enrollments", place(8, key=None), "unknown sequence s")
    first, second = p.parked(3)
    assert first == Parked("enrollments", place(7, b"\x00\xffbytes"), 0, "unknown sequence s")
    assert second.place.key is None and second.place.offset == 8
    assert p.parked(2) == []  # partitions are separate
    assert list(index) == ["parked:3"]


def test_retry_keeps_order_counts_attempts_and_settles_the_last() -> None:
    p = Parking({}, topic)
    for offset in range(4):
        p.park(3, "enrollments", place(offset), "not yet")
    seen: list[tuple[int, bool]] = []

    async def attempt(record: Parked, last: bool) -> bool:
        seen.append((record.place.offset, last))
        return record.place.offset == 1  # only offset 1's config arrived

    asyncio.run(p.retry(3, attempt))
    assert seen == [(0, False), (1, False), (2, False), (3, False)]  # in arrival order
    assert [(r.place.offset, r.attempts) for r in p.parked(3)] == [(0, 1), (2, 1), (3, 1)]

    settled: list[int] = []

    async def never(record: Parked, last: bool) -> bool:
        if last:
            settled.append(record.place.offset)
        return last  # the caller dead-letters it on its last attempt

    for _ in range(PARK_ATTEMPTS - 1):
        asyncio.run(p.retry(3, never))
    assert settled == [0, 2, 3]
    assert p.parked(3) == []


def test_parking_is_bounded_by_count_and_bytes() -> None:
    p = Parking({}, topic)
    assert all(p.park(0, "enrollments", place(i), "x") for i in range(PARKED_MAX))
    assert not p.park(0, "enrollments", place(PARKED_MAX), "x")
    big = b"x" * (PARKED_MAX_BYTES // 2)
    q = Parking({}, topic)
    assert q.park(0, "enrollments", place(0, big), "x")
    assert not q.park(0, "enrollments", place(1, big), "x")  # base64 makes it larger


def test_the_stored_form_is_what_earlier_workers_wrote() -> None:
    """A changelog written before this module keeps working after an upgrade."""
    index: dict[str, Any] = {
        "parked:1": [
            {
                "name": "health-signals",
                "value": "AAE=",
                "key": "",
                "offset": 41,
                "attempts": 3,
                "error": "unknown adapter a",
            }
        ]
    }
    (record,) = Parking(index, topic).parked(1)
    assert record.place == Place("run-health-signals", 1, 41, None, b"\x00\x01")
    assert record.attempts == 3
    assert parking.Parked.decode(record.encode(), "run-health-signals", 1) == record
