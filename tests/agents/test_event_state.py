"""Per-event table writes (``Buffered``) and the caches kept between events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dripdrop_core.policy import OutboundPolicy
from dripdrop_core.state import SelectionState
from streams.processor.flow import Processor
from streams.processor.store import Buffered, DictStore, ModelCache

T0 = datetime(2026, 12, 7, 9, tzinfo=UTC)


def test_writes_are_held_until_flush_and_read_back_meanwhile() -> None:
    table: dict[str, object] = {"a": 1, "gone": 2}
    view = Buffered(table)
    view.holding = True
    view["a"] = 10
    view["b"] = 20
    del view["gone"]
    assert table == {"a": 1, "gone": 2}  # nothing written yet
    assert (view["a"], view.get("b"), view.get("gone"), "gone" in view) == (10, 20, None, False)
    assert sorted(view) == ["a", "b"]
    view.flush()
    assert table == {"a": 10, "b": 20}


def test_discard_drops_held_writes_and_unheld_writes_go_through() -> None:
    table: dict[str, object] = {}
    view = Buffered(table)
    view.holding = True
    view["a"] = 1
    view.discard()
    assert "a" not in view and table == {}
    view.holding = False
    view["a"] = 2
    assert table == {"a": 2}
    with pytest.raises(KeyError):
        del view["missing"]


def test_models_are_dumped_once_at_flush() -> None:
    table: dict[str, object] = {}
    view = Buffered(table)
    view.holding = True
    state = SelectionState(pool_id="p", sequence_version_id="v")
    view["k"] = state
    assert view["k"] == state.model_dump(mode="json")  # read as the table would hold it
    view.flush()
    assert table["k"] == state.model_dump(mode="json")


def test_model_cache_is_scoped_by_partition_and_cleared() -> None:
    cache = ModelCache()
    table = Buffered({})
    cache.partition = 1
    cache.save(table, "k", SelectionState(pool_id="p", sequence_version_id="v"))
    assert cache.load(table, "k", SelectionState) is not None
    cache.partition = 2
    # Another partition's event does not see partition 1's entry through the cache
    # (the dict store here is not partitioned, so the value comes from the table).
    table.table.clear()
    assert cache.load(table, "k", SelectionState) is None
    cache.partition = 1
    cache.clear()
    assert cache.load(table, "k", SelectionState) is None


def test_an_event_that_fails_leaves_no_state_behind() -> None:
    store = DictStore()
    p = Processor(store, OutboundPolicy())
    with pytest.raises(RuntimeError), p.event(0):
        p.save_selection(SelectionState(pool_id="p", sequence_version_id="v"))
        raise RuntimeError("bug mid-event")
    assert store.table("selection") == {}
    assert p.selection_state("p", "v") == SelectionState(pool_id="p", sequence_version_id="v")
    with p.event(0):
        p.save_selection(SelectionState(pool_id="p", sequence_version_id="v"))
    assert list(store.table("selection")) == ["p:v"]
