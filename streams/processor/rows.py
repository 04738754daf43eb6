"""The PostgreSQL rows the processor describes for the sink, and the correlation record.

Pure builders of table values from an ``EnrollmentRuntime``: no table access, no outputs.
Every ``sink`` operation (``{"op": kind, …}``, read by ``streams/sink.py``) is built by one
``*_op`` function here, so each kind has one shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.processor.runtime import EnrollmentRuntime, stable_id


def execution_ref(e: EnrollmentRuntime) -> dict[str, Any]:
    """What the correlation index holds for ``e``'s pending send."""
    assert e.pending is not None
    return {
        "step_execution_id": e.pending.step_execution_id,
        "enrollment_id": e.id,
        "step_id": e.pending.step_id,
        "adapter_id": e.pending.adapter_id,
        "recipient": e.recipient,
    }


def row_fields(e: EnrollmentRuntime) -> tuple[Any, ...]:
    """The columns of ``e``'s row that PostgreSQL holds and the runtime may change."""
    return (e.state, e.adapter_id, e.reason, e.finished_at)


def enrollment_row(e: EnrollmentRuntime) -> dict[str, Any]:
    return {
        "id": e.id,
        "tenant_key": e.tenant_key,
        "sequence_id": e.sequence_id,
        "sequence_version_id": e.version_id,
        "subscriber_id": e.subscriber_id,
        "mode": str(e.mode),
        "adapter_id": e.adapter_id,
        "state": str(e.state),
        "reason": e.reason,
        "recipient": e.recipient,
        "timezone": e.recipient_timezone,
        "data": e.data,
        "enrolled_at": e.enrolled_at.isoformat(),
        "finished_at": e.finished_at.isoformat() if e.finished_at else None,
        "version": e.version,
    }


def event_row(
    e: EnrollmentRuntime,
    event_type: str,
    at: datetime,
    *,
    key: str,
    adapter_id: str | None = None,
    step_id: str | None = None,
    step_execution_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``message_events`` row with a deterministic id (replays upsert, never duplicate)."""
    return {
        "id": stable_id("event", event_type, e.id, key),
        "tenant_key": e.tenant_key,
        "event_type": event_type,
        "adapter_id": adapter_id,
        "enrollment_id": e.id,
        "step_execution_id": step_execution_id,
        "data": {**(data or {}), **({"step_id": step_id} if step_id else {})},
        "occurred_at": at.isoformat(),
    }


SinkOp = dict[str, Any]
"""One operation of a ``sink`` record (JSON): ``{"op": kind, …}``."""


def enrollment_op(e: EnrollmentRuntime) -> SinkOp:
    """Upsert ``e``'s row (versioned: only a newer ``version`` moves it)."""
    return {"op": "enrollment", "row": enrollment_row(e)}


def event_op(
    e: EnrollmentRuntime,
    event_type: str,
    at: datetime,
    *,
    key: str,
    adapter_id: str | None = None,
    step_id: str | None = None,
    step_execution_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> SinkOp:
    """Upsert one ``message_events`` row (``event_row``)."""
    row = event_row(
        e,
        event_type,
        at,
        key=key,
        adapter_id=adapter_id,
        step_id=step_id,
        step_execution_id=step_execution_id,
        data=data,
    )
    return {"op": "event", "row": row}


def health_op(
    adapter_id: str, tenant_key: str, state: dict[str, Any], transition: dict[str, Any]
) -> SinkOp:
    """An adapter's new health state and the transition that led there."""
    return {
        "op": "health",
        "adapter_id": adapter_id,
        "tenant_key": tenant_key,
        "state": state,
        "transition": transition,
    }


def suppression_op(row: dict[str, Any]) -> SinkOp:
    """Add (or, with ``removed``, remove) one suppression-list entry."""
    return {"op": "suppression", "row": row}


def claim_op_of(command: dict[str, Any], guard: dict[str, Any]) -> SinkOp:
    """``dripdrop.claim_send`` for ``command`` under ``guard`` (cap, gap, throttles)."""
    return {"op": "claim", "command": command, "guard": guard}


def error_code(error: str | None) -> str | None:
    """The reason code of a result's ``error`` (``"<code>: detail"``)."""
    code = (error or "").split(":", 1)[0].strip()
    return code or None
