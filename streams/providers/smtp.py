"""The SMTP provider (aiosmtplib): a small pool of open connections per server account.

An adapter's ``config`` (``SmtpConfig.from_adapter_config``)::

    {"host": "smtp.example.com", "port": 587, "start_tls": true,
     "username": "ana@example.com", "password": {"secret": "file:/etc/dripdrop/ana.pw"},
     "tls_ca_file": null, "timeout": 30, "pool_size": 4}

    # XOAUTH2 (Gmail, Microsoft 365) instead of a password:
    {"host": "smtp.gmail.com", "port": 465, "use_tls": true, "username": "ana@gmail.com",
     "oauth2": {"token_url": "https://oauth2.googleapis.com/token", "client_id": "…",
                "client_secret": {"secret": "env:GOOGLE_CLIENT_SECRET"},
                "refresh_token": {"secret": "file:/etc/dripdrop/ana.refresh"}}}

* Secrets are references (``streams.secrets``), resolved when a connection is opened and
  never kept: a rotated password file is used by the next connection, no restart needed.
  One that does not resolve is an ``AdapterFailureError("secret_unavailable")``.
* TLS: ``use_tls`` (implicit TLS, port 465) or ``start_tls`` (``true``: required;
  ``null``: used when the server offers it; ``false``: never). Certificates are always
  verified, against the system's CAs or ``tls_ca_file`` (a private CA). A failed handshake
  is ``AdapterFailureError("tls_failed")``, nothing sent. Credentials are never sent over
  an unencrypted connection (``tls_required``) unless ``allow_plaintext_auth`` is true.
* AUTH: PLAIN/LOGIN (CRAM-MD5 when offered) with ``password``; XOAUTH2 with ``oauth2`` and
  a token from ``streams.providers.oauth.OAuth2Token`` (one per provider), refreshed and
  retried once when the server rejects it; a second rejection, or a wrong password, is
  ``AdapterFailureError("auth_failed")``. ``oauth2.token_url`` defaults to Google's only
  for a gmail.com/googlemail.com ``username``.

aiosmtplib errors are translated here and in ``_smtp_replies``, and only there, into the
``ProviderError`` tree. Which kind an error is depends on *when* it happened: anything
before ``DATA`` means nothing was handed over (transient or permanent), a break during
``DATA`` is ambiguous. No error carries a secret or the server's free text.

Modules: ``_smtp_config`` (``SmtpConfig``), ``_mime`` (``render_message``), ``_smtp_replies``
(reply codes → ``ProviderError``); this one holds the connection pool and the SMTP dialogue.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

import aiosmtplib

from streams.providers._mime import build_message, render_message
from streams.providers._smtp_config import (
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT_SECONDS,
    GOOGLE_MAIL_DOMAINS,
    SmtpConfig,
    SmtpOAuth2,
    _secret,
)
from streams.providers._smtp_replies import (
    _by_code,
    _recipient_refused,
    _status,
    provider_message_id,
)
from streams.providers._smtp_replies import (
    _raise_if_tls as _raise_if_tls,  # explicit: tests/unit/test_smtp_config.py imports it here
)
from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    OutboundEmail,
    TransientDeliveryError,
    check_headers,
)

if TYPE_CHECKING:
    from streams.providers.oauth import OAuth2Token

__all__ = [
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TIMEOUT_SECONDS",
    "GOOGLE_MAIL_DOMAINS",
    "SmtpConfig",
    "SmtpOAuth2",
    "SmtpProvider",
    "build_message",
    "provider_message_id",
    "render_message",
]


class _Slot:
    """One pooled connection (or the right to open one): a client that may be closed."""

    __slots__ = ("client",)

    def __init__(self) -> None:
        self.client: aiosmtplib.SMTP | None = None


class SmtpProvider:
    """Deliver through one SMTP account, over at most ``pool_size`` open connections.

    Connections are opened lazily and reused; one that the server dropped while idle is
    reopened transparently (nothing was sent on it, so that is not an error).
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._slots: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for _ in range(max(1, config.pool_size)):
            self._slots.put_nowait(_Slot())
        self._closed = False
        self._token: OAuth2Token | None = None
        if config.oauth2 is not None:
            # httpx (behind OAuth2Token) is imported only by XOAUTH2 accounts.
            from streams.providers.oauth import OAuth2Token

            grant = config.oauth2
            self._token = OAuth2Token(
                grant.token_url,
                grant.client_id,
                grant.client_secret,
                grant.refresh_token,
                scope=grant.scope,
            )

    async def send(self, email: OutboundEmail) -> str:
        """Deliver ``email``; return the queue id from the server's reply or the Message-ID.

        Raises:
            HeaderInjectionError: before any connection is opened.
            PermanentDeliveryError: 5xx at MAIL/RCPT/DATA.
            RecipientRejectedError / RecipientDeferredError: 5xx / 4xx at RCPT.
            AdapterFailureError: ``auth_failed``, ``auth_unavailable``, ``tls_failed``,
                ``tls_required``, ``secret_unavailable``, the OAuth2 token endpoint's
                failures (``token_refused``…), 421 at RCPT.
            TransientDeliveryError: connection failed or 4xx before the content was sent.
            AmbiguousDeliveryError: the connection broke or timed out during DATA.
        """
        if self._closed:
            raise RuntimeError("SmtpProvider is closed")
        check_headers(email)
        content, message_id = render_message(email)
        slot = await self._slots.get()
        try:
            reply = await self._send_on(slot, email, content)
        finally:
            if self._closed and slot.client is not None:
                slot.client.close()  # closed while this send ran: don't leak the socket
                slot.client = None
            self._slots.put_nowait(slot)
        return provider_message_id(reply, message_id)

    async def _send_on(self, slot: _Slot, email: OutboundEmail, content: bytes) -> str:
        """Run one transaction; reopen once if a reused connection turns out to be dead."""
        reused = slot.client is not None and slot.client.is_connected
        client = await self._connected(slot)
        try:
            await self._envelope(client, email)
        except TransientDeliveryError as exc:
            # An idle pooled connection the server closed: nothing was handed over yet,
            # so open a fresh one once; a fresh connection failing is the real error.
            slot.client = None
            if not reused or exc.reason != "disconnected":
                raise
            client = await self._connected(slot)
            await self._envelope(client, email)
        return await self._data(slot, client, content)

    async def _connected(self, slot: _Slot) -> aiosmtplib.SMTP:
        if slot.client is not None and slot.client.is_connected:
            return slot.client
        config = self.config
        # Credentials first: an unavailable secret or token endpoint opens no connection.
        password = _secret(config.password, "password") if config.password is not None else None
        access = await self._token.access_token() if self._token is not None else None
        tls_context = await self._tls_context()
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.use_tls,
            start_tls=False,  # done below, so a STARTTLS failure is told apart
            tls_context=tls_context,
            timeout=config.timeout_seconds,
            local_hostname=config.local_hostname,
        )
        try:
            await self._open(client)
            encrypted = config.use_tls or await self._start_tls(client)
            if password is not None or access is not None:
                if not encrypted and not config.allow_plaintext_auth:
                    raise AdapterFailureError("tls_required", "no TLS, credentials not sent")
                await self._authenticate(client, password, access)
        except BaseException:
            client.close()
            raise
        slot.client = client
        return client

    async def _tls_context(self) -> ssl.SSLContext | None:
        """A verifying context (system CAs, or ``tls_ca_file``), built per connection so a
        renewed CA file is read again; ``None`` when TLS is off."""
        config = self.config
        if not config.use_tls and config.start_tls is False:
            return None
        try:
            return await asyncio.to_thread(ssl.create_default_context, cafile=config.tls_ca_file)
        except (OSError, ValueError) as exc:  # missing or unreadable CA file
            raise AdapterFailureError("tls_failed", f"tls_ca_file: {type(exc).__name__}") from exc

    @staticmethod
    async def _open(client: aiosmtplib.SMTP) -> None:
        """TCP (and implicit TLS), the greeting and EHLO."""
        try:
            await client.connect()
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()  # a server without ESMTP (then no STARTTLS, no AUTH)
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code("connect_refused", exc) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            _raise_if_tls(exc)
            # Refused, unreachable or greeting timeout: nothing was sent.
            raise TransientDeliveryError("connect_failed", type(exc).__name__) from exc

    async def _start_tls(self, client: aiosmtplib.SMTP) -> bool:
        """STARTTLS when required (``start_tls: true``) or offered (``null``); whether the
        connection is now encrypted."""
        wanted = self.config.start_tls
        if wanted is False or (wanted is None and not client.supports_extension("starttls")):
            return False
        if not client.supports_extension("starttls"):
            raise AdapterFailureError("tls_failed", "STARTTLS not offered")
        try:
            await client.starttls()
        except aiosmtplib.SMTPResponseException as exc:
            raise AdapterFailureError("tls_failed", _status(exc), smtp_code=exc.code) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            _raise_if_tls(exc)
            raise TransientDeliveryError("connect_failed", type(exc).__name__) from exc
        return True

    async def _authenticate(
        self, client: aiosmtplib.SMTP, password: str | None, access: str | None
    ) -> None:
        """AUTH with the password, or XOAUTH2 with ``access`` (refreshed once if refused).

        A failed AUTH leaves the session usable (RFC 4954 §4), so the retry with a fresh
        token runs on the same connection.
        """
        username = self.config.username or ""
        try:
            if client.is_ehlo_or_helo_needed:  # STARTTLS reset the extensions
                await client.ehlo()
            if password is not None:
                await client.login(username, password)
                return
            assert access is not None and self._token is not None
            if "xoauth2" not in client.server_auth_methods:
                raise AdapterFailureError("auth_unavailable", "XOAUTH2 not offered")
            try:
                await client.auth_xoauth2(username, access)
            except aiosmtplib.SMTPAuthenticationError:
                # Expired or revoked before its time: one fresh token, then give up.
                self._token.invalidate()
                await client.auth_xoauth2(username, await self._token.access_token())
        except aiosmtplib.SMTPAuthenticationError as exc:
            if self._token is not None:
                self._token.invalidate()
            # The account, not the message: deferred and counted by the circuit breaker.
            raise AdapterFailureError("auth_failed", _status(exc), smtp_code=exc.code) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            raise TransientDeliveryError("connect_failed", type(exc).__name__) from exc
        except aiosmtplib.SMTPException as exc:  # no AUTH extension, no common mechanism
            raise AdapterFailureError("auth_unavailable", type(exc).__name__) from exc

    async def _envelope(self, client: aiosmtplib.SMTP, email: OutboundEmail) -> None:
        """MAIL FROM + RCPT TO; a refusal resets the transaction so the connection stays usable."""
        try:
            await client.mail(email.from_address)
            await client.rcpt(email.recipient)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise TransientDeliveryError("disconnected", "before DATA") from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            await self._reset(client)
            raise _by_code("sender_refused", exc) from exc
        except aiosmtplib.SMTPRecipientRefused as exc:
            await self._reset(client)
            raise _recipient_refused(exc) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client)
            raise _by_code("envelope_refused", exc) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            client.close()
            raise TransientDeliveryError("timeout", "before DATA") from exc
        except aiosmtplib.SMTPException as exc:
            client.close()
            raise TransientDeliveryError("smtp_error", type(exc).__name__) from exc

    async def _data(self, slot: _Slot, client: aiosmtplib.SMTP, content: bytes) -> str:
        try:
            response = await client.data(content)
        except aiosmtplib.SMTPDataError as exc:
            # The server answered with a code: it did not accept the message.
            await self._reset(client)
            raise _by_code("data_refused", exc) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            # aiosmtplib cannot tell us whether the 354 came: assume the content went out.
            slot.client = None
            raise AmbiguousDeliveryError("timeout_after_data") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            slot.client = None
            raise AmbiguousDeliveryError("disconnected_after_data", type(exc).__name__) from exc
        return response.message

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        """RSET after a refusal; a connection that cannot even do that is dropped."""
        try:
            await client.rset()
        except aiosmtplib.SMTPException:
            client.close()

    async def close(self) -> None:
        """QUIT every open connection (best effort) and refuse further sends."""
        self._closed = True
        while not self._slots.empty():
            slot = self._slots.get_nowait()
            client, slot.client = slot.client, None
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()
