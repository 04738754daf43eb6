"""OAuth 2.0 access tokens from a refresh-token grant, for Gmail, Microsoft 365 and XOAUTH2.

One ``OAuth2Token`` per mailbox: it holds the current access token until shortly before it
expires and asks the token endpoint for a new one when needed (RFC 6749 §6; Google's
"Refreshing an access token (offline access)",
https://developers.google.com/identity/protocols/oauth2/web-server#offline; Microsoft's
"Refresh the access token",
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token).
The client secret and the refresh token are secret references, resolved at every grant, so
a rotated secret file needs no restart and no secret is kept beyond the request.

A rejected access token (HTTP 401, SMTP 535/334) is dropped with ``invalidate()``; the next
``access_token()`` refreshes it once. Failures are adapter-level (``AdapterFailureError``):
the mailbox cannot send until its credentials are fixed, so the step is deferred, never
failed. No error message carries a secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from streams.providers import httpapi
from streams.providers.base import AdapterFailureError

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
EXPIRY_MARGIN_SECONDS = 60.0  # refresh this long before the endpoint's expires_in runs out
DEFAULT_EXPIRES_IN = 3600.0  # when the endpoint names none (RFC 6749 §5.1 makes it optional)
TIMEOUT_SECONDS = 30.0


class OAuth2Token:
    """A cached access token for one OAuth client and refresh token.

    ``client_secret`` and ``refresh_token`` are secret references (``{"secret": "env:…"}``);
    ``client_secret`` may be ``None`` for a public client.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: object,
        refresh_token: object,
        *,
        scope: str | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._scope = scope
        self._http = http
        self._clock = clock
        self._access: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.grants = 0

    async def access_token(self) -> str:
        """The current access token; a grant at the token endpoint when none is valid.

        Raises:
            AdapterFailureError: ``secret_unavailable`` (a reference that does not resolve),
                ``token_refused`` (the endpoint refused the client or the grant),
                ``token_endpoint_unavailable`` (unreachable, 429 or 5xx).
        """
        async with self._lock:
            if self._access is not None and self._clock() < self._expires_at:
                return self._access
            self._access, lifetime = await self._grant()
            self._expires_at = self._clock() + max(0.0, lifetime - EXPIRY_MARGIN_SECONDS)
            self.grants += 1
            return self._access

    def invalidate(self) -> None:
        """Forget the access token (the server rejected it); the next call refreshes."""
        self._access = None
        self._expires_at = 0.0

    async def _grant(self) -> tuple[str, float]:
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "refresh_token": httpapi.secret(self._refresh_token, "refresh_token"),
        }
        if self._client_secret is not None:
            form["client_secret"] = httpapi.secret(self._client_secret, "client_secret")
        if self._scope:
            form["scope"] = self._scope
        http = self._http or httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT_SECONDS))
        try:
            response = await http.post(self.token_url, data=form)
        except httpx.TransportError as exc:
            raise AdapterFailureError("token_endpoint_unavailable", type(exc).__name__) from exc
        finally:
            if self._http is None:
                await http.aclose()
        return _access_from(response)

    async def aclose(self) -> None:
        """Close an HTTP client passed in (one created per grant is closed already)."""
        if self._http is not None:
            await self._http.aclose()


def _access_from(response: httpx.Response) -> tuple[str, float]:
    """``(access_token, expires_in)`` from a token response, or the failure it means."""
    body = _json(response)
    if response.status_code == 429 or response.status_code >= 500:
        raise AdapterFailureError(
            "token_endpoint_unavailable",
            f"HTTP {response.status_code}",
            retry_after=httpapi.retry_after(response),
        )
    if not response.is_success:
        # RFC 6749 §5.2: invalid_client, invalid_grant ("Token has been expired or
        # revoked."), unauthorized_client… The description may echo what we sent: left out.
        code = httpapi.code_of(body.get("error", "?"))
        raise AdapterFailureError("token_refused", f"HTTP {response.status_code} {code}")
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise AdapterFailureError("token_refused", "no access_token in the answer")
    expires_in = str(body.get("expires_in", DEFAULT_EXPIRES_IN))
    try:
        lifetime = float(expires_in)
    except (TypeError, ValueError):
        lifetime = DEFAULT_EXPIRES_IN
    return access, lifetime


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
