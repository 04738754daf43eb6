"""Handler of the ``config`` topic: an authored change, checked and applied.

An adapter or member that became unavailable (or returned) is handled at once; an
adapter's authored health goes into its runtime state.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from dripdrop_core.config_sync import REFERENCES, config_ownership_error
from dripdrop_core.errors import RecordError
from dripdrop_core.health import ExternalHealth, apply_external
from dripdrop_core.models import Adapter
from dripdrop_core.state import AdapterState, initial_adapter_state
from streams.processor.flow import Processor
from streams.processor.health_signals import already_applied
from streams.processor.runtime import Outputs
from streams.processor.store import ENTITY_MODELS


def _config_payload(entity_type: str, raw: Any) -> dict[str, Any]:
    """The change's entity, checked against its model before anything is stored."""
    try:
        payload = json.loads(raw)
        ENTITY_MODELS[entity_type].model_validate(payload)
    except (TypeError, ValueError) as exc:  # JSONDecodeError and ValidationError are both
        raise RecordError(
            f"{entity_type} payload is not a valid {entity_type}: {exc}", code="invalid_config"
        ) from exc
    if not isinstance(payload, dict):
        raise RecordError(f"{entity_type} payload is not an object", code="invalid_config")
    return payload


def on_config(p: Processor, change: dict[str, Any], now: datetime, partition: int) -> Outputs:
    """Apply an authored change; a sender that became unavailable is handled at once."""
    out = Outputs()
    entity_type = change["entity_type"]
    if entity_type not in ENTITY_MODELS:
        raise RecordError(f"unknown entity type {entity_type}", code="unknown_entity")
    payload = None if change.get("deleted") else _config_payload(entity_type, change["payload"])
    previous = p.config.entity(entity_type, change["entity_id"])
    referenced = {
        (kind, str(ident)): getattr(p.config.entity(kind, str(ident)), "tenant_key", None)
        for kind, field in REFERENCES.get(entity_type, ())
        if payload is not None and (ident := payload.get(field)) is not None
    }
    problem = config_ownership_error(
        change["tenant_key"],
        entity_type,
        change["entity_id"],
        payload,
        getattr(previous, "tenant_key", None),
        referenced,
    )
    if problem is not None:
        raise RecordError(problem, code="tenant_mismatch")
    p.config.apply(entity_type, change["entity_id"], payload)
    if entity_type == "adapter" and payload is not None:
        adapter = p.config.adapter(change["entity_id"])
        assert adapter is not None
        _authored_health(p, adapter, previous, now, partition, out)
        if not adapter.active:  # pinned enrollments already paused are left as they are
            p.pinned_sender_unavailable(adapter.id, now, partition, out)
        elif previous is not None and not getattr(previous, "active", True):
            p.sender_returned(adapter.id, now, partition, out)
    elif entity_type == "adapter" and previous is not None:
        p.pinned_sender_unavailable(change["entity_id"], now, partition, out)
    elif entity_type == "pool_member" and (payload is None or not payload.get("active", True)):
        member = payload or (previous.model_dump() if previous is not None else None)
        if member is not None:  # deleting a member never seen is a no-op
            # Only this pool's enrollments: the adapter may still serve other pools.
            p.pinned_sender_unavailable(
                member["adapter_id"], now, partition, out, pool_id=member["pool_id"]
            )
    elif entity_type == "pool_member" and payload and not getattr(previous, "active", False):
        p.sender_returned(payload["adapter_id"], now, partition, out)
    return out


def _authored_health(
    p: Processor, adapter: Adapter, previous: Any, now: datetime, partition: int, out: Outputs
) -> None:
    """An adapter's authored health (state, rest, score, ramp anchor) into its runtime."""
    existing = p.cache.load(p.adapter_states, adapter.id, AdapterState)
    if existing is None:
        p.save_adapter_state(initial_adapter_state(adapter))
        return
    if previous is None or not _authored_health_changed(previous, adapter):
        return
    external = ExternalHealth(
        health_state=adapter.health_state,
        resting_until=adapter.resting_until,
        score=adapter.health_score,
        source="config",
    )
    if already_applied(existing, external):
        # Only the ramp anchor changed, or the set_health record of the same
        # set_adapter_health call came first: no second transition.
        if adapter.ramp_started_at is not None:
            p.save_adapter_state(
                existing.model_copy(update={"ramp_started_at": adapter.ramp_started_at})
            )
        return
    outcome = apply_external(existing, external, now, policy=p.policy.health)
    if adapter.ramp_started_at is not None:
        state = outcome.state.model_copy(update={"ramp_started_at": adapter.ramp_started_at})
        outcome = outcome.model_copy(update={"state": state})
    p.apply_health(adapter, outcome, now, partition, out)


def _authored_health_changed(previous: Any, adapter: Any) -> bool:
    fields = ("health_state", "resting_until", "health_score", "ramp_started_at")
    return any(getattr(previous, f, None) != getattr(adapter, f) for f in fields)
