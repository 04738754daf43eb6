"""State access for the processor: named key/value tables plus typed, cached views.

The processor never sees Faust: it reads and writes through ``Store``. In a worker the
store is backed by Faust tables (changelogged, RocksDB); in tests by dicts. Values are
JSON-compatible; ``Config`` parses authored entities once and caches them by raw value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from dripdrop_core.models import Adapter, Pool, PoolMember, Sequence, SequenceVersion, Step

M = TypeVar("M", bound=BaseModel)

TABLES = ("config", "adapters", "selection", "enrollments", "schedule", "index")
"""Every table the processor uses; each is one changelog topic."""


class Store(Protocol):
    def table(self, name: str) -> MutableMapping[str, Any]: ...


class DictStore:
    """In-memory store for unit tests and the memory worker."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {name: {} for name in TABLES}

    def table(self, name: str) -> MutableMapping[str, Any]:
        return self._tables[name]


class ModelCache:
    """Parse a table value into a model once; re-parse only when the raw value changes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[Any, BaseModel]] = {}

    def load(self, table: MutableMapping[str, Any], key: str, model: type[M]) -> M | None:
        raw = table.get(key)
        if raw is None:
            return None
        cache_key = (model.__name__, key)
        hit = self._cache.get(cache_key)
        if hit is not None and hit[0] == raw:
            return hit[1]  # type: ignore[return-value]  # keyed by model name
        parsed = model.model_validate(raw)
        self._cache[cache_key] = (raw, parsed)
        return parsed

    def save(self, table: MutableMapping[str, Any], key: str, value: BaseModel) -> None:
        raw = value.model_dump(mode="json")
        table[key] = raw
        self._cache[(type(value).__name__, key)] = (raw, value)


ENTITY_MODELS: dict[str, type[BaseModel]] = {
    "adapter": Adapter,
    "pool": Pool,
    "pool_member": PoolMember,
    "sequence": Sequence,
    "sequence_version": SequenceVersion,
    "step": Step,
}


class _RecentReads(MutableMapping[str, Any]):
    """The config table behind a short-lived read cache.

    Config changes rarely and is read many times per event; reading it from RocksDB
    (and decoding it) dominated the processor's table reads. Writes go through and update
    the cache at once; entries expire after ``ttl`` seconds, which bounds how long a worker
    could use config that changed on another worker before a rebalance moved the
    partition here.
    """

    def __init__(self, table: MutableMapping[str, Any], ttl: float = 5.0) -> None:
        self._table = table
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Any]] = {}

    def __getitem__(self, key: str) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        # Misses are never cached: a RocksDB table answers for the current event's partition
        # only, so a key of another partition reads as missing from here.
        value = self._table[key]
        self._cache[key] = (now, value)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._table[key] = value
        self._cache[key] = (time.monotonic(), value)

    def __delitem__(self, key: str) -> None:
        self._cache.pop(key, None)
        del self._table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class Config:
    """Authored entities of the partition's tenants, with the indexes lookups need."""

    def __init__(self, store: Store, cache: ModelCache) -> None:
        self.table: MutableMapping[str, Any] = _RecentReads(store.table("config"))
        self.cache = cache

    def entity(self, entity_type: str, entity_id: str) -> BaseModel | None:
        return self.cache.load(self.table, f"{entity_type}:{entity_id}", ENTITY_MODELS[entity_type])

    def adapter(self, adapter_id: str | None) -> Adapter | None:
        if adapter_id is None:
            return None
        return self.cache.load(self.table, f"adapter:{adapter_id}", Adapter)

    def pool(self, pool_id: str | None) -> Pool | None:
        if pool_id is None:
            return None
        return self.cache.load(self.table, f"pool:{pool_id}", Pool)

    def sequence(self, sequence_id: str) -> Sequence | None:
        return self.cache.load(self.table, f"sequence:{sequence_id}", Sequence)

    def version(self, version_id: str) -> SequenceVersion | None:
        return self.cache.load(self.table, f"sequence_version:{version_id}", SequenceVersion)

    def members(self, pool_id: str) -> list[PoolMember]:
        ids: list[str] = self.table.get(f"idx:members:{pool_id}") or []
        found = (self.cache.load(self.table, f"pool_member:{pool_id}:{a}", PoolMember) for a in ids)
        return [m for m in found if m is not None]

    def steps(self, version_id: str) -> list[Step]:
        ids: list[str] = self.table.get(f"idx:steps:{version_id}") or []
        found = (self.cache.load(self.table, f"step:{s}", Step) for s in ids)
        return sorted((s for s in found if s is not None), key=lambda s: s.position)

    def active_version(self, sequence_id: str) -> SequenceVersion | None:
        version_id = self.table.get(f"idx:active_version:{sequence_id}")
        return self.version(version_id) if version_id else None

    def tenant_adapters(self, tenant_key: str) -> list[Adapter]:
        ids: list[str] = self.table.get(f"idx:adapters:{tenant_key}") or []
        found = (self.adapter(a) for a in ids)
        return [a for a in found if a is not None]

    def pools_of_adapter(self, adapter_id: str) -> list[str]:
        return list(self.table.get(f"idx:pools_of:{adapter_id}") or [])

    def apply(self, entity_type: str, entity_id: str, payload: dict[str, Any] | None) -> None:
        """Store (or delete) an entity and keep the lookup indexes in step."""
        key = f"{entity_type}:{entity_id}"
        previous = self.table.get(key)
        if payload is None:
            self.table.pop(key, None)
        else:
            self.table[key] = (
                ENTITY_MODELS[entity_type].model_validate(payload).model_dump(mode="json")
            )
        self._reindex(entity_type, previous, payload)

    def _reindex(
        self, entity_type: str, previous: dict[str, Any] | None, payload: dict[str, Any] | None
    ) -> None:
        current = payload or previous
        if current is None:
            return
        present = payload is not None
        if entity_type == "pool_member":
            self._index_set(f"idx:members:{current['pool_id']}", current["adapter_id"], present)
            self._index_set(f"idx:pools_of:{current['adapter_id']}", current["pool_id"], present)
        elif entity_type == "step":
            self._index_set(f"idx:steps:{current['version_id']}", current["id"], present)
        elif entity_type == "adapter":
            self._index_set(f"idx:adapters:{current['tenant_key']}", current["id"], present)
        elif entity_type == "sequence_version":
            key = f"idx:active_version:{current['sequence_id']}"
            if present and current.get("active", True):
                existing = self.version(self.table.get(key) or "")
                if existing is None or existing.version <= int(current["version"]):
                    self.table[key] = current["id"]
            elif self.table.get(key) == current["id"]:
                self.table.pop(key, None)

    def _index_set(self, key: str, member: str, present: bool) -> None:
        ids: list[str] = list(self.table.get(key) or [])
        if present and member not in ids:
            ids.append(member)
        elif not present and member in ids:
            ids.remove(member)
        else:
            return
        self.table[key] = ids
