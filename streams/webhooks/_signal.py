"""The provider-neutral health-signal record the parsers build, and their field readers.

No provider knowledge here: each provider module maps its events onto ``health_signal``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from dripdrop_core.correlation import normalize_message_id

Signal = dict[str, Any]


def text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def when(value: object) -> datetime | None:
    """An ISO-8601 string or a unix timestamp (seconds) as an aware datetime."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def health_signal(
    kind: Literal["delivery", "bounce", "complaint", "unsubscribe"],
    event_id: str,
    *,
    source: str,
    provider_message_id: str | None,
    recipient: str | None,
    occurred_at: datetime | None,
    message_id: str | None = None,
    bounce_type: Literal["hard", "soft"] | None = None,
    reason: str | None = None,
) -> Signal:
    """One health-signal's provider-event fields (``tenant_key``/``adapter_id`` come later)."""
    return {
        "event_id": event_id,
        "occurred_at": occurred_at or datetime.now(UTC),
        "kind": kind,
        "provider_message_id": normalize_message_id(provider_message_id),
        "message_id": normalize_message_id(message_id),
        "recipient": recipient,
        "source": source,
        "bounce_type": bounce_type,
        "reason": (reason or None) and str(reason)[:1000],
    }
