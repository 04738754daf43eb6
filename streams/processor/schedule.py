"""The due index: items (an enrollment's due step, a resting adapter's timer) per tick bucket.

Owns the ``schedule`` table's key format (``{partition}:{bucket}:{chunk}``), each partition's
cursor in the ``index`` table (``cursor:{partition}``) and the item format; what an item
does when it fires is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from dripdrop_core.scheduling import tick_bucket
from streams.processor import keys
from streams.processor.state import Tables

CHUNK = 16
"""Items per schedule chunk (one table value)."""
MAX_BUCKETS_PER_TICK = 20_000


@dataclass(frozen=True, slots=True)
class DueItem:
    """One entry of the due index; stored as ``"{kind}:{ident}:{due_ms}"`` (``encode``).

    ``kind`` ``e``: an enrollment's step due at ``due_ms`` (a step rescheduled since has
    another due time, so a stale entry is visible); ``a``: a resting adapter's health timer.
    """

    kind: Literal["e", "a"]
    ident: str
    due_ms: int

    def encode(self) -> str:
        return f"{self.kind}:{self.ident}:{self.due_ms}"

    @classmethod
    def decode(cls, item: str) -> DueItem:
        kind, ident, due_ms = item.split(":", 2)
        if kind not in ("e", "a"):
            raise ValueError(f"unknown due item kind {kind!r}")
        return cls(cast(Literal["e", "a"], kind), ident, int(due_ms))


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def enrollment_item(enrollment_id: str, due: datetime) -> str:
    """The item of an enrollment's step due at ``due``."""
    return DueItem("e", enrollment_id, _ms(due)).encode()


def adapter_item(adapter_id: str, timer: datetime) -> str:
    """The item of a resting adapter's health timer."""
    return DueItem("a", adapter_id, _ms(timer)).encode()


class DueIndex:
    """Items by due time, in buckets of ``bucket_seconds`` behind a cursor per partition."""

    def __init__(self, tables: Tables, bucket_seconds: int) -> None:
        self.schedule = tables.schedule
        self.index = tables.index
        self.bucket_seconds = bucket_seconds
        self._last_chunk: dict[tuple[int, int], int] = {}

    def forget(self) -> None:
        """Drop the chunk numbers remembered between events (the table may have changed)."""
        self._last_chunk.clear()

    def bucket(self, due: datetime) -> int:
        return tick_bucket(due, self.bucket_seconds)

    def cursor(self, partition: int) -> int | None:
        """The last bucket of ``partition`` fired and dropped; ``None`` before any item."""
        cursor: int | None = self.index.get(keys.cursor(partition))
        return cursor

    def add(self, item: str, due: datetime, partition: int, *, now: datetime) -> None:
        bucket = tick_bucket(due, self.bucket_seconds)
        cursor_key = keys.cursor(partition)
        cursor = self.index.get(cursor_key)
        if cursor is None:
            # Start the cursor before *now*, not before this item: an item indexed later but
            # due sooner must not land behind this one (it would wait for its bucket).
            start = min(bucket, tick_bucket(now, self.bucket_seconds))
            self.index[cursor_key] = start - self.bucket_seconds
        elif bucket <= cursor:
            bucket = self.bucket_after(cursor)
        # A bucket is a list of chunks of at most CHUNK items: appending rewrites one small
        # chunk, not the whole bucket (20,000 steps due in one minute made each append copy
        # the whole list: quadratic).
        # Chunks are numbered from 0 with no gap, so the table alone says which exist (no
        # separate count that a crash could leave out of step); the last chunk number is
        # remembered in memory only to avoid probing.
        chunk = self._last_chunk.get((partition, bucket), 0)
        while self.schedule.get(f"{partition}:{bucket}:{chunk + 1}") is not None:
            chunk += 1
        items: list[str] = list(self.schedule.get(f"{partition}:{bucket}:{chunk}") or [])
        if len(items) >= CHUNK:
            chunk, items = chunk + 1, []
        self._last_chunk[(partition, bucket)] = chunk
        items.append(item)
        self.schedule[f"{partition}:{bucket}:{chunk}"] = items

    def bucket_after(self, cursor: int) -> int:
        """The first bucket (a multiple of ``bucket_seconds``) after ``cursor``."""
        return (cursor // self.bucket_seconds + 1) * self.bucket_seconds

    def bucket_items(self, partition: int, bucket: int) -> Iterator[str]:
        chunk = 0
        while (items := self.schedule.get(f"{partition}:{bucket}:{chunk}")) is not None:
            yield from items
            chunk += 1

    def fire_due(self, partition: int, now: datetime, fire: Callable[[str], None]) -> None:
        """Call ``fire`` on every item due by ``now`` in this partition, drop the buckets
        passed and move the cursor; nothing before the partition's first item."""
        cursor_key = keys.cursor(partition)
        cursor = self.index.get(cursor_key)
        if cursor is None:
            return
        current = tick_bucket(now, self.bucket_seconds)
        last = min(current, cursor + MAX_BUCKETS_PER_TICK * self.bucket_seconds)
        passed = cursor
        # Buckets are multiples of bucket_seconds (epoch seconds): visit those, not every
        # second in between (60 table reads per bucket, each a miss in every partition store).
        now_ms = now.timestamp() * 1000
        for bucket in range(self.bucket_after(cursor), last + 1, self.bucket_seconds):
            chunk = 0
            while (items := self.schedule.get(f"{partition}:{bucket}:{chunk}")) is not None:
                key = f"{partition}:{bucket}:{chunk}"
                chunk += 1
                due = [i for i in items if DueItem.decode(i).due_ms <= now_ms]
                for item in due:
                    fire(item)
                if bucket < current:
                    self.schedule.pop(key, None)
                elif due:
                    # Re-read: firing may have appended items due later in this bucket.
                    fired = set(due)
                    left = [i for i in self.schedule.get(key) or [] if i not in fired]
                    self.schedule[key] = left
            if bucket < current:
                self._last_chunk.pop((partition, bucket), None)
                passed = bucket
        # One cursor write per tick, not one per bucket: on a scaled clock a tick spans
        # dozens of buckets, and every table write is a changelog record.
        if passed != cursor:
            self.index[cursor_key] = passed

    def restore(
        self, partition: int, future: dict[int, list[tuple[str, datetime]]], *, now: datetime
    ) -> None:
        """Index again each of ``future`` (items by bucket) that its bucket lacks."""
        cursor = self.cursor(partition)
        for bucket, items in future.items():
            # ``add`` puts an item due at or before the cursor in the bucket after it.
            places = {bucket} if cursor is None else {bucket, self.bucket_after(cursor)}
            present = {i for b in places for i in self.bucket_items(partition, b)}
            for item, due in items:
                if item not in present:
                    self.add(item, due, partition, now=now)
