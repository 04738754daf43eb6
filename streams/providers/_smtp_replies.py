"""What an SMTP server's replies mean: reply codes mapped to the ``ProviderError`` tree by
stage, TLS failures in an exception chain, and the queue id in the final 250 reply."""

from __future__ import annotations

import re
import ssl
from email.message import Message

import aiosmtplib

from streams.providers.base import (
    AdapterFailureError,
    PermanentDeliveryError,
    ProviderError,
    RecipientDeferredError,
    RecipientRejectedError,
    TransientDeliveryError,
)

# Postfix: "2.0.0 Ok: queued as 4BxYz…"; Exim: "OK id=1abc-…"; Sendmail: "… Message accepted
# for delivery" (no id). Anything else falls back to the Message-ID header.
_QUEUE_ID = re.compile(r"(?:queued as|id=)\s*<?([A-Za-z0-9._@-]+)>?", re.IGNORECASE)
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})")


def provider_message_id(reply: str, message: Message | str) -> str:
    """The server's queue id from the final 250 reply, else the Message-ID (or its header)."""
    match = _QUEUE_ID.search(reply)
    if match:
        return match.group(1)
    return message if isinstance(message, str) else str(message["Message-ID"])


def _status(exc: aiosmtplib.SMTPResponseException) -> str:
    """``550 5.1.1``: code and enhanced status, never the free text (it may hold addresses)."""
    enhanced = _ENHANCED_STATUS.match(exc.message or "")
    return f"{exc.code} {enhanced.group(1)}" if enhanced else str(exc.code)


def _by_code(reason: str, exc: aiosmtplib.SMTPResponseException) -> ProviderError:
    """4xx is transient, anything else (5xx, odd codes) permanent."""
    kind = TransientDeliveryError if 400 <= exc.code < 500 else PermanentDeliveryError
    return kind(reason, _status(exc), smtp_code=exc.code)


def _recipient_refused(exc: aiosmtplib.SMTPResponseException) -> ProviderError:
    """A refusal at RCPT is about this recipient (SPEC §7): 5xx a hard bounce, 4xx a
    deferral of this recipient (greylisting, full mailbox); 421 is the server, not them."""
    if exc.code == 421:
        return AdapterFailureError("service_unavailable", _status(exc), smtp_code=exc.code)
    kind = RecipientDeferredError if 400 <= exc.code < 500 else RecipientRejectedError
    return kind("recipient_refused", _status(exc), smtp_code=exc.code)


def _raise_if_tls(exc: BaseException) -> None:
    """An ``ssl.SSLError`` anywhere in the chain (bad certificate, wrong host, protocol):
    ``tls_failed``, an adapter failure; nothing was sent."""
    seen: BaseException | None = exc
    for _ in range(8):  # chains are short; never loop on a cyclic one
        if seen is None:
            return
        if isinstance(seen, ssl.SSLError):
            detail = getattr(seen, "verify_message", None) or type(seen).__name__
            raise AdapterFailureError("tls_failed", str(detail)) from exc
        seen = seen.__cause__ or seen.__context__
