"""Parking: records that name config this partition has not seen yet wait for it.

Config and commands travel on different topics, so an ``enroll`` can overtake the
sequence it names. Such a record (``ConfigNotReadyError``) is parked in the processor's
``index`` table, under ``parked:{partition}``: changelogged with the event that parked it,
so a crash neither loses nor repeats it. Every tick retries the partition's parked records
in the order they came; one still not ready after ``PARK_ATTEMPTS`` ticks is dead-lettered
with its original bytes and place. Parking is bounded (one table value must stay well
under Kafka's 1 MB): a record that does not fit is dead-lettered at once.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from streams.dead_letters import Place
from streams.processor import keys

PARKED_MAX = 300
"""Records parked per partition."""
PARKED_MAX_BYTES = 512 * 1024
"""Their bytes (base64) per partition."""
PARK_ATTEMPTS = 40
"""Ticks a parked record is retried before it is dead-lettered (~40 s on a 1 s tick)."""


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked record: the input it came from and how often it was retried."""

    name: str  # the topic without the prefix
    place: Place
    attempts: int = 0
    error: str = ""

    def encode(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": base64.b64encode(self.place.value).decode(),
            "key": base64.b64encode(self.place.key or b"").decode(),
            "offset": self.place.offset,
            "attempts": self.attempts,
            "error": self.error,
        }

    @classmethod
    def decode(cls, item: dict[str, Any], topic: str, partition: int) -> Parked:
        place = Place(
            topic,
            partition,
            int(item["offset"]),
            base64.b64decode(item["key"]) or None,
            base64.b64decode(item["value"]),
        )
        return cls(item["name"], place, int(item["attempts"]), str(item.get("error", "")))


Attempt = Callable[[Parked, bool], Awaitable[bool]]
"""``attempt(record, last)``: process a parked record; ``False`` when its config is still
missing and it may wait longer (with ``last`` it must be settled: dead-lettered)."""


class Parking:
    """The parked records of every partition, in the processor's ``index`` table."""

    def __init__(self, index: MutableMapping[str, Any], topic: Callable[[str], str]) -> None:
        self.index = index
        self.topic = topic  # name → full topic name

    def park(self, partition: int, name: str, place: Place, error: str) -> bool:
        """Keep ``place``'s record; ``False`` when the partition's parking is full."""
        parked = list(self.index.get(keys.parked(partition)) or [])
        item = Parked(name, place, 0, error).encode()
        size = len(item["value"]) + sum(len(p["value"]) for p in parked)
        if len(parked) >= PARKED_MAX or size > PARKED_MAX_BYTES:
            return False
        self.index[keys.parked(partition)] = [*parked, item]
        return True

    def parked(self, partition: int) -> list[Parked]:
        return [
            Parked.decode(item, self.topic(item["name"]), partition)
            for item in self.index.get(keys.parked(partition)) or []
        ]

    async def retry(self, partition: int, attempt: Attempt) -> None:
        """Retry the partition's parked records in order; keep those still waiting."""
        records = self.parked(partition)
        if not records:
            return
        still: list[Parked] = []
        for record in records:
            if not await attempt(record, record.attempts + 1 >= PARK_ATTEMPTS):
                still.append(replace(record, attempts=record.attempts + 1))
        self.index[keys.parked(partition)] = [record.encode() for record in still]
