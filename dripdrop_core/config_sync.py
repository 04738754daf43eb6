"""Authored config on the stream: whose it is, and what an adapter update changes (SPEC §4, §5.7).

The config topic carries adapters as authored; the state table owns health at
runtime. Only fields the host changed are applied, so an unrelated edit (a
new name) never resets a rest or a ramp.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dripdrop_core.health import ExternalHealth, HealthOutcome, apply_external
from dripdrop_core.models import Adapter
from dripdrop_core.policy import HealthPolicy
from dripdrop_core.state import AdapterState, initial_adapter_state


def apply_adapter_update(
    old: Adapter | None,
    new: Adapter,
    state: AdapterState | None,
    now: datetime,
    *,
    policy: HealthPolicy,
) -> HealthOutcome:
    """Return the state after ``old`` became ``new`` on the config topic.

    A changed ``health_state``, ``resting_until`` or ``health_score`` is applied as
    an external signal with source ``config`` (one ``health.state_changed``); a
    changed ``ramp_started_at`` moves the ramp anchor. A first sighting seeds
    the state from the adapter.

    Args:
        old: The previously known version, ``None`` for a new adapter.
        new: The version just authored.
        state: The runtime state, ``None`` if none exists yet.
        now: Evaluation instant.
        policy: Cooldown for a rest without an end.
    """
    if old is None or state is None:
        return HealthOutcome(state=initial_adapter_state(new))
    outcome = HealthOutcome(state=state)
    health_changed = (old.health_state, old.resting_until, old.health_score) != (
        new.health_state,
        new.resting_until,
        new.health_score,
    )
    if health_changed:
        signal = ExternalHealth(
            health_state=new.health_state,
            resting_until=new.resting_until,
            score=new.health_score,
            source="config",
        )
        outcome = apply_external(state, signal, now, policy=policy)
    if old.ramp_started_at != new.ramp_started_at:
        moved = outcome.state.model_copy(update={"ramp_started_at": new.ramp_started_at})
        outcome = HealthOutcome(state=moved, transitions=outcome.transitions)
    return outcome


REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "pool_member": (("pool", "pool_id"), ("adapter", "adapter_id")),
    "sequence_version": (("sequence", "sequence_id"), ("pool", "pool_id")),
    "domain_throttle": (("adapter", "adapter_id"),),
    "step": (
        ("sequence_version", "version_id"),
        ("adapter", "adapter_id"),
        ("adapter", "adapter_override_id"),
    ),
}
"""Entity type → (referenced entity type, payload field): what an entity points at."""


def config_entity_id(entity_type: str, payload: Mapping[str, Any]) -> str | None:
    """The id an authored entity is stored under (``{pool_id}:{adapter_id}`` for a member)."""
    if entity_type == "pool_member":
        return f"{payload.get('pool_id')}:{payload.get('adapter_id')}"
    ident = payload.get("id")
    return None if ident is None else str(ident)


def config_ownership_error(
    tenant_key: str,
    entity_type: str,
    entity_id: str,
    payload: Mapping[str, Any] | None,
    previous_tenant: str | None,
    referenced: Mapping[tuple[str, str], str | None],
) -> str | None:
    """Why a config change may not be applied for ``tenant_key``, or ``None`` when it may.

    A change is the tenant's own only when the record, the entity it writes, the entity it
    replaces or deletes, and every entity it points at all belong to that tenant, and it is
    stored under its own id. Config arrives through the API's outbox, but the topic is the
    trust boundary: a record naming another tenant's entity is dead-lettered, never applied.

    Args:
        tenant_key: The record's tenant.
        entity_type: ``adapter``, ``pool``, ``pool_member``, ``sequence``…
        entity_id: The id the record names.
        payload: The entity written (``None`` for a deletion).
        previous_tenant: The tenant of the entity stored under that id, if any.
        referenced: ``(entity type, id)`` → that entity's tenant (``None``: unknown here
            yet, which is not a breach: config may arrive in any order).
    """
    if previous_tenant is not None and previous_tenant != tenant_key:
        return f"{entity_type} {entity_id} belongs to another tenant"
    if payload is None:
        return None
    if payload.get("tenant_key") != tenant_key:
        return f"{entity_type} payload names another tenant than its record"
    if config_entity_id(entity_type, payload) != entity_id:
        return f"{entity_type} payload is not entity {entity_id}"
    for kind, field in REFERENCES.get(entity_type, ()):
        ident = payload.get(field)
        owner = None if ident is None else referenced.get((kind, str(ident)))
        if owner is not None and owner != tenant_key:
            return f"{entity_type} {entity_id} points at another tenant's {kind} {ident}"
    return None
