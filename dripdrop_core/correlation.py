"""Inbound id normalisation, correlation order, intent effects, dedupe keys (SPEC §8).

Matching runs against a tenant-scoped index the shell keeps (a Mapping such
as a Faust table), so a message can never correlate across tenants.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from email.utils import parseaddr
from enum import StrEnum
from typing import Literal

from dripdrop_core.enrollment import Event
from dripdrop_core.errors import RecordError
from dripdrop_core.models import Frozen, ReplyBehavior, UtcDatetime
from dripdrop_core.reasons import Reason
from dripdrop_core.scheduling import ooo_resume_at

PROVIDER_ID_HEADERS = ("X-Provider-Message-ID",)
_BRACKETED = re.compile(r"<([^<>]*)>")


class Intent(StrEnum):
    REPLY = "reply"
    OOO = "ooo"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class IdCandidate(Frozen):
    """One id to try: an RFC id (``out_message_id``) or a provider id."""

    kind: Literal["rfc", "provider"]
    message_id: str


class IntentEffect(Frozen):
    """What an inbound intent does to the enrollment (SPEC §8).

    Attributes:
        enrollment_event: The enrollment event (``dripdrop_core.enrollment``), or ``None``.
        cancel_pending: Pending steps are cancelled (stop).
        suppress: Suppress the recipient in the tenant.
        health_signal: Count toward the adapter's health (bounce/complaint).
        resume_at: Defer the next step to this instant (OOO with return date).
    """

    reason: Reason
    enrollment_event: Event | None = None
    cancel_pending: bool = False
    suppress: bool = False
    health_signal: Literal["bounce", "complaint"] | None = None
    resume_at: UtcDatetime | None = None


_EFFECTS: dict[Intent, IntentEffect] = {
    Intent.OOO: IntentEffect(reason=Reason.OUT_OF_OFFICE),
    Intent.AUTO_REPLY: IntentEffect(reason=Reason.AUTO_REPLY),
    Intent.BOUNCE: IntentEffect(
        reason=Reason.BOUNCE,
        enrollment_event=Event.BOUNCE,
        cancel_pending=True,
        suppress=True,
        health_signal="bounce",
    ),
    Intent.COMPLAINT: IntentEffect(
        reason=Reason.COMPLAINT,
        enrollment_event=Event.STOP,
        cancel_pending=True,
        suppress=True,
        health_signal="complaint",
    ),
    Intent.UNSUBSCRIBE: IntentEffect(
        reason=Reason.UNSUBSCRIBE,
        enrollment_event=Event.STOP,
        cancel_pending=True,
        suppress=True,
    ),
}
_SOFT_BOUNCE = IntentEffect(reason=Reason.BOUNCE)
_REPLY_EFFECTS: dict[ReplyBehavior, IntentEffect] = {
    ReplyBehavior.STOP: IntentEffect(
        reason=Reason.REPLY, enrollment_event=Event.REPLY, cancel_pending=True
    ),
    ReplyBehavior.PAUSE: IntentEffect(reason=Reason.REPLY, enrollment_event=Event.PAUSE),
    ReplyBehavior.CONTINUE: IntentEffect(reason=Reason.REPLY),
}


def normalize_message_id(raw: str | None) -> str | None:
    """Trim whitespace and angle brackets: ``" <a@b> "`` → ``"a@b"``; empty → ``None``."""
    if raw is None:
        return None
    cleaned = raw.strip().removeprefix("<").removesuffix(">").strip()
    return cleaned or None


def split_references(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return normalized ids of a References header (string or list), oldest first."""
    if value is None:
        return ()
    parts = [value] if isinstance(value, str) else list(value)
    ids: list[str] = []
    for part in parts:
        found = _BRACKETED.findall(part)
        tokens = found if found else part.split()
        ids.extend(n for n in (normalize_message_id(t) for t in tokens) if n is not None)
    return tuple(ids)


def correlation_candidates(
    in_reply_to: str | None,
    references: str | Iterable[str] | None,
    headers: Mapping[str, str] | None = None,
    *,
    original_message_id: str | None = None,
) -> tuple[IdCandidate, ...]:
    """Return ids to try in order: the reported message's id (a bounce or complaint
    names our send inside the report), In-Reply-To, References newest→oldest, provider id."""
    out: list[IdCandidate] = []
    original = normalize_message_id(original_message_id)
    if original is not None:
        out.append(IdCandidate(kind="rfc", message_id=original))
    first = normalize_message_id(in_reply_to)
    if first is not None:
        out.append(IdCandidate(kind="rfc", message_id=first))
    out.extend(
        IdCandidate(kind="rfc", message_id=r) for r in reversed(split_references(references))
    )
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    for name in PROVIDER_ID_HEADERS:
        provider = normalize_message_id(lowered.get(name.lower()))
        if provider is not None:
            out.append(IdCandidate(kind="provider", message_id=provider))
    return tuple(dict.fromkeys(out))


def index_key(tenant_key: str, message_id: str, kind: Literal["rfc", "provider"] = "rfc") -> str:
    """Tenant-scoped key of a sent id in the correlation index (length-prefixed, unambiguous)."""
    return f"{kind}:{len(tenant_key)}:{tenant_key}:{normalize_message_id(message_id) or ''}"


PARTICIPANT_INTENTS = frozenset({Intent.REPLY, Intent.OOO, Intent.AUTO_REPLY})
"""Intents a person's mailbox sends (a report comes from a mailer daemon, never the
prospect): the only ones the participants fallback may correlate."""


def participant_address(from_header: str | None) -> str | None:
    """The bare lower-cased address of a ``From`` (``"Ann <Ann@X.org>"`` → ``ann@x.org``)."""
    _, address = parseaddr(from_header or "")
    address = address.strip().lower()
    return address if "@" in address else None


def participant_key(tenant_key: str, adapter_id: str, address: str) -> str:
    """Tenant-scoped key of the last send of ``adapter_id`` to ``address``.

    The correlation fallback for a reply whose client dropped In-Reply-To and References
    (SPEC §8): the most recent enrollment the adapter sent to the message's ``From``."""
    return f"participant:{len(tenant_key)}:{tenant_key}:{adapter_id}:{address.lower()}"


def dedupe_key(tenant_key: str, message_id: str) -> str:
    """Tenant-scoped key that makes one inbound message take effect once (SPEC §8)."""
    return f"inbound:{len(tenant_key)}:{tenant_key}:{normalize_message_id(message_id) or ''}"


def correlate(
    tenant_key: str, candidates: Iterable[IdCandidate], index: Mapping[str, str]
) -> tuple[IdCandidate, str] | None:
    """Return the first candidate found in the tenant's index and its value, else ``None``.

    ``index`` maps ``index_key(...)`` to the step execution id of the send.
    """
    for candidate in candidates:
        hit = index.get(index_key(tenant_key, candidate.message_id, candidate.kind))
        if hit is not None:
            return candidate, hit
    return None


def parse_intent(raw: str) -> Intent:
    """Return the intent; an unknown one is a dead-letter record, not a crash.

    Raises:
        RecordError: Code ``unknown_intent``.
    """
    try:
        return Intent(raw.strip().lower())
    except ValueError:
        raise RecordError(f"unknown intent {raw[:40]!r}", code="unknown_intent") from None


def intent_effect(
    intent: Intent,
    *,
    reply_behavior: ReplyBehavior = ReplyBehavior.STOP,
    ooo_return: date | None = None,
    recipient_timezone: str | None = None,
    morning_hour: int = 9,
    bounce_type: str | None = None,
    now: datetime,
) -> IntentEffect:
    """Return the effect of an inbound intent on its enrollment (SPEC §8).

    Reply follows the replied step's ``reply_behavior``; OOO with a return date
    defers the next step to the recipient's morning of that date (the first day
    back). A soft bounce (4.x.x: the server will retry or the mailbox is full) changes
    nothing, as a soft bounce on ``health-signals`` does; a bounce of unknown type is hard.
    """
    if intent is Intent.REPLY:
        return _REPLY_EFFECTS[reply_behavior]
    if intent is Intent.BOUNCE and (bounce_type or "hard").strip().lower() == "soft":
        return _SOFT_BOUNCE
    effect = _EFFECTS[intent]
    if intent is Intent.OOO and ooo_return is not None:
        resume = ooo_resume_at(
            ooo_return, recipient_timezone or "UTC", morning_hour=morning_hour, now=now
        )
        return effect.model_copy(update={"resume_at": resume})
    return effect
