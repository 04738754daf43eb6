"""State access for the processor: named key/value tables plus typed, cached views.

The processor never sees Faust: it reads and writes through ``Store``. In a worker the
store is backed by Faust tables (changelogged, RocksDB); in tests by dicts. Values are
JSON-compatible; parsed models and config reads are cached between events and dropped
on every rebalance (``ModelCache``, ``_RecentReads``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from dripdrop_core.models import (
    Adapter,
    DomainThrottle,
    Pool,
    PoolMember,
    Sequence,
    SequenceVersion,
    Step,
)

M = TypeVar("M", bound=BaseModel)

TABLES = ("config", "adapters", "selection", "enrollments", "schedule", "index")
"""Every table the processor uses; each is one changelog topic."""


class Store(Protocol):
    def table(self, name: str) -> MutableMapping[str, Any]: ...

    def partition_items(self, name: str, partition: int) -> Iterator[tuple[str, Any]]:
        """The items of ``name`` stored for ``partition`` (all items where not partitioned)."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """Writes inside land together or not at all (one event's)."""
        ...


class DictStore:
    """In-memory store for unit tests and the memory worker."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {name: {} for name in TABLES}

    def table(self, name: str) -> MutableMapping[str, Any]:
        return self._tables[name]

    def partition_items(self, name: str, partition: int) -> Iterator[tuple[str, Any]]:
        return iter(list(self._tables[name].items()))

    def atomic(self) -> AbstractContextManager[None]:
        return nullcontext()


_DELETED = object()


class Buffered(MutableMapping[str, Any]):
    """A table whose writes during one event are held, then written once when it ends.

    Faust turns every ``table[key] = value`` into a changelog record; an event that
    updates an enrollment or an adapter three times would send three. An event that fails
    while it runs (a bug) writes nothing: its held writes are discarded. Values may be
    pydantic models: they are dumped once, at ``flush``. Outside an event (``holding``
    false) writes go straight through.
    """

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.holding = False
        self._pending: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._pending:
            value = self._pending[key]
            if value is _DELETED:
                raise KeyError(key)
            return _raw(value)
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._pending:
            value = self._pending[key]
            return default if value is _DELETED else _raw(value)
        return self.table.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if self.holding:
            self._pending[key] = value
        else:
            self.table[key] = _raw(value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        if self.holding:
            self._pending[key] = _DELETED
        else:
            del self.table[key]

    def __contains__(self, key: object) -> bool:
        if key in self._pending:
            return self._pending[key] is not _DELETED
        return key in self.table

    def __iter__(self) -> Iterator[str]:
        pending = dict(self._pending)
        for key in list(self.table):
            if key not in pending:
                yield key
        for key, value in pending.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            if value is _DELETED:
                self.table.pop(key, None)
            else:
                self.table[key] = _raw(value)

    def discard(self) -> None:
        self._pending = {}


def _raw(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class ModelCache:
    """Parsed table values, kept between events.

    The processor is the only writer of its partitions' keys (Faust's co-partitioning), so
    a model it parsed or wrote stays true until a rebalance hands the partition to
    recovery: the pipeline calls ``clear`` then. Entries are scoped by partition, as
    Faust's RocksDB reads are: a key of another partition is not visible from this one.
    The size is bounded; past it the oldest entries go (they are re-read when needed).
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.partition: int | None = None
        self._max = max_entries
        self._models: dict[tuple[int | None, str, str], BaseModel] = {}

    def load(self, table: MutableMapping[str, Any], key: str, model: type[M]) -> M | None:
        cache_key = (self.partition, model.__name__, key)
        hit = self._models.get(cache_key)
        if hit is not None:
            return hit  # type: ignore[return-value]  # keyed by model name
        raw = table.get(key)
        if raw is None:
            return None  # misses are not cached: the key may be written by a later event
        parsed = model.model_validate(raw)
        self._remember(cache_key, parsed)
        return parsed

    def save(self, table: MutableMapping[str, Any], key: str, value: BaseModel) -> None:
        table[key] = value  # a Buffered table dumps it once, when the event ends
        self._remember((self.partition, type(value).__name__, key), value)

    def forget(self, model: type[BaseModel], key: str) -> None:
        self._models.pop((self.partition, model.__name__, key), None)

    def clear(self) -> None:
        self._models.clear()

    def _remember(self, cache_key: tuple[int | None, str, str], value: BaseModel) -> None:
        self._models[cache_key] = value
        if len(self._models) > self._max:
            for old in list(itertools.islice(self._models, self._max // 4)):
                del self._models[old]


ENTITY_MODELS: dict[str, type[BaseModel]] = {
    "adapter": Adapter,
    "pool": Pool,
    "pool_member": PoolMember,
    "sequence": Sequence,
    "sequence_version": SequenceVersion,
    "step": Step,
    "domain_throttle": DomainThrottle,
}


class _RecentReads(MutableMapping[str, Any]):
    """The config table behind a read cache.

    Config changes rarely and is read many times per event; reading it from RocksDB (and
    decoding it) dominated the processor's table reads. Writes go through and update the
    cache at once; like ``ModelCache`` it is scoped by partition and cleared on every
    rebalance, so it never serves a value recovery has since replaced.
    """

    def __init__(self, table: MutableMapping[str, Any], scope: ModelCache) -> None:
        self._table = table
        self._scope = scope
        self._cache: dict[tuple[int | None, str], Any] = {}

    def __getitem__(self, key: str) -> Any:
        cache_key = (self._scope.partition, key)
        if cache_key in self._cache:
            return self._cache[cache_key]
        # Misses are never cached: a RocksDB table answers for the current event's partition
        # only, so a key of another partition reads as missing from here.
        value = self._table[key]
        self._cache[cache_key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._table[key] = value
        self._cache[(self._scope.partition, key)] = value

    def __delitem__(self, key: str) -> None:
        self._cache.pop((self._scope.partition, key), None)
        del self._table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def clear_cache(self) -> None:
        self._cache.clear()


class Config:
    """Authored entities of the partition's tenants, with the indexes lookups need."""

    def __init__(self, table: MutableMapping[str, Any], cache: ModelCache) -> None:
        self.reads = _RecentReads(table, cache)
        self.table: MutableMapping[str, Any] = self.reads
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

    def max_wait(self, version_id: str) -> timedelta | None:
        """How long an enrollment of the version may wait for capacity (``None``: no limit)."""
        version = self.version(version_id)
        seconds = version.max_wait_seconds if version is not None else None
        return timedelta(seconds=seconds) if seconds else None

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

    def throttles(self, tenant_key: str, domain: str) -> list[DomainThrottle]:
        """The tenant's throttles on recipient ``domain`` (every adapter's and its own)."""
        ids: list[str] = self.table.get(f"idx:throttles:{tenant_key}:{domain}") or []
        found = (self.cache.load(self.table, f"domain_throttle:{t}", DomainThrottle) for t in ids)
        return [t for t in found if t is not None]

    def pools_of_adapter(self, adapter_id: str) -> list[str]:
        return list(self.table.get(f"idx:pools_of:{adapter_id}") or [])

    def apply(self, entity_type: str, entity_id: str, payload: dict[str, Any] | None) -> None:
        """Store (or delete) an entity and keep the lookup indexes in step."""
        key = f"{entity_type}:{entity_id}"
        previous = self.table.get(key)
        self.cache.forget(ENTITY_MODELS[entity_type], key)
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
        elif entity_type == "domain_throttle":
            key = f"idx:throttles:{current['tenant_key']}:{current['domain']}"
            self._index_set(key, current["id"], present)
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
