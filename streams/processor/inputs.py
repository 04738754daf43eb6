"""Handlers of the input topics: enrollment commands, inbound mail, health signals, config.

Each takes the ``Processor`` and a decoded record, validates it against the tenant's config
(bad input raises ``RecordError`` → dead-letter), calls the core and returns ``Outputs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

from dripdrop_core.classify import classify_fields
from dripdrop_core.config_sync import REFERENCES, config_ownership_error
from dripdrop_core.correlation import (
    PARTICIPANT_INTENTS,
    Intent,
    correlate,
    correlation_candidates,
    dedupe_key,
    index_key,
    intent_effect,
    normalize_message_id,
    parse_intent,
    participant_address,
    participant_key,
)
from dripdrop_core.enrollment import TERMINAL, Event
from dripdrop_core.enrollment import applies as enrollment_applies
from dripdrop_core.errors import InputError, RecordError
from dripdrop_core.health import ExternalHealth, apply_external, count_outcome
from dripdrop_core.limits import validate_data_size, validate_identity
from dripdrop_core.mail_threads import has_line_break
from dripdrop_core.models import Adapter, EnrollmentState, HealthState, Mode, ReplyBehavior
from dripdrop_core.pools import decide_repin
from dripdrop_core.scheduling import step_due_at
from dripdrop_core.state import AdapterState, initial_adapter_state
from dripdrop_core.suppression import parse_entry, parse_reason
from streams.processor.availability import move_pin
from streams.processor.company import note_enrollment, stop_company
from streams.processor.flow import Processor
from streams.processor.pinning import ConfigNotReadyError, pin, start_waiting, tenant_owned
from streams.processor.rows import event_row
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.store import ENTITY_MODELS
from streams.processor.suppression import is_suppressed, suppress, unsuppress

_tenant_owned = tenant_owned


# ---------------------------------------------------------------- enrollments


def on_enrollment_command(
    p: Processor, cmd: dict[str, Any], now: datetime, partition: int
) -> Outputs:
    command = cmd["command"]
    if command == "enroll":
        return enroll(p, cmd, now, partition)
    out = Outputs()
    e = p.enrollment(cmd["enrollment_id"])
    e = _tenant_owned("enrollment", e, cmd["tenant_key"], cmd["enrollment_id"])
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
    adapter = _tenant_owned("adapter", adapter, e.tenant_key, cmd.get("new_adapter_id"))
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
    sequence = _tenant_owned(
        "sequence", p.config.sequence(cmd.get("sequence_id") or ""), tenant, cmd.get("sequence_id")
    )
    version = (
        p.config.version(cmd["sequence_version_id"])
        if cmd.get("sequence_version_id")
        else p.config.active_version(sequence.id)
    )
    version = _tenant_owned("sequence_version", version, tenant, cmd.get("sequence_version_id"))
    steps = p.config.steps(version.id)
    if not steps:
        # Steps travel as their own config records: they may still be on their way.
        raise ConfigNotReadyError(f"sequence version {version.id} has no steps", code="no_steps")
    recipient = (cmd.get("recipient") or "").strip()
    if not recipient or "@" not in recipient or has_line_break(recipient):
        raise RecordError("recipient is not an email address", code="invalid_recipient")
    validate_identity(cmd.get("subscriber_id") or recipient, recipient)
    raw_data = cmd.get("data")
    validate_data_size(raw_data if isinstance(raw_data, str) else json.dumps(raw_data or {}))
    data = json.loads(raw_data) if isinstance(raw_data, str) else raw_data or {}
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


# ---------------------------------------------------------------- inbound


def on_inbound(p: Processor, msg: dict[str, Any], now: datetime, partition: int) -> Outputs:
    """Correlate an inbound message and apply its intent (SPEC §8)."""
    out = Outputs()
    tenant = msg["tenant_key"]
    adapter = _tenant_owned(
        "adapter", p.config.adapter(msg.get("adapter_id")), tenant, msg.get("adapter_id")
    )
    message_id = normalize_message_id(msg.get("message_id"))
    if not message_id:
        raise RecordError("inbound message has no message_id", code="no_message_id")
    intent, intent_data = _intent_of(msg, now)
    seen = dedupe_key(tenant, message_id)
    if p.index.get(seen) is not None:
        out.emit("ingest.duplicate", tenant, now, message_id=message_id)
        return out
    p.index[seen] = 1
    candidates = correlation_candidates(
        msg.get("in_reply_to"),
        msg.get("references"),
        msg.get("headers"),
        original_message_id=intent_data.get("original_message_id"),
    )
    hit = correlate(tenant, candidates, _IndexView(p))
    if hit is not None:
        matched_by = str(hit[0].kind)
        execution = _execution(p, p.index.get(index_key(tenant, hit[0].message_id, hit[0].kind)))
        execution["step_execution_id"] = hit[1]  # an older index's record lacks it
    else:
        matched_by, execution = "participants", _by_participant(p, msg, adapter.id, intent)
    e = p.enrollment(execution.get("enrollment_id") or "")
    if e is None or (matched_by == "participants" and e.state in TERMINAL):
        out.emit("ingest.unmatched", tenant, now, message_id=message_id, adapter_id=adapter.id)
        return out
    step_execution_id = execution["step_execution_id"]
    step = p.config.entity("step", execution["step_id"])
    return_at = intent_data.get("return_at")
    effect = intent_effect(
        intent,
        reply_behavior=getattr(step, "reply_behavior", None) or ReplyBehavior.STOP,
        ooo_return=_iso_date(return_at),
        recipient_timezone=e.recipient_timezone,
        now=now,
        morning_hour=p.policy.ooo_morning_hour,
        bounce_type=intent_data.get("bounce_type"),
    )
    out.emit(
        "ingest.inbound_message",
        tenant,
        now,
        message_id=message_id,
        enrollment_id=e.id,
        step_execution_id=step_execution_id,
        intent=str(intent),
        matched_by=matched_by,
        classified_by=intent_data.get("rule"),
    )
    out.urgent.append(
        {
            "op": "event",
            "row": event_row(
                e,
                _event_type(str(intent)),
                now,
                key=message_id,
                adapter_id=execution["adapter_id"],
                step_execution_id=step_execution_id,
                data={
                    "message_id": message_id,
                    "intent": str(intent),
                    "from": msg.get("from"),
                    "subject": msg.get("subject"),
                    "in_reply_to": normalize_message_id(msg.get("in_reply_to")),
                    **{k: v for k, v in intent_data.items() if k in _EVENT_INTENT_DATA},
                },
            ),
        }
    )
    _apply_effect(p, e, effect, execution, now, partition, out)
    if intent is Intent.REPLY:
        stop_company(p, e, now, out)
    return out


_EVENT_INTENT_DATA = ("rule", "return_at", "bounce_type", "status", "feedback_type")
"""Classifier output kept on the message event (no addresses beyond the event's own)."""


def _intent_of(msg: dict[str, Any], now: datetime) -> tuple[Intent, dict[str, str]]:
    """The record's intent, or, when it came without one, the classifier's (SPEC §8:
    a message without an intent is classified, not assumed to be a reply)."""
    data = {str(k): str(v) for k, v in (msg.get("intent_data") or {}).items()}
    if msg.get("intent"):
        return parse_intent(msg["intent"]), data
    received = msg.get("received_at")
    found = classify_fields(
        msg.get("headers") or {},
        msg.get("subject"),
        msg.get("body_text"),
        msg.get("body_html"),
        received=(received if isinstance(received, datetime) else now).date(),
    )
    return found.intent, {**found.data, **data}


def _iso_date(raw: str | None) -> date | None:
    """``intent_data.return_at``; a malformed one is ignored (the OOO still counts)."""
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _event_type(intent: str) -> str:
    return {
        "reply": "replied",
        "ooo": "out_of_office",
        "auto_reply": "auto_replied",
        "bounce": "bounced",
        "complaint": "complained",
        "unsubscribe": "unsubscribed",
    }.get(intent, "replied")


class _IndexView(Mapping[str, str]):
    """The ``index`` table seen as the str → str mapping ``correlate`` reads (gets only)."""

    def __init__(self, p: Processor) -> None:
        self.index = p.index

    def __getitem__(self, key: str) -> str:
        value = self.index.get(key)  # the execution record (see Processor.on_result)
        if isinstance(value, str):  # written before the record: the execution id
            return value
        if not isinstance(value, dict) or "step_execution_id" not in value:
            raise KeyError(key)
        return str(value["step_execution_id"])

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - correlate only calls get()
        return iter(())

    def __len__(self) -> int:  # pragma: no cover
        return 0


def _by_participant(
    p: Processor, msg: dict[str, Any], adapter_id: str, intent: Intent
) -> dict[str, Any]:
    """The last send of ``adapter_id`` to the message's ``From``, when no id matched
    (``dripdrop_core.correlation.participant_key``); ``{}`` when off or none."""
    address = participant_address(msg.get("from"))
    if not p.policy.correlate_participants or intent not in PARTICIPANT_INTENTS or not address:
        return {}
    return _execution(p, p.index.get(participant_key(msg["tenant_key"], adapter_id, address)))


def _execution(p: Processor, value: Any) -> dict[str, Any]:
    """The execution a correlation-index value names: the record itself, or (an index
    written by an earlier version) its id, whose record is under ``exec:{id}``."""
    if isinstance(value, str):
        value = p.index.get(f"exec:{value}")
    return dict(value) if isinstance(value, dict) else {}


def _apply_effect(
    p: Processor,
    e: EnrollmentRuntime,
    effect: Any,
    execution: dict[str, Any],
    now: datetime,
    partition: int,
    out: Outputs,
) -> None:
    if effect.suppress:
        suppress(p.index, e.tenant_key, e.recipient, str(effect.reason), now, out)
    adapter = p.config.adapter(execution.get("adapter_id"))
    if effect.health_signal is not None and adapter is not None:
        outcome = count_outcome(
            adapter,
            p.adapter_state(adapter),
            effect.health_signal,
            at=now,
            now=now,
            policy=p.policy.health,
        )
        p.apply_health(adapter, outcome, now, partition, out)
    event = effect.enrollment_event
    if event is not None and enrollment_applies(e.state, event):
        p.transition(e, event, now, out, reason=str(effect.reason), urgent=True)
        return
    if effect.resume_at is not None and e.status == "scheduled" and e.state not in TERMINAL:
        due = max(e.due_at or now, effect.resume_at)
        p.schedule_at(e, due, now, partition, out)


def _suppression_entry(p: Processor, sig: dict[str, Any], now: datetime) -> Outputs:
    """``suppress`` / ``unsuppress`` from the API: one list entry, no adapter involved."""
    out = Outputs()
    try:
        entry = parse_entry(sig.get("recipient") or "").value
        reason = parse_reason(sig.get("reason") or "manual")
    except InputError as exc:
        raise RecordError(str(exc), code="invalid_recipient") from None
    if sig["kind"] == "suppress":
        suppress(
            p.index, sig["tenant_key"], entry, reason, now, out, source=sig.get("source") or "api"
        )
    else:
        unsuppress(p.index, sig["tenant_key"], entry, now, out)
    return out


def _stop(
    p: Processor, e: EnrollmentRuntime | None, reason: str, now: datetime, out: Outputs
) -> None:
    if e is not None:
        p.transition(e, Event.STOP, now, out, reason=reason, urgent=True)


def _one_click_unsubscribe(p: Processor, sig: dict[str, Any], now: datetime) -> Outputs:
    """RFC 8058 one-click (``dripdrop web``): the token named tenant, enrollment, recipient.

    The web app checked the signature; the enrollment must still be the tenant's and be
    the recipient's, else the record is dead-lettered and nothing changes.
    """
    out = Outputs()
    tenant = sig["tenant_key"]
    e = p.enrollment(sig["enrollment_id"])
    recipient = (sig.get("recipient") or "").strip()
    if e is None or e.tenant_key != tenant or e.recipient.lower() != recipient.lower():
        raise RecordError(
            f"unsubscribe names no enrollment {sig['enrollment_id']} of this recipient",
            code="not_found",
        )
    suppress(
        p.index,
        tenant,
        e.recipient,
        "unsubscribe",
        now,
        out,
        source=sig.get("source") or "one_click",
    )
    _stop(p, e, "unsubscribe", now, out)
    return out


# ---------------------------------------------------------------- health signals


def on_health_signal(p: Processor, sig: dict[str, Any], now: datetime, partition: int) -> Outputs:
    tenant = sig["tenant_key"]
    kind = sig["kind"]
    if kind in ("suppress", "unsuppress"):
        return _suppression_entry(p, sig, now)
    if kind == "unsubscribe" and sig.get("enrollment_id"):
        return _one_click_unsubscribe(p, sig, now)
    out = Outputs()
    execution: dict[str, Any] = {}
    for candidate, k in (
        (sig.get("provider_message_id"), "provider"),
        (sig.get("message_id"), "rfc"),
    ):
        ident = normalize_message_id(candidate)
        if ident and not execution:
            execution = _execution(p, p.index.get(index_key(tenant, ident, k)))  # type: ignore[arg-type]
    adapter_id = sig.get("adapter_id") or execution.get("adapter_id")
    adapter = _tenant_owned("adapter", p.config.adapter(adapter_id), tenant, adapter_id)
    if kind in ("set_health", "postmaster_score"):
        state = p.adapter_state(adapter)
        target = (
            HealthState(sig["health_state"])
            if sig.get("health_state")
            else (state.health_state if kind == "postmaster_score" else None)
        )
        external = ExternalHealth(
            health_state=target,
            resting_until=sig.get("resting_until"),
            score=sig.get("score"),
            source=sig.get("source") or "external",
        )
        if kind == "postmaster_score" or not _already_applied(state, external):
            outcome = apply_external(state, external, now, policy=p.policy.health)
            if kind == "postmaster_score":
                outcome = outcome.model_copy(update={"transitions": ()})
            p.apply_health(adapter, outcome, now, partition, out)
        out.emit(
            "health.external_signal",
            tenant,
            now,
            adapter_id=adapter.id,
            health_state=str(target) if target else None,
            score=sig.get("score"),
            source=sig.get("source"),
        )
        return out
    hard = (
        kind == "complaint"
        or kind == "unsubscribe"
        or (kind == "bounce" and (sig.get("bounce_type") or "hard") == "hard")
    )
    if kind in ("delivery", "bounce", "complaint") and (kind != "bounce" or hard):
        outcome = count_outcome(
            adapter,
            p.adapter_state(adapter),
            kind,
            at=sig.get("occurred_at") or now,
            now=now,
            policy=p.policy.health,
        )
        p.apply_health(adapter, outcome, now, partition, out)
    if hard:
        recipient = sig.get("recipient") or execution.get("recipient")
        if recipient:
            suppress(p.index, tenant, recipient, kind, now, out)
        e = p.enrollment(execution.get("enrollment_id") or "")
        if e is not None:
            event = Event.BOUNCE if kind == "bounce" else Event.STOP
            p.transition(e, event, now, out, reason=kind, urgent=True)
    return out


# ---------------------------------------------------------------- config


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
    if _already_applied(existing, external):
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


def _already_applied(state: AdapterState, health: ExternalHealth) -> bool:
    """The runtime health already is what ``health`` asks for.

    One ``set_adapter_health`` call publishes both a config change and a ``set_health``
    record; whichever arrives second must not record a second transition. Times compare
    at millisecond precision (Avro ``timestamp-millis`` on the signal, JSON on config).
    """

    def millis(at: datetime | None) -> int | None:
        return None if at is None else int(at.timestamp() * 1000)

    return (
        state.health_state == health.health_state
        and (
            health.resting_until is None
            or millis(state.resting_until) == millis(health.resting_until)
        )
        and (health.score is None or state.health_score == health.score)
    )


def _authored_health_changed(previous: Any, adapter: Any) -> bool:
    fields = ("health_state", "resting_until", "health_score", "ramp_started_at")
    return any(getattr(previous, f, None) != getattr(adapter, f) for f in fields)
