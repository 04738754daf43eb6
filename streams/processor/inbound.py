"""Handler of the ``inbound-messages`` topic: correlate a message, apply its intent (SPEC §8).

A message is matched to the send it answers through the correlation index (Message-IDs,
then sender and recipient); its intent's effect stops, pauses or delays the enrollment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

from dripdrop_core.classify import classify_fields
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
from dripdrop_core.enrollment import TERMINAL
from dripdrop_core.enrollment import applies as enrollment_applies
from dripdrop_core.errors import RecordError
from dripdrop_core.health import count_outcome
from dripdrop_core.models import ReplyBehavior
from streams.processor import keys
from streams.processor.company import stop_company
from streams.processor.flow import Processor
from streams.processor.pinning import tenant_owned
from streams.processor.rows import event_op
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.suppression import suppress


def on_inbound(p: Processor, msg: dict[str, Any], now: datetime, partition: int) -> Outputs:
    """Correlate an inbound message and apply its intent (SPEC §8)."""
    out = Outputs()
    tenant = msg["tenant_key"]
    adapter = tenant_owned(
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
    matched_by, execution = _match(p, msg, adapter.id, intent, intent_data)
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
        _message_event(e, msg, intent, intent_data, execution, message_id=message_id, now=now)
    )
    _apply_effect(p, e, effect, execution, now, partition, out)
    if intent is Intent.REPLY:
        stop_company(p, e, now, out)
    return out


def _match(
    p: Processor,
    msg: dict[str, Any],
    adapter_id: str,
    intent: Intent,
    intent_data: dict[str, str],
) -> tuple[str, dict[str, Any]]:
    """How the message matched (an id kind, or ``participants``) and the execution it
    answers; ``{}`` when none."""
    tenant = msg["tenant_key"]
    candidates = correlation_candidates(
        msg.get("in_reply_to"),
        msg.get("references"),
        msg.get("headers"),
        original_message_id=intent_data.get("original_message_id"),
    )
    hit = correlate(tenant, candidates, _IndexView(p))
    if hit is None:
        return "participants", _by_participant(p, msg, adapter_id, intent)
    execution = execution_record(p, p.index.get(index_key(tenant, hit[0].message_id, hit[0].kind)))
    execution["step_execution_id"] = hit[1]  # an older index's record lacks it
    return str(hit[0].kind), execution


def _message_event(
    e: EnrollmentRuntime,
    msg: dict[str, Any],
    intent: Intent,
    intent_data: dict[str, str],
    execution: dict[str, Any],
    *,
    message_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The inbound message's ``message_events`` row (its id is the Message-ID)."""
    return event_op(
        e,
        _event_type(str(intent)),
        now,
        key=message_id,
        adapter_id=execution["adapter_id"],
        step_execution_id=execution["step_execution_id"],
        data={
            "message_id": message_id,
            "intent": str(intent),
            "from": msg.get("from"),
            "subject": msg.get("subject"),
            "in_reply_to": normalize_message_id(msg.get("in_reply_to")),
            **{k: v for k, v in intent_data.items() if k in _EVENT_INTENT_DATA},
        },
    )


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
    return execution_record(p, p.index.get(participant_key(msg["tenant_key"], adapter_id, address)))


def execution_record(p: Processor, value: Any) -> dict[str, Any]:
    """The execution a correlation-index value names: the record itself, or (an index
    written by an earlier version) its id, whose record is under ``exec:{id}``."""
    if isinstance(value, str):
        value = p.index.get(keys.legacy_execution(value))
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
