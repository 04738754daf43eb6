"""``Recent``: a bounded, expiring set of keys (Mailgun tokens, produced event ids)."""

from __future__ import annotations

import time
from collections import OrderedDict


class Recent:
    """A bounded set with expiry: Mailgun tokens seen and event ids already produced."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._items: OrderedDict[str, float] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._items:
            key, at = next(iter(self._items.items()))
            if now - at <= self.ttl and len(self._items) <= self.size:
                break
            del self._items[key]

    def __contains__(self, key: object) -> bool:
        self._expire(time.monotonic())
        return key in self._items

    def add(self, key: str) -> None:
        self._items[key] = time.monotonic()
        self._items.move_to_end(key)
        self._expire(time.monotonic())

    def discard(self, key: str) -> None:
        self._items.pop(key, None)
