"""The Microsoft 365 provider: Graph ``sendMail`` with our MIME (base64, ``text/plain``).

Graph's MIME form of ``POST /me/sendMail`` (or ``/users/{id}/sendMail``) takes the
message as we render it (``render_message``), so our Message-ID, In-Reply-To, References
and List-Unsubscribe reach the recipient, and Outlook threads the follow-up by them.
Authorisation is an OAuth 2.0 access token from a refresh-token grant against the
tenant's token endpoint (``OAuth2Token``); a 401 refreshes it once and sends again.

Graph answers ``202 Accepted`` with no body and no message id: ``provider_message_id`` is
our own Message-ID, which Exchange keeps as the message's ``internetMessageId`` (so
``GET /me/messages?$filter=internetMessageId eq '<id>'`` finds it in Sent Items), the same
fallback the SMTP provider uses when a server names no queue id.

Adapter config::

    {"tenant": "contoso.onmicrosoft.com", "client_id": "…",
     "client_secret": {"secret": "env:…"}, "refresh_token": {"secret": "file:/…"},
     "user_id": "me", "token_url": MICROSOFT_TOKEN_URL (formatted with the tenant),
     "api_base": "https://graph.microsoft.com/v1.0", "timeout": 30}
"""

from __future__ import annotations

import base64
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
    RecipientRejectedError,
    check_headers,
)
from streams.providers.oauth import MICROSOFT_TOKEN_URL, OAuth2Token
from streams.providers.smtp import render_message

GRAPH_API = "https://graph.microsoft.com/v1.0"
DEFAULT_SCOPE = "https://graph.microsoft.com/Mail.Send offline_access"

# Graph error codes (https://learn.microsoft.com/en-us/graph/errors and the Exchange codes
# Graph passes through) that are about the account, not this message or recipient.
_ACCOUNT_CODES = frozenset(
    {
        "ErrorAccessDenied",
        "ErrorSendAsDenied",
        "ErrorMessageSubmissionBlocked",
        "ErrorQuotaExceeded",
        "ErrorMailboxStoreUnavailable",
        "ErrorExceededMessageLimit",
        "MailboxNotEnabledForRESTAPI",
        "ErrorServerBusy",
        "ErrorTooManyObjectsOpened",
    }
)
_RECIPIENT_CODES = frozenset({"ErrorInvalidRecipients", "ErrorRecipientNotFound"})


@dataclass(frozen=True, slots=True)
class GraphConfig:
    """One Microsoft 365 mailbox (an adapter's ``config``); secrets stay references."""

    client_id: str
    client_secret: object
    refresh_token: object
    tenant: str = "common"
    user_id: str = "me"
    token_url: str = ""
    api_base: str = GRAPH_API
    scope: str = DEFAULT_SCOPE
    timeout_seconds: float = httpapi.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> GraphConfig:
        """Read the adapter's config.

        Raises:
            AdapterFailureError: ``invalid_config`` (a missing key, a wrong type): fixing the
                adapter fixes every held send, so it is deferred, never failed.
        """
        try:
            tenant = str(config.get("tenant") or "common")
            return cls(
                client_id=str(httpapi.config_value(config, "client_id")),
                client_secret=httpapi.config_value(config, "client_secret"),
                refresh_token=httpapi.config_value(config, "refresh_token"),
                tenant=tenant,
                user_id=str(config.get("user_id") or "me"),
                token_url=str(config.get("token_url") or MICROSOFT_TOKEN_URL.format(tenant=tenant)),
                api_base=str(config.get("api_base") or GRAPH_API).rstrip("/"),
                scope=str(config.get("scope") or DEFAULT_SCOPE),
                timeout_seconds=float(config.get("timeout", httpapi.DEFAULT_TIMEOUT_SECONDS)),
            )
        except (TypeError, ValueError) as exc:
            raise AdapterFailureError("invalid_config", type(exc).__name__) from exc

    @property
    def key(self) -> tuple[object, ...]:
        """Adapters of one mailbox share a provider (its token and connections)."""
        return (
            self.api_base,
            self.user_id,
            self.client_id,
            self.token_url,
            httpapi.reference_key(self.refresh_token),
        )

    @property
    def send_url(self) -> str:
        if self.user_id == "me":
            return f"{self.api_base}/me/sendMail"
        return f"{self.api_base}/users/{quote(self.user_id, safe='@')}/sendMail"


def graph_error(response: httpx.Response) -> ProviderError:
    """Map a Graph error answer (``{"error": {"code", "message"}}``) onto the classes."""
    error = httpapi.json_body(response).get("error")
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    safe = httpapi.code_of(code or "?")
    detail = f"HTTP {response.status_code} {safe}"
    if code in _RECIPIENT_CODES:
        return RecipientRejectedError("invalid_recipient", detail)
    if code in _ACCOUNT_CODES:
        return AdapterFailureError(
            "account_refused", detail, retry_after=httpapi.retry_after(response)
        )
    return httpapi.status_error(response, safe)


class GraphProvider:
    """Send through one Microsoft 365 mailbox with Graph ``sendMail`` (MIME)."""

    def __init__(self, config: GraphConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = http or httpapi.client(config.timeout_seconds)
        self._token = OAuth2Token(
            config.token_url,
            config.client_id,
            config.client_secret,
            config.refresh_token,
            scope=config.scope,
        )

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email``; return its Message-ID (Graph's 202 carries no id).

        Raises:
            HeaderInjectionError: before anything is sent.
            RecipientRejectedError: ``ErrorInvalidRecipients``.
            AdapterFailureError: auth (after one refresh), 403, 429, 5xx, unreachable.
            AmbiguousDeliveryError: no answer after the request was sent.
            PermanentDeliveryError: any other refusal of this message.
        """
        check_headers(email)
        raw, message_id = render_message(email)
        content = base64.b64encode(raw)
        url = self.config.send_url

        def post(token: str) -> Any:
            return self._http.post(
                url,
                content=content,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
            )

        response = await httpapi.with_bearer(self._token, post)
        if not response.is_success:  # 202 Accepted, as documented
            raise graph_error(response)
        return message_id

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
