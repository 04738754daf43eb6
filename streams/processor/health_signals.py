"""Handler of the ``health-signals`` topic: external health, delivery outcomes, suppression.

Also the API's suppression entries and the web app's one-click unsubscribes, which travel
on the same topic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dripdrop_core.correlation import index_key, normalize_message_id
from dripdrop_core.enrollment import Event
from dripdrop_core.errors import InputError, RecordError
from dripdrop_core.health import ExternalHealth, apply_external, count_outcome
from dripdrop_core.models import Adapter, HealthState
from dripdrop_core.state import AdapterState
from dripdrop_core.suppression import parse_entry, parse_reason
from streams.processor.flow import Processor
from streams.processor.inbound import execution_record
from streams.processor.pinning import tenant_owned
from streams.processor.runtime import EnrollmentRuntime, Outputs
from streams.processor.suppression import suppress, unsuppress


def on_health_signal(p: Processor, sig: dict[str, Any], now: datetime, partition: int) -> Outputs:
    tenant = sig["tenant_key"]
    kind = sig["kind"]
    if kind in ("suppress", "unsuppress"):
        return _suppression_entry(p, sig, now)
    if kind == "unsubscribe" and sig.get("enrollment_id"):
        return _one_click_unsubscribe(p, sig, now)
    out = Outputs()
    execution = _execution_of(p, sig)
    adapter_id = sig.get("adapter_id") or execution.get("adapter_id")
    adapter = tenant_owned("adapter", p.config.adapter(adapter_id), tenant, adapter_id)
    if kind in ("set_health", "postmaster_score"):
        _external_health(p, sig, adapter, now, partition, out)
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


def _execution_of(p: Processor, sig: dict[str, Any]) -> dict[str, Any]:
    """The execution a signal names by provider id or Message-ID; ``{}`` when none."""
    tenant = sig["tenant_key"]
    execution: dict[str, Any] = {}
    for candidate, k in (
        (sig.get("provider_message_id"), "provider"),
        (sig.get("message_id"), "rfc"),
    ):
        ident = normalize_message_id(candidate)
        if ident and not execution:
            execution = execution_record(p, p.index.get(index_key(tenant, ident, k)))  # type: ignore[arg-type]
    return execution


def _external_health(
    p: Processor,
    sig: dict[str, Any],
    adapter: Adapter,
    now: datetime,
    partition: int,
    out: Outputs,
) -> None:
    """``set_health`` or ``postmaster_score``: the adapter's health as another system sees
    it (a score is stored without a transition)."""
    kind = sig["kind"]
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
    if kind == "postmaster_score" or not already_applied(state, external):
        outcome = apply_external(state, external, now, policy=p.policy.health)
        if kind == "postmaster_score":
            outcome = outcome.model_copy(update={"transitions": ()})
        p.apply_health(adapter, outcome, now, partition, out)
    out.emit(
        "health.external_signal",
        sig["tenant_key"],
        now,
        adapter_id=adapter.id,
        health_state=str(target) if target else None,
        score=sig.get("score"),
        source=sig.get("source"),
    )


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


def already_applied(state: AdapterState, health: ExternalHealth) -> bool:
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
