"""Mailgun: the ``mailgun`` handler, its HMAC signature check and event → health signal."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from streams.webhooks._adapters import WebhookAdapter
from streams.webhooks._errors import MalformedError, UnauthorizedError, UnavailableError
from streams.webhooks._produce import Publish
from streams.webhooks._recent import Recent
from streams.webhooks._request import json_body, webhook_secret
from streams.webhooks._signal import Signal, health_signal, text, when


def verify_mailgun(
    signing_key: str,
    signature: object,
    *,
    now: float,
    max_age_seconds: float,
    seen: Callable[[str], bool] | None = None,
) -> str:
    """Check Mailgun's ``signature`` object; return its token (to remember it).

    ``signature`` = HMAC-SHA256(signing key, timestamp + token), hex. ``seen(token)``
    says whether the token was used before (a replay).

    Raises:
        MalformedError: no ``signature`` object of strings.
        UnauthorizedError: wrong signature, a stale or future timestamp, a replayed token.
    """
    if not isinstance(signature, Mapping):
        raise MalformedError("no signature object")
    timestamp, token, digest = (
        signature.get("timestamp"),
        signature.get("token"),
        signature.get("signature"),
    )
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not all(isinstance(v, str) and v for v in (timestamp, token, digest)):
        raise MalformedError("signature needs timestamp, token and signature")
    assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(digest, str)
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, digest.lower()):
        raise UnauthorizedError("Mailgun signature does not verify")
    try:
        age = abs(now - float(timestamp))
    except ValueError:
        raise UnauthorizedError("Mailgun timestamp is not a number") from None
    if not age <= max_age_seconds:
        raise UnauthorizedError("Mailgun timestamp is stale")
    if seen is not None and seen(token):
        raise UnauthorizedError("Mailgun token replayed")
    return token


def mailgun_signals(event_data: Mapping[str, Any]) -> list[Signal]:
    """The record of one Mailgun ``event-data`` (none for opens, clicks, accepts…).

    ``delivered`` → delivery; ``failed`` → bounce (``severity`` permanent → hard,
    temporary → soft); ``complained``; ``unsubscribed``. The message is named by
    ``message.headers.message-id``, which is both Mailgun's id and our Message-ID.

    Raises:
        MalformedError: no event ``id`` or no message id on an event we take.
    """
    event = event_data.get("event")
    kinds = {
        "delivered": "delivery",
        "failed": "bounce",
        "complained": "complaint",
        "unsubscribed": "unsubscribe",
    }
    kind = kinds.get(str(event))
    if kind is None:
        return []
    event_id = text(event_data.get("id"))
    message = event_data.get("message")
    headers = message.get("headers") if isinstance(message, Mapping) else None
    message_id = text(headers.get("message-id")) if isinstance(headers, Mapping) else None
    if event_id is None or message_id is None:
        raise MalformedError("Mailgun event without id or message.headers.message-id")
    status = event_data.get("delivery-status")
    reason = None
    if isinstance(status, Mapping):
        reason = text(status.get("description")) or text(status.get("message"))
    reason = reason or text(event_data.get("reason"))
    bounce_type: Literal["hard", "soft"] | None = None
    if kind == "bounce":
        bounce_type = "hard" if event_data.get("severity") == "permanent" else "soft"
    return [
        health_signal(
            kind,  # type: ignore[arg-type]
            f"mailgun:{event_id}",
            source="mailgun",
            provider_message_id=message_id,
            message_id=message_id,
            recipient=text(event_data.get("recipient")),
            occurred_at=when(event_data.get("timestamp")),
            bounce_type=bounce_type,
            reason=reason,
        )
    ]


class MailgunHandler:
    """``POST /webhooks/mailgun/…``: a signed event, each token accepted once per adapter.

    ``tokens`` remembers accepted tokens (keyed by adapter) to refuse replays.
    """

    def __init__(self, *, max_age_seconds: float, tokens: Recent, publish: Publish) -> None:
        self.max_age_seconds = max_age_seconds
        self.tokens = tokens
        self.publish = publish

    async def __call__(self, adapter: WebhookAdapter, request: Request, raw: bytes) -> Response:
        if adapter.config.get("webhook_secret") is None:
            return PlainTextResponse("webhooks not configured for this adapter", 404)
        body = json_body(raw)
        token = verify_mailgun(
            webhook_secret(adapter.config, "webhook_secret"),
            body.get("signature"),
            now=time.time(),
            max_age_seconds=self.max_age_seconds,
            seen=lambda t: f"{adapter.id}\0{t}" in self.tokens,
        )
        event_data = body.get("event-data")
        if not isinstance(event_data, dict):
            raise MalformedError("no event-data object")
        signals = mailgun_signals(event_data)
        self.tokens.add(f"{adapter.id}\0{token}")
        try:
            return JSONResponse({"produced": await self.publish(adapter, signals)})
        except UnavailableError:
            # the retry of a failed request is no replay
            self.tokens.discard(f"{adapter.id}\0{token}")
            raise
