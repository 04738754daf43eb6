"""The processor's tables, each buffered per event, and the typed reads and writes over them.

Owns loading and saving runtime records (adapters, selections, enrollments); no decisions.
"""

from __future__ import annotations

from dripdrop_core.models import Adapter
from dripdrop_core.selection import Candidate
from dripdrop_core.state import AdapterState, SelectionState, initial_adapter_state
from streams.processor.rows import enrollment_op, row_fields
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.store import TABLES, Buffered, Config, ModelCache, Store


class Tables:
    """Every table of ``Store`` behind a per-event write buffer, with parsed values cached."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache = ModelCache()
        self.buffered = {name: Buffered(store.table(name)) for name in TABLES}
        self.config = Config(self.buffered["config"], self.cache)
        self.adapter_states = self.buffered["adapters"]
        self.selections = self.buffered["selection"]
        self.enrollments = self.buffered["enrollments"]
        self.schedule = self.buffered["schedule"]
        self.index = self.buffered["index"]

    def forget(self) -> None:
        """Drop the parsed values and config reads remembered between events."""
        self.cache.clear()
        self.config.reads.clear_cache()

    def adapter_state(self, adapter: Adapter) -> AdapterState:
        state = self.cache.load(self.adapter_states, adapter.id, AdapterState)
        return state if state is not None else initial_adapter_state(adapter)

    def save_adapter_state(self, state: AdapterState) -> None:
        self.cache.save(self.adapter_states, state.adapter_id, state)

    def enrollment(self, enrollment_id: str) -> EnrollmentRuntime | None:
        return self.cache.load(self.enrollments, enrollment_id, EnrollmentRuntime)

    def save_enrollment(
        self, e: EnrollmentRuntime, out: Outputs, *, urgent: bool = False
    ) -> EnrollmentRuntime:
        """Store the runtime and describe its PostgreSQL row (versioned upsert).

        The row is written only when a column PostgreSQL holds changed (state, pin, reason,
        end): scheduling bookkeeping alone is table state, not an authoritative row.
        """
        previous = self.enrollment(e.id)
        e = e.model_copy(update={"version": e.version + 1})
        self.cache.save(self.enrollments, e.id, e)
        if urgent or previous is None or row_fields(previous) != row_fields(e):
            row = enrollment_op(e)
            (out.urgent if urgent else out.sink).append(row)
        return e

    def candidates(self, pool_id: str) -> list[Candidate]:
        out: list[Candidate] = []
        for member in self.config.members(pool_id):
            adapter = self.config.adapter(member.adapter_id)
            state = self.adapter_state(adapter) if adapter is not None else None
            out.append(Candidate(member=member, adapter=adapter, state=state))
        return out

    def selection_state(self, pool_id: str, version_id: str) -> SelectionState:
        state = self.cache.load(self.selections, f"{pool_id}:{version_id}", SelectionState)
        return state or SelectionState(pool_id=pool_id, sequence_version_id=version_id)

    def save_selection(self, state: SelectionState) -> None:
        self.cache.save(self.selections, f"{state.pool_id}:{state.sequence_version_id}", state)
