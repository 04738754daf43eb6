"""The Postmark provider: ``POST /email`` with our headers in ``Headers``.

Postmark takes no raw MIME, but its ``Headers`` list passes any header through to the
message, Message-ID included, so In-Reply-To, References and List-Unsubscribe are ours and
threading works; Reply-To goes in its own ``ReplyTo`` field. Postmark builds the MIME and
signs it with the domain's DKIM key, so our DKIM signature (``render_message``) does not
apply here. Chosen over SendGrid (which documents no guarantee for a custom Message-ID and
answers 202 with the id only in a response header) and MailerSend (custom headers only on
some plans) because its documented ``ErrorCode`` numbers map cleanly onto the failure
classes: 406 inactive recipient is a bounce, 400/401/405/412/413 are the account's.
Called with httpx rather than ``postmarker`` (synchronous, requests-based) for the same
reason as Mailgun: the failure's phase decides between "retry" and "ambiguous".

Adapter config::

    {"server_token": {"secret": "env:POSTMARK_TOKEN"}, "message_stream": "outbound",
     "api_base": "https://api.postmarkapp.com", "timeout": 30}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import make_msgid, parseaddr
from typing import Any

import httpx

from streams.providers import httpapi
from streams.providers.base import (
    AdapterFailureError,
    OutboundEmail,
    ProviderError,
    RecipientRejectedError,
    check_headers,
)

POSTMARK_API = "https://api.postmarkapp.com"

# https://postmarkapp.com/developer/api/overview#error-codes
INACTIVE_RECIPIENT = 406
INVALID_EMAIL_REQUEST = 300
_ACCOUNT_CODES = frozenset({10, 100, 400, 401, 405, 412, 413})


@dataclass(frozen=True, slots=True)
class PostmarkConfig:
    """One Postmark server (an adapter's ``config``); the token stays a reference."""

    server_token: object
    message_stream: str = "outbound"
    api_base: str = POSTMARK_API
    timeout_seconds: float = httpapi.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> PostmarkConfig:
        """Read the adapter's config.

        Raises:
            AdapterFailureError: ``invalid_config`` (a missing key, a wrong type): fixing the
                adapter fixes every held send, so it is deferred, never failed.
        """
        try:
            return cls(
                server_token=httpapi.config_value(config, "server_token"),
                message_stream=str(config.get("message_stream") or "outbound"),
                api_base=str(config.get("api_base") or POSTMARK_API).rstrip("/"),
                timeout_seconds=float(config.get("timeout", httpapi.DEFAULT_TIMEOUT_SECONDS)),
            )
        except (TypeError, ValueError) as exc:
            raise AdapterFailureError("invalid_config", type(exc).__name__) from exc

    @property
    def key(self) -> tuple[object, ...]:
        return (self.api_base, self.message_stream, httpapi.reference_key(self.server_token))


def postmark_error(response: httpx.Response) -> ProviderError:
    """Map a Postmark error answer (``{"ErrorCode": n, "Message": …}``)."""
    body = httpapi.json_body(response)
    code = body.get("ErrorCode")
    message = str(body.get("Message", ""))
    detail = f"HTTP {response.status_code} ErrorCode {httpapi.code_of(code)}"
    if code == INACTIVE_RECIPIENT:
        return RecipientRejectedError("inactive_recipient", detail)
    if code == INVALID_EMAIL_REQUEST and message.startswith("Error parsing 'To'"):
        return RecipientRejectedError("invalid_recipient", detail)
    if code in _ACCOUNT_CODES:
        return AdapterFailureError(
            "account_refused", detail, retry_after=httpapi.retry_after(response)
        )
    return httpapi.status_error(response, f"ErrorCode {httpapi.code_of(code)}")


def postmark_message(email: OutboundEmail, message_stream: str) -> dict[str, Any]:
    """The ``/email`` request body: envelope fields, then our headers as given."""
    # The dispatcher sets Message-ID (SPEC §5.6); one is made, as render_message does, if not.
    message_id = email.header("Message-ID") or make_msgid(
        domain=parseaddr(email.from_address)[1].rpartition("@")[2] or None
    )
    headers = [{"Name": "Message-ID", "Value": message_id}]
    reply_to = None
    for name, value in email.headers.items():
        if name.lower() == "reply-to":
            reply_to = value
        elif name.lower() != "message-id":
            headers.append({"Name": name, "Value": value})
    body: dict[str, Any] = {
        "From": email.from_address,
        "To": email.recipient,
        "Subject": email.subject,
        "TextBody": email.body_text,
        "Headers": headers,
        "MessageStream": message_stream,
    }
    if email.body_html is not None:
        body["HtmlBody"] = email.body_html
    if reply_to is not None:
        body["ReplyTo"] = reply_to
    return body


class PostmarkProvider:
    """Send through one Postmark server."""

    def __init__(self, config: PostmarkConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = http or httpapi.client(config.timeout_seconds)
        self._url = f"{config.api_base}/email"

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email``; return Postmark's ``MessageID``.

        Raises:
            HeaderInjectionError: before anything is sent.
            RecipientRejectedError: ErrorCode 406 (inactive recipient) or a bad To.
            AdapterFailureError: token unavailable or refused, account codes, 429, 5xx.
            AmbiguousDeliveryError: no answer after the request was sent.
            PermanentDeliveryError: any other refusal of this message.
        """
        check_headers(email)
        body = postmark_message(email, self.config.message_stream)
        token = httpapi.secret(self.config.server_token, "server_token")
        response = await httpapi.request(
            lambda: self._http.post(
                self._url,
                json=body,
                headers={"Accept": "application/json", "X-Postmark-Server-Token": token},
            )
        )
        data = httpapi.json_body(response)
        if not response.is_success or data.get("ErrorCode", 0) != 0:
            raise postmark_error(response)
        return str(data.get("MessageID") or body["Headers"][0]["Value"])

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
