"""The Gmail API provider: ``users.messages.send`` with our raw MIME and the thread kept.

The message is ``render_message``'s bytes, base64url encoded in ``raw``, so Message-ID,
In-Reply-To, References, List-Unsubscribe and the DKIM signature are ours, as over SMTP.
Authorisation is an OAuth 2.0 access token from a refresh-token grant (``OAuth2Token``);
a 401 refreshes it once and sends again (the API took nothing).

Threading: Gmail files a message into a thread only when the request names the
``threadId`` *and* the headers reference a message of it with the same subject. A
follow-up's ``In-Reply-To`` is our own Message-ID of the earlier step, so the thread is
found from it: first in a per-provider cache filled from every send's answer (no extra
call while the worker runs), else by ``users.messages.list`` with ``q=rfc822msgid:<id>``
(one call after a restart or on another worker: the sent message is in the mailbox). That
needs no state of ours (nothing to keep consistent with the ledger, nothing lost with a
data dir) and works for messages sent before the worker started. The dispatch command does
not carry the earlier step's Gmail id, which ``users.messages.get`` would need. Lookup
needs a scope that may search (``gmail.readonly``/``gmail.modify``); without it (403) the
follow-up is sent without ``threadId`` and still threads for the recipient by its headers.

Adapter config::

    {"client_id": "…", "client_secret": {"secret": "env:…"},
     "refresh_token": {"secret": "file:/…"}, "user_id": "me",
     "token_url": GOOGLE_TOKEN_URL, "api_base": "https://gmail.googleapis.com",
     "timeout": 30}
"""

from __future__ import annotations

import base64
import logging
import re
from collections import OrderedDict
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
from streams.providers.oauth import GOOGLE_TOKEN_URL, OAuth2Token
from streams.providers.smtp import render_message

log = logging.getLogger(__name__)

GMAIL_API = "https://gmail.googleapis.com"
THREAD_CACHE_SIZE = 10_000
"""Message-ID → threadId entries kept per mailbox (~1 MB); older ones are looked up again."""

_QUOTA_REASONS = frozenset(
    {"dailyLimitExceeded", "userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"}
)
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True, slots=True)
class GmailConfig:
    """One Gmail mailbox (an adapter's ``config``); secrets stay references here."""

    client_id: str
    client_secret: object
    refresh_token: object
    user_id: str = "me"
    token_url: str = GOOGLE_TOKEN_URL
    api_base: str = GMAIL_API
    scope: str | None = None
    timeout_seconds: float = httpapi.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> GmailConfig:
        """Read the adapter's config.

        Raises:
            AdapterFailureError: ``invalid_config`` (a missing key, a wrong type): fixing the
                adapter fixes every held send, so it is deferred, never failed.
        """
        try:
            return cls(
                client_id=str(httpapi.config_value(config, "client_id")),
                client_secret=httpapi.config_value(config, "client_secret"),
                refresh_token=httpapi.config_value(config, "refresh_token"),
                user_id=str(config.get("user_id") or "me"),
                token_url=str(config.get("token_url") or GOOGLE_TOKEN_URL),
                api_base=str(config.get("api_base") or GMAIL_API).rstrip("/"),
                scope=config.get("scope"),
                timeout_seconds=float(config.get("timeout", httpapi.DEFAULT_TIMEOUT_SECONDS)),
            )
        except (TypeError, ValueError) as exc:
            raise AdapterFailureError("invalid_config", type(exc).__name__) from exc

    @property
    def key(self) -> tuple[object, ...]:
        """Adapters of one mailbox share a provider (its token, connections, thread cache)."""
        return (
            self.api_base,
            self.user_id,
            self.client_id,
            self.token_url,
            httpapi.reference_key(self.refresh_token),
        )


def gmail_error(response: httpx.Response) -> ProviderError:
    """Map a Gmail API error answer (``{"error": {"errors": [{"reason"}]…}}``)."""
    error = httpapi.json_body(response).get("error")
    error = error if isinstance(error, dict) else {}
    items = [e for e in error.get("errors") or [] if isinstance(e, dict)]
    reason = str(items[0].get("reason", "")) if items else str(error.get("status", ""))
    message = str(error.get("message", ""))
    status = response.status_code
    detail = f"HTTP {status} {httpapi.code_of(reason or '?')}"
    if status == 400 and message.startswith("Invalid To header"):
        return RecipientRejectedError("invalid_recipient", detail)
    if status == 400 and reason == "failedPrecondition":
        return AdapterFailureError("account_not_ready", detail)  # mail service not enabled
    if status in (403, 429) and reason in _QUOTA_REASONS:
        return AdapterFailureError(
            "rate_limited", detail, retry_after=httpapi.retry_after(response)
        )
    return httpapi.status_error(response, httpapi.code_of(reason or "?"))


def _parent_id(email: OutboundEmail) -> str | None:
    """The Message-ID this email replies to (``In-Reply-To``, else the last reference)."""
    for name in ("In-Reply-To", "References"):
        found = _MESSAGE_ID.findall(email.header(name) or "")
        if found:
            return str(found[-1] if name == "References" else found[0])
    return None


class GmailProvider:
    """Send through one Gmail mailbox with the Gmail API."""

    def __init__(self, config: GmailConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = http or httpapi.client(config.timeout_seconds)
        self._token = OAuth2Token(
            config.token_url,
            config.client_id,
            config.client_secret,
            config.refresh_token,
            scope=config.scope,
        )
        self._threads: OrderedDict[str, str] = OrderedDict()
        self._users = f"{config.api_base}/gmail/v1/users/{quote(config.user_id, safe='@')}"
        self._warned_scope = False

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email``; return Gmail's message id.

        Raises:
            HeaderInjectionError: before anything is sent.
            RecipientRejectedError: Gmail refused the recipient address.
            AdapterFailureError: auth (after one refresh), quota, 429, 5xx, unreachable.
            AmbiguousDeliveryError: no answer after the request was sent.
            PermanentDeliveryError: any other refusal of this message.
        """
        check_headers(email)
        raw, message_id = render_message(email)
        body: dict[str, str] = {"raw": base64.urlsafe_b64encode(raw).decode("ascii")}
        parent = _parent_id(email)
        thread_id = await self._thread_of(parent) if parent else None
        if thread_id:
            body["threadId"] = thread_id
        url = f"{self._users}/messages/send"
        response = await httpapi.with_bearer(
            self._token, lambda token: self._http.post(url, json=body, headers=_auth(token))
        )
        if not response.is_success:
            raise gmail_error(response)
        data = httpapi.json_body(response)
        if data.get("threadId"):
            self._remember(message_id, str(data["threadId"]))
        # A 200 is an acceptance; without an id in it our Message-ID still names the message.
        return str(data.get("id") or message_id)

    async def _thread_of(self, parent: str) -> str | None:
        """The Gmail thread of our earlier message ``parent`` (a Message-ID), if it is found."""
        cached = self._threads.get(parent)
        if cached is not None:
            self._threads.move_to_end(parent)
            return cached
        url = f"{self._users}/messages"
        params = {"q": f"rfc822msgid:{parent.strip('<>')}", "maxResults": "1"}
        response = await httpapi.with_bearer(
            self._token,
            lambda token: self._http.get(url, params=params, headers=_auth(token)),
        )
        if response.status_code == 403 and not _is_quota(response):
            if not self._warned_scope:
                self._warned_scope = True
                log.warning(
                    "gmail: the token may not search the mailbox; follow-ups are sent"
                    " without threadId (grant gmail.readonly to keep Gmail threads)"
                )
            return None
        if response.status_code in (401, 403, 429) or response.status_code >= 500:
            raise gmail_error(response)  # nothing was sent yet: defer, keep the threading
        messages = httpapi.json_body(response).get("messages") or []
        if response.status_code != 200 or not messages or not isinstance(messages[0], dict):
            return None  # deleted from the mailbox, or never sent from it
        thread_id = messages[0].get("threadId")
        if not thread_id:
            return None
        self._remember(parent, str(thread_id))
        return str(thread_id)

    def _remember(self, message_id: str, thread_id: str) -> None:
        self._threads[message_id] = thread_id
        self._threads.move_to_end(message_id)
        while len(self._threads) > THREAD_CACHE_SIZE:
            self._threads.popitem(last=False)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()


def _is_quota(response: httpx.Response) -> bool:
    return gmail_error(response).reason == "rate_limited"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
