"""The Mailgun provider: ``POST /v3/{domain}/messages.mime`` with our rendered MIME.

Chosen over SendGrid and MailerSend because Mailgun takes the whole RFC 5322 message as
we render it (``render_message``): every header is ours byte for byte, including the
Message-ID (which Mailgun returns as the message ``id``), In-Reply-To, References,
List-Unsubscribe and our DKIM signature. Called with httpx rather than Mailgun's Python
SDK: the SDK is synchronous (a thread per send) and hides whether a failure came before
or after the request was written, which decides between "retry" and "ambiguous".

Adapter config::

    {"domain": "mg.example.com", "api_key": {"secret": "env:MAILGUN_KEY"},
     "api_base": "https://api.mailgun.net" (EU: "https://api.eu.mailgun.net"),
     "timeout": 30}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from streams.providers import httpapi
from streams.providers.base import (
    AdapterFailureError,
    OutboundEmail,
    ProviderError,
    check_headers,
)
from streams.providers.smtp import render_message

MAILGUN_API = "https://api.mailgun.net"


@dataclass(frozen=True, slots=True)
class MailgunConfig:
    """One Mailgun sending domain (an adapter's ``config``); the key stays a reference."""

    domain: str
    api_key: object
    api_base: str = MAILGUN_API
    timeout_seconds: float = httpapi.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> MailgunConfig:
        """Read the adapter's config.

        Raises:
            AdapterFailureError: ``invalid_config`` (a missing key, a wrong type): fixing the
                adapter fixes every held send, so it is deferred, never failed.
        """
        try:
            return cls(
                domain=str(httpapi.config_value(config, "domain")),
                api_key=httpapi.config_value(config, "api_key"),
                api_base=str(config.get("api_base") or MAILGUN_API).rstrip("/"),
                timeout_seconds=float(config.get("timeout", httpapi.DEFAULT_TIMEOUT_SECONDS)),
            )
        except (TypeError, ValueError) as exc:
            raise AdapterFailureError("invalid_config", type(exc).__name__) from exc

    @property
    def key(self) -> tuple[object, ...]:
        return (self.api_base, self.domain, httpapi.reference_key(self.api_key))


def mailgun_error(response: httpx.Response) -> ProviderError:
    """Map a Mailgun error answer (documented: 400, 401, 402, 403, 404, 413, 429, 5xx).

    404 is the sending domain not found and 402 a payment/plan refusal: both are the
    account's, so any recipient would fail the same way (deferred, never failed).
    """
    status = response.status_code
    if status in (402, 404):
        return AdapterFailureError(
            "account_refused", f"HTTP {status}", retry_after=httpapi.retry_after(response)
        )
    return httpapi.status_error(response)


class MailgunProvider:
    """Send through one Mailgun domain."""

    def __init__(self, config: MailgunConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = http or httpapi.client(config.timeout_seconds)
        self._url = f"{config.api_base}/v3/{quote(config.domain, safe='')}/messages.mime"

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email``; return Mailgun's id (our Message-ID, as Mailgun reports it).

        Raises:
            HeaderInjectionError: before anything is sent.
            AdapterFailureError: the key is unavailable or refused, 402/403/404, 429, 5xx.
            AmbiguousDeliveryError: no answer after the request was sent.
            PermanentDeliveryError: 400/413, the message refused.
        """
        check_headers(email)
        raw, message_id = render_message(email)
        key = httpapi.secret(self.config.api_key, "api_key")
        response = await httpapi.request(
            lambda: self._http.post(
                self._url,
                auth=("api", key),
                data={"to": email.recipient},
                files={"message": ("message.mime", raw, "message/rfc822")},
            )
        )
        if not response.is_success:
            raise mailgun_error(response)
        return str(httpapi.json_body(response).get("id") or message_id)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
