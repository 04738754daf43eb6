"""Amazon SES through SNS: the ``ses`` handler and SES notification → health signals.

Message authentication (signatures, certificates, confirmation) is ``_sns``'s.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from streams.webhooks._adapters import WebhookAdapter
from streams.webhooks._errors import MalformedError
from streams.webhooks._produce import Publish
from streams.webhooks._request import json_body
from streams.webhooks._signal import Signal, health_signal, text, when
from streams.webhooks._sns import SnsCertificates, confirm_subscription, verify_sns_message

log = logging.getLogger("dripdrop.webhooks")


def topic_arns(config: Mapping[str, Any]) -> set[str]:
    value = config.get("webhook_topic_arn")
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


@dataclass(frozen=True, slots=True)
class _SesNames:
    """What every record of one SES notification shares: ids and time."""

    base: str
    provider_id: str
    rfc_id: str | None
    occurred: datetime | None


def ses_signals(notification: Mapping[str, Any], sns_message_id: str) -> list[Signal]:
    """The records of one SES notification (the JSON in an SNS ``Message``).

    Both shapes: identity notifications (``notificationType``) and configuration-set event
    publishing (``eventType``). Bounce ``Permanent`` → hard, ``Transient`` and
    ``Undetermined`` → soft; one record per bounced / complained / delivered recipient.
    Other types (Send, Open, Click, the subscription test message…) give none.

    Raises:
        MalformedError: no ``mail.messageId``, or the type's object is missing.
    """
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind not in ("Bounce", "Complaint", "Delivery"):
        return []
    mail = notification.get("mail")
    provider_id = text(mail.get("messageId")) if isinstance(mail, Mapping) else None
    if provider_id is None or not isinstance(mail, Mapping):
        raise MalformedError("SES notification without mail.messageId")
    headers = mail.get("commonHeaders")
    rfc_id = text(headers.get("messageId")) if isinstance(headers, Mapping) else None
    detail = notification.get(str(kind).lower())
    if not isinstance(detail, Mapping):
        raise MalformedError(f"SES {kind} notification without {str(kind).lower()}")
    names = _SesNames(
        base=text(detail.get("feedbackId")) or sns_message_id,
        provider_id=provider_id,
        rfc_id=rfc_id,
        occurred=when(detail.get("timestamp")),
    )
    if kind == "Delivery":
        return _ses_deliveries(detail, names)
    return _ses_feedback(str(kind), detail, names)


def _ses_deliveries(detail: Mapping[str, Any], names: _SesNames) -> list[Signal]:
    """One ``delivery`` per delivered recipient (one without a recipient if none listed)."""
    recipients: list[str | None] = [r for r in detail.get("recipients") or [] if isinstance(r, str)]
    return [
        health_signal(
            "delivery",
            f"ses:{names.base}" + (f":{r}" if r and len(recipients) > 1 else ""),
            source="ses",
            provider_message_id=names.provider_id,
            message_id=names.rfc_id,
            recipient=r,
            occurred_at=names.occurred,
            reason=text(detail.get("smtpResponse")),
        )
        for r in recipients or [None]
    ]


def _ses_feedback(kind: str, detail: Mapping[str, Any], names: _SesNames) -> list[Signal]:
    """One ``bounce`` or ``complaint`` per listed recipient (one without if none listed)."""
    listed = detail.get("bouncedRecipients" if kind == "Bounce" else "complainedRecipients")
    entries = [e for e in listed or [] if isinstance(e, Mapping)]
    out: list[Signal] = []
    for entry in entries or [{}]:
        recipient = text(entry.get("emailAddress"))
        event_id = f"ses:{names.base}" + (f":{recipient}" if recipient and len(entries) > 1 else "")
        if kind == "Complaint":
            out.append(
                health_signal(
                    "complaint",
                    event_id,
                    source="ses",
                    provider_message_id=names.provider_id,
                    message_id=names.rfc_id,
                    recipient=recipient,
                    occurred_at=names.occurred,
                    reason=text(detail.get("complaintFeedbackType")),
                )
            )
        else:
            out.append(
                health_signal(
                    "bounce",
                    event_id,
                    source="ses",
                    provider_message_id=names.provider_id,
                    message_id=names.rfc_id,
                    recipient=recipient,
                    occurred_at=names.occurred,
                    bounce_type="hard" if detail.get("bounceType") == "Permanent" else "soft",
                    reason=text(entry.get("diagnosticCode")) or text(detail.get("bounceSubType")),
                )
            )
    return out


class SesHandler:
    """``POST /webhooks/ses/…``: one SNS message, verified before anything acts on it."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        certificates: SnsCertificates,
        url_pattern: re.Pattern[str],
        publish: Publish,
    ) -> None:
        self.http = http
        self.certificates = certificates
        self.url_pattern = url_pattern
        self.publish = publish

    async def __call__(self, adapter: WebhookAdapter, request: Request, raw: bytes) -> Response:
        arns = topic_arns(adapter.config)
        if not arns:
            return PlainTextResponse("webhooks not configured for this adapter", 404)
        message = json_body(raw)
        kind = message.get("Type")
        await verify_sns_message(
            message, arns, certificates=self.certificates, url_pattern=self.url_pattern
        )
        if kind == "SubscriptionConfirmation":
            await confirm_subscription(message, http=self.http, url_pattern=self.url_pattern)
            log.info(
                "SNS subscription confirmed adapter=%s topic=%s", adapter.id, message["TopicArn"]
            )
            return JSONResponse({"confirmed": True})
        if kind != "Notification":
            return JSONResponse({"produced": 0})
        try:
            notification = json.loads(message["Message"])
        except ValueError:
            raise MalformedError("SNS Message is not JSON") from None
        if not isinstance(notification, dict):
            raise MalformedError("SNS Message is not a JSON object")
        signals = ses_signals(notification, str(message["MessageId"]))
        return JSONResponse({"produced": await self.publish(adapter, signals)})
