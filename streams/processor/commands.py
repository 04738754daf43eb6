"""Handlers of the ``enrollments`` topic: enroll, pause, resume, unenroll, repin.

Each validates the command against the tenant's config (bad input raises ``RecordError`` →
dead-letter), applies it through the processor and returns ``Outputs``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from dripdrop_core.enrollment import Event
from dripdrop_core.enrollment import applies as enrollment_applies
from dripdrop_core.errors import RecordError
from dripdrop_core.limits import is_email_address, validate_data_size, validate_identity
from dripdrop_core.mail_threads import has_line_break
from dripdrop_core.models import EnrollmentState, Mode
from dripdrop_core.pools import decide_repin
from dripdrop_core.scheduling import step_due_at
from streams.processor.availability import move_pin
from streams.processor.company import note_enrollment
from streams.processor.flow import Processor
from streams.processor.pinning import ConfigNotReadyError, pin, start_waiting, tenant_owned
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.suppression import is_suppressed


def on_enrollment_command(
    p: Processor, cmd: dict[str, Any], now: datetime, partition: int
) -> Outputs:
    command = cmd["command"]
    if command == "enroll":
        return enroll(p, cmd, now, partition)
    out = Outputs()
    e = p.enrollment(cmd["enrollment_id"])
    e = tenant_owned("enrollment", e, cmd["tenant_key"], cmd["enrollment_id"])
    event = _COMMANDS.get(command)
    if event is Event.RESUME and enrollment_applies(e.state, event):
        p.resume(e, now, partition, out)
    elif event is not None and enrollment_applies(e.state, event):
        reason = cmd.get("reason") or ("operator" if event is Event.PAUSE else None)
        p.transition(e, event, now, out, reason=reason, urgent=True)
    elif command == "repin":
        _repin(p, e, cmd, now, partition, out)
    else:
        out.emit(
            "enrollment.command_ignored",
            e.tenant_key,
            now,
            enrollment_id=e.id,
            command=command,
            state=str(e.state),
        )
    return out


_COMMANDS = {"pause": Event.PAUSE, "resume": Event.RESUME, "unenroll": Event.UNENROLL}
"""Operator commands that are enrollment events (``repin`` moves the pin, not the state)."""


def _repin(
    p: Processor,
    e: EnrollmentRuntime,
    cmd: dict[str, Any],
    now: datetime,
    partition: int,
    out: Outputs,
) -> None:
    adapter = p.config.adapter(cmd.get("new_adapter_id"))
    adapter = tenant_owned("adapter", adapter, e.tenant_key, cmd.get("new_adapter_id"))
    if e.mode is not Mode.OUTBOUND:
        raise RecordError(f"enrollment {e.id} is not outbound", code="not_outbound")
    decide_repin(e.tenant_key, e.adapter_id, adapter, p.adapter_state(adapter))
    e = move_pin(e, adapter.id, now, out, reason=cmd.get("reason") or "operator")
    if e.state is EnrollmentState.PAUSED and e.reason == "pin_unavailable":
        p.resume(e, now, partition, out)
    elif e.state is EnrollmentState.WAITING:
        # An operator moves a stalled (waiting) enrollment to a sender (the seed's runbook):
        # it starts now; its queue entry is dropped when it reaches the head.
        start_waiting(p, e, now, partition, out)
    else:
        p.save_enrollment(e, out, urgent=True)


def enroll(p: Processor, cmd: dict[str, Any], now: datetime, partition: int) -> Outputs:
    """Start an enrollment: pin (outbound), schedule the first step (SPEC §5.2, §7)."""
    out = Outputs()
    tenant = cmd["tenant_key"]
    existing = p.enrollment(cmd["enrollment_id"])
    if existing is not None:
        # Already active or paused: the same enrollment (no second pin, no second first
        # step). Finished: re-enrolling under the same id is not supported yet.
        out.emit(
            "enrollment.duplicate",
            tenant,
            now,
            enrollment_id=existing.id,
            state=str(existing.state),
        )
        return out
    sequence = tenant_owned(
        "sequence", p.config.sequence(cmd.get("sequence_id") or ""), tenant, cmd.get("sequence_id")
    )
    version = (
        p.config.version(cmd["sequence_version_id"])
        if cmd.get("sequence_version_id")
        else p.config.active_version(sequence.id)
    )
    version = tenant_owned("sequence_version", version, tenant, cmd.get("sequence_version_id"))
    steps = p.config.steps(version.id)
    if not steps:
        # Steps travel as their own config records: they may still be on their way.
        raise ConfigNotReadyError(f"sequence version {version.id} has no steps", code="no_steps")
    recipient, data = _recipient_and_data(cmd)
    e = EnrollmentRuntime(
        id=cmd["enrollment_id"],
        tenant_key=tenant,
        sequence_id=sequence.id,
        version_id=version.id,
        mode=version.mode,
        pool_id=version.pool_id,
        subscriber_id=cmd.get("subscriber_id") or recipient,
        recipient=recipient,
        recipient_timezone=cmd.get("recipient_timezone"),
        data=data,
        enrolled_at=now,
    )
    if is_suppressed(p.index, tenant, recipient):
        # Refused before any pin: a suppressed enrollment takes no slot (SPEC §7).
        p.transition(e, Event.REJECT, now, out, reason="suppressed")
        return out
    note_enrollment(p, e, version)
    if version.mode is Mode.OUTBOUND:
        pinned = pin(p, e, now, partition, out)
        if pinned is None:
            return out  # waiting for capacity, or rejected
        e = pinned
    due = step_due_at(steps[0], enrolled_at=e.enrolled_at, previous_sent_at=None)
    p.schedule_at(e, due, now, partition, out)
    return out


def _recipient_and_data(cmd: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The command's recipient and template data, checked.

    Raises:
        RecordError: not an email address, an identity or data past their limits.
    """
    recipient = (cmd.get("recipient") or "").strip()
    if has_line_break(recipient) or not is_email_address(recipient):
        raise RecordError("recipient is not an email address", code="invalid_recipient")
    validate_identity(cmd.get("subscriber_id") or recipient, recipient)
    raw_data = cmd.get("data")
    validate_data_size(raw_data if isinstance(raw_data, str) else json.dumps(raw_data or {}))
    data: dict[str, Any] = json.loads(raw_data) if isinstance(raw_data, str) else raw_data or {}
    return recipient, data
