"""Postmark: the ``postmark`` handler, its Basic-auth check and webhook → health signal."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from streams.webhooks._adapters import WebhookAdapter
from streams.webhooks._errors import MalformedError, UnauthorizedError
from streams.webhooks._produce import Publish
from streams.webhooks._request import json_body, webhook_secret
from streams.webhooks._signal import Signal, health_signal, text, when

_POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked"})


def verify_basic_auth(authorization: str | None, username: str, password: str) -> None:
    """Check an ``Authorization: Basic`` header against the configured credentials.

    Raises:
        UnauthorizedError: missing, undecodable or wrong.
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise UnauthorizedError("no Basic credentials")
    try:
        user, sep, given = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        raise UnauthorizedError("Basic credentials undecodable") from None
    user_ok = hmac.compare_digest(user.encode(), username.encode())
    password_ok = hmac.compare_digest(given.encode(), password.encode())
    if not (sep and user_ok and password_ok):
        raise UnauthorizedError("wrong Basic credentials")


def postmark_signals(payload: Mapping[str, Any]) -> list[Signal]:
    """The record of one Postmark webhook (none for opens, clicks, auto-responders…).

    ``Bounce``: ``Type`` HardBounce / BadEmailAddress / ManuallyDeactivated → hard,
    SoftBounce / Transient / DnsError / Blocked → soft, SpamComplaint → complaint,
    Unsubscribe → unsubscribe. ``SpamComplaint`` → complaint. ``Delivery`` → delivery.
    ``SubscriptionChange`` with ``SuppressSending`` and reason ``ManualSuppression`` (the
    recipient unsubscribed) → unsubscribe; its HardBounce / SpamComplaint reasons repeat a
    Bounce webhook and give none.

    Raises:
        MalformedError: no ``MessageID``, or a bounce without its ``ID``.
    """
    record_type = payload.get("RecordType")
    message_id = text(payload.get("MessageID"))
    if record_type not in ("Bounce", "SpamComplaint", "Delivery", "SubscriptionChange"):
        return []
    if message_id is None:
        raise MalformedError("Postmark webhook without MessageID")
    if record_type == "Delivery":
        return _delivery(payload, message_id)
    if record_type == "SubscriptionChange":
        return _subscription_change(payload, message_id)
    return _bounce(payload, message_id, record_type=str(record_type))


def _delivery(payload: Mapping[str, Any], message_id: str) -> list[Signal]:
    recipient = text(payload.get("Recipient"))
    return [
        health_signal(
            "delivery",
            f"postmark:delivery:{message_id}:{recipient}",
            source="postmark",
            provider_message_id=message_id,
            recipient=recipient,
            occurred_at=when(payload.get("DeliveredAt")),
            reason=text(payload.get("Details")),
        )
    ]


def _subscription_change(payload: Mapping[str, Any], message_id: str) -> list[Signal]:
    """Only a recipient's own unsubscribe; bounce and complaint reasons repeat a Bounce."""
    recipient = text(payload.get("Recipient"))
    if not (
        payload.get("SuppressSending") is True
        and payload.get("SuppressionReason") == "ManualSuppression"
    ):
        return []
    changed = text(payload.get("ChangedAt"))
    return [
        health_signal(
            "unsubscribe",
            f"postmark:subscription:{message_id}:{recipient}:{changed}",
            source="postmark",
            provider_message_id=message_id,
            recipient=recipient,
            occurred_at=when(changed),
            reason="ManualSuppression",
        )
    ]


def _bounce(payload: Mapping[str, Any], message_id: str, *, record_type: str) -> list[Signal]:
    """A ``Bounce`` or ``SpamComplaint`` record, named by Postmark's bounce ``ID``."""
    bounce_id = payload.get("ID")
    if not isinstance(bounce_id, int | str) or isinstance(bounce_id, bool) or bounce_id == "":
        raise MalformedError("Postmark bounce without ID")
    kind_of = str(payload.get("Type"))
    if record_type == "SpamComplaint" or kind_of == "SpamComplaint":
        kind: Literal["bounce", "complaint", "unsubscribe"] = "complaint"
    elif kind_of == "Unsubscribe":
        kind = "unsubscribe"
    elif kind_of in _POSTMARK_HARD or kind_of in _POSTMARK_SOFT:
        kind = "bounce"
    else:
        return []
    return [
        health_signal(
            kind,
            f"postmark:{bounce_id}",
            source="postmark",
            provider_message_id=message_id,
            recipient=text(payload.get("Email")),
            occurred_at=when(payload.get("BouncedAt")),
            bounce_type=("hard" if kind_of in _POSTMARK_HARD else "soft")
            if kind == "bounce"
            else None,
            reason=text(payload.get("Details")) or text(payload.get("Description")),
        )
    ]


class PostmarkHandler:
    """``POST /webhooks/postmark/…``: a webhook carrying the Basic credentials of its URL."""

    def __init__(self, *, publish: Publish) -> None:
        self.publish = publish

    async def __call__(self, adapter: WebhookAdapter, request: Request, raw: bytes) -> Response:
        username = adapter.config.get("webhook_username")
        if adapter.config.get("webhook_secret") is None or not isinstance(username, str):
            return PlainTextResponse("webhooks not configured for this adapter", 404)
        verify_basic_auth(
            request.headers.get("authorization"),
            username,
            webhook_secret(adapter.config, "webhook_secret"),
        )
        signals = postmark_signals(json_body(raw))
        return JSONResponse({"produced": await self.publish(adapter, signals)})
