"""What every HTTP email API provider shares: one client, and errors onto the failure classes.

The Gmail, Microsoft Graph, Mailgun and Postmark providers call their APIs with httpx; this
module holds what they have in common, so the classification is written once (SPEC §7):

* nothing reached the API (connect refused or timed out, the request not fully written)
  → ``AdapterFailureError``: the send may be retried, the adapter's breaker counts it;
* the request went out and no answer came (read timeout, connection dropped)
  → ``AmbiguousDeliveryError``: the API may have accepted it, never resend;
* an answer: HTTP 401/403/429/5xx → ``AdapterFailureError`` (``retry_after`` from the
  ``Retry-After`` header); any other 4xx → ``PermanentDeliveryError`` unless the provider
  maps its documented codes more finely (recipient rejected…).

Error details carry the status and the provider's error code, never the response text
(it may echo an address or the message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ProviderError,
)
from streams.secrets import SecretError, resolve_secret

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_CONNECTIONS = 8
"""Open connections per API account: as many as the sender's default concurrency."""

_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,80}\Z")


def client(timeout_seconds: float, *, connections: int = DEFAULT_CONNECTIONS) -> httpx.AsyncClient:
    """An httpx client with keep-alive connections and one timeout for every phase."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def secret(value: object, key: str) -> str:
    """Resolve the secret reference under ``key`` now (a rotated file is read again).

    Raises:
        AdapterFailureError: ``secret_unavailable``, naming the key, never the value.
    """
    try:
        return resolve_secret(value)
    except SecretError as exc:
        raise AdapterFailureError("secret_unavailable", key) from exc


def config_value(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``config[key]``, or ``default``; a missing required key is a configuration error.

    Raises:
        AdapterFailureError: ``invalid_config`` when ``key`` is missing and required (the
            adapter is at fault: its sends are deferred until it is fixed, never failed).
    """
    if key in config and config[key] is not None:
        return config[key]
    if default is None:
        raise AdapterFailureError("invalid_config", f"missing {key}")
    return default


def reference_key(value: object) -> str:
    """A stable, hashable form of a secret reference, for the provider cache key."""
    return json.dumps(value, sort_keys=True, default=str)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP-date, RFC 9110 §10.2.3)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def code_of(text: object) -> str:
    """A provider error code safe to put in ``error``: a short token, else ``"?"``."""
    value = str(text)
    return value if _CODE.match(value) else "?"


def transport_error(exc: httpx.TransportError) -> ProviderError:
    """Classify an httpx transport failure by whether the request could have been read.

    A connect or pool failure, or a request not fully written, reached no API: the server
    cannot act on a truncated HTTP request. Anything after the request was written (a read
    timeout, the connection closed before the response) may have been accepted.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return AdapterFailureError("connect_failed", name)
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        return AdapterFailureError("request_not_sent", name)
    if isinstance(exc, httpx.ReadTimeout):
        return AmbiguousDeliveryError("timeout_after_request", name)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.ProxyError | httpx.LocalProtocolError):
        return AdapterFailureError("connect_failed", name)
    return AmbiguousDeliveryError("disconnected_after_request", name)


def status_error(response: httpx.Response, code: str = "?") -> ProviderError:
    """The default mapping of an HTTP error answer (``code``: the provider's error code)."""
    status = response.status_code
    detail = f"HTTP {status} {code}"
    if status == 401:
        return AdapterFailureError("auth_rejected", detail, retry_after=retry_after(response))
    if status == 403:
        return AdapterFailureError("forbidden", detail, retry_after=retry_after(response))
    if status == 429:
        return AdapterFailureError("rate_limited", detail, retry_after=retry_after(response))
    if status >= 500:
        return AdapterFailureError(
            "provider_unavailable", detail, retry_after=retry_after(response)
        )
    return PermanentDeliveryError("request_rejected", detail)


class BearerToken(Protocol):
    """What a provider needs of ``streams.providers.oauth.OAuth2Token``."""

    async def access_token(self) -> str: ...

    def invalidate(self) -> None: ...


async def with_bearer(
    token: BearerToken, send: Callable[[str], Awaitable[httpx.Response]]
) -> httpx.Response:
    """Call ``send(access_token)``; on HTTP 401 refresh the token once and call it again.

    A 401 means the API did not take the request (an expired or revoked token), so sending
    it again is safe; a second 401 is returned to the caller (an ``auth_rejected``).

    Raises:
        ProviderError: the transport failed (``transport_error``), or the token endpoint did.
    """
    response = await _call(send, await token.access_token())
    if response.status_code != 401:
        return response
    token.invalidate()
    return await _call(send, await token.access_token())


async def _call(send: Callable[[str], Awaitable[httpx.Response]], access: str) -> httpx.Response:
    try:
        return await send(access)
    except httpx.TransportError as exc:
        raise transport_error(exc) from exc


async def request(send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """``await send()`` with transport failures classified (``transport_error``)."""
    try:
        return await send()
    except httpx.TransportError as exc:
        raise transport_error(exc) from exc


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or ``{}`` when it has none (an HTML error page…)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
