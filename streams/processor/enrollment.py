"""An enrollment's state changes, applied through the core's table (``dripdrop_core.enrollment``).

``transition`` is the only place an enrollment's state changes; ``note`` records why the
next step has not gone out yet (for ``enrollment explain``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dripdrop_core.enrollment import Event
from dripdrop_core.enrollment import transition as enrollment_transition
from dripdrop_core.explain import explain
from dripdrop_core.models import EnrollmentState
from streams.processor.runtime import EnrollmentRuntime, LastDecision, Outputs
from streams.processor.state import Tables


def transition(
    tables: Tables,
    e: EnrollmentRuntime,
    event: Event,
    now: datetime,
    out: Outputs,
    *,
    reason: str | None = None,
    urgent: bool = False,
    announce: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> EnrollmentRuntime:
    """Apply ``event`` through the core's table (``dripdrop_core.enrollment``), the only
    place an enrollment's state changes; an event that does not apply changes nothing.

    A terminal state ends the flow (``done``, ``finished_at``); a pause holds a step that
    was only scheduled (a send already handed over still gets its result). The change is
    announced once, as ``announce`` or the core's ``enrollment.<state>``.
    """
    change = enrollment_transition(e.state, event, reason)
    if change is None:
        return e
    update: dict[str, Any] = {"state": change.state, "reason": change.reason}
    if change.terminal:
        update.update(status="done", finished_at=now)
    elif change.state is not EnrollmentState.ACTIVE and e.status == "scheduled":
        update["status"] = "held"
    e = tables.save_enrollment(e.model_copy(update=update), out, urgent=urgent)
    told = {"reason": change.reason} if change.reason else {}
    told.update(attrs or {})
    out.emit(announce or change.telemetry, e.tenant_key, now, enrollment_id=e.id, **told)
    return e


def complete(
    tables: Tables, e: EnrollmentRuntime, now: datetime, out: Outputs
) -> EnrollmentRuntime:
    return transition(tables, e.model_copy(update={"pending": None}), Event.COMPLETE, now, out)


def note(e: EnrollmentRuntime, decision: Any, now: datetime) -> EnrollmentRuntime:
    until = getattr(decision, "until", None)
    last = LastDecision(
        kind=decision.kind,
        reason=str(decision.reason),
        until=until,
        text=explain(decision),
        at=now,
    )
    return e.model_copy(update={"last_decision": last})
