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

aiosmtplib errors are translated here, and only here, into the ``ProviderError`` tree.
Which kind an error is depends on *when* it happened: anything before ``DATA`` means
nothing was handed over (transient or permanent), a break during ``DATA`` is ambiguous.
No error carries a secret or the server's free text.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

import aiosmtplib

from streams.providers import dkim
from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    OutboundEmail,
    PermanentDeliveryError,
    ProviderError,
    RecipientDeferredError,
    RecipientRejectedError,
    TransientDeliveryError,
    check_headers,
)
from streams.secrets import SecretError, is_reference, resolve_secret

if TYPE_CHECKING:
    from streams.providers.oauth import OAuth2Token

DEFAULT_POOL_SIZE = 4
"""Open connections per server: enough to hide the ~3 round trips of connection setup
(EHLO, optional STARTTLS/AUTH) without looking like a flood to a mailbox provider."""

DEFAULT_TIMEOUT_SECONDS = 30.0

# CRLF line ends; folding only beyond RFC 5322's hard limit, so ids are never split oddly.
# compat32, not policy.SMTP: the modern policy re-parses every header while flattening.
_MAX_LINE = 998
_WIRE = compat32.clone(linesep="\r\n", max_line_length=_MAX_LINE)

# Postfix: "2.0.0 Ok: queued as 4BxYz…"; Exim: "OK id=1abc-…"; Sendmail: "… Message accepted
# for delivery" (no id). Anything else falls back to the Message-ID header.
_QUEUE_ID = re.compile(r"(?:queued as|id=)\s*<?([A-Za-z0-9._@-]+)>?", re.IGNORECASE)
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})")

# A header value that compat32 writes verbatim when its line fits in 998 characters (checked
# by a fuzz test against the email package): printable ASCII and tabs, nothing that
# ``str.splitlines`` would cut (VT, FF, FS, GS, RS…).
_VERBATIM_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
_TEXT_PART = (
    'Content-Type: text/{}; charset="utf-8"\r\n'
    "MIME-Version: 1.0\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
)


GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
"""``username`` domains whose ``oauth2.token_url`` may be left out (Google's is used)."""


@dataclass(frozen=True, slots=True)
class SmtpOAuth2:
    """An OAuth 2.0 refresh-token grant for XOAUTH2; the secrets are references."""

    token_url: str
    client_id: str
    refresh_token: Mapping[str, Any]
    client_secret: Mapping[str, Any] | None = None
    scope: str | None = None

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.token_url,
            self.client_id,
            _reference_key(self.refresh_token),
            _reference_key(self.client_secret),
            self.scope,
        )


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Connection settings of one SMTP server account (an adapter's ``config``).

    ``password`` and the ``oauth2`` secrets are references (``{"secret": "env:NAME"}``),
    resolved at each new connection; the resolved value is never stored here.
    """

    host: str
    port: int = 25
    username: str | None = None
    password: Mapping[str, Any] | None = None
    oauth2: SmtpOAuth2 | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    tls_ca_file: str | None = None
    allow_plaintext_auth: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    pool_size: int = DEFAULT_POOL_SIZE
    local_hostname: str | None = None

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> SmtpConfig:
        """Read ``{"host", "port", "username"?, "password"? | "oauth2"?, "use_tls"?,
        "start_tls"?, "tls_ca_file"?, "allow_plaintext_auth"?, "timeout"?, "pool_size"?,
        "local_hostname"?}`` (the module docstring shows an example).

        Raises:
            AdapterFailureError: ``invalid_config``: ``host`` missing, a value of the wrong
                type, a password that is not a secret reference, ``password`` and ``oauth2``
                both given, credentials without ``username``, ``use_tls`` with ``start_tls``.
                The detail names the key, never a value.
        """
        try:
            username = _optional(config, "username", str)
            password = config.get("password")
            if password is not None and not is_reference(password):
                raise _InvalidConfigError("password must be a secret reference")
            oauth2 = _oauth2(config.get("oauth2"), username)
            if password is not None and oauth2 is not None:
                raise _InvalidConfigError("password and oauth2 are exclusive")
            if (password is not None or oauth2 is not None) and not username:
                raise _InvalidConfigError("credentials need a username")
            use_tls = _flag(config, "use_tls", False)
            start_tls = config.get("start_tls")
            if start_tls is not None and not isinstance(start_tls, bool):
                raise _InvalidConfigError("start_tls must be true, false or null")
            if use_tls and start_tls:
                raise _InvalidConfigError("use_tls and start_tls are exclusive")
            return cls(
                host=str(config["host"]),
                port=int(config.get("port", 25)),
                username=username,
                password=password,
                oauth2=oauth2,
                use_tls=use_tls,
                start_tls=start_tls,
                tls_ca_file=_optional(config, "tls_ca_file", str)
                or _optional(config, "ca_file", str),
                allow_plaintext_auth=_flag(config, "allow_plaintext_auth", False),
                timeout_seconds=float(config.get("timeout", DEFAULT_TIMEOUT_SECONDS)),
                pool_size=int(config.get("pool_size", DEFAULT_POOL_SIZE)),
                local_hostname=_optional(config, "local_hostname", str),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Fixing the adapter fixes every held send: an adapter failure, never a bounce.
            raise AdapterFailureError("invalid_config", _config_detail(exc)) from exc

    @property
    def pool_key(self) -> tuple[object, ...]:
        """Accounts that may share connections: same server, same credentials (by
        reference, never the resolved secret), same TLS settings."""
        return (
            self.host,
            self.port,
            self.username,
            _reference_key(self.password),
            self.oauth2.key if self.oauth2 is not None else None,
            self.use_tls,
            self.start_tls,
            self.tls_ca_file,
            self.allow_plaintext_auth,
            self.local_hostname,
        )


class _InvalidConfigError(ValueError):
    """A config problem whose message names a key, never a value."""


def _reference_key(value: object) -> str | None:
    """``httpapi.reference_key`` (the same form), without importing httpx for SMTP."""
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _optional(config: Mapping[str, Any], key: str, kind: type[str]) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, kind):
        raise _InvalidConfigError(f"{key} must be a {kind.__name__}")
    return value


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):  # "false" would be truthy: refuse rather than guess
        raise _InvalidConfigError(f"{key} must be true or false")
    return value


def _oauth2(value: object, username: str | None) -> SmtpOAuth2 | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _InvalidConfigError("oauth2 must be an object")
    client_id = _optional(value, "client_id", str)
    if not client_id:
        raise _InvalidConfigError("oauth2.client_id missing")
    refresh_token = value.get("refresh_token")
    if not is_reference(refresh_token):
        raise _InvalidConfigError("oauth2.refresh_token must be a secret reference")
    client_secret = value.get("client_secret")
    if client_secret is not None and not is_reference(client_secret):
        raise _InvalidConfigError("oauth2.client_secret must be a secret reference")
    token_url = _optional(value, "token_url", str)
    if not token_url:
        domain = (username or "").rpartition("@")[2].lower()
        if domain not in GOOGLE_MAIL_DOMAINS:
            raise _InvalidConfigError("oauth2.token_url missing")
        from streams.providers.oauth import GOOGLE_TOKEN_URL

        token_url = GOOGLE_TOKEN_URL
    assert isinstance(refresh_token, Mapping)  # is_reference checked it
    return SmtpOAuth2(
        token_url=token_url,
        client_id=client_id,
        refresh_token=refresh_token,
        client_secret=client_secret if isinstance(client_secret, Mapping) else None,
        scope=_optional(value, "scope", str),
    )


def _config_detail(exc: Exception) -> str:
    """What ``invalid_config`` says: our own messages (key names) or the error's type,
    never ``str(exc)`` of a conversion (``int("…")`` quotes the value)."""
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]}"
    if isinstance(exc, _InvalidConfigError):
        return str(exc)
    return type(exc).__name__


def _utf8_charset() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP  # readable in a raw dump, and 7-bit safe for any relay
    return charset


_UTF8 = _utf8_charset()


def _header_value(value: str) -> str:
    """ASCII verbatim (threading ids stay byte-identical); anything else RFC 2047 encoded."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def build_message(email: OutboundEmail) -> Message:
    """Build the RFC 5322 message: From/To/Subject/Date, then ``headers`` as given.

    Uses the ``compat32`` classes on purpose: the modern header registry re-parses every
    address and id, which cost ~1 ms per message here, most of the sender's CPU budget.
    A missing ``Message-ID`` is generated so every message has one; the dispatcher
    normally sets it (SPEC §5.6) and then it is copied verbatim.
    """
    # typeshed says ``str``; the stdlib takes a Charset too, which is how QP is chosen.
    text = MIMEText(email.body_text, "plain", _UTF8)  # type: ignore[arg-type]
    message: Message
    if email.body_html is None:
        message = text
    else:
        message = MIMEMultipart("alternative")
        message.attach(text)
        message.attach(MIMEText(email.body_html, "html", _UTF8))  # type: ignore[arg-type]
    message["From"] = email.from_address
    message["To"] = email.recipient
    message["Subject"] = _header_value(email.subject)
    message["Date"] = formatdate(usegmt=True)
    for name, value in email.headers.items():
        message[name] = _header_value(value)
    if message["Message-ID"] is None:
        domain = email.from_address.rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
    return message


def render_message(email: OutboundEmail) -> tuple[bytes, str]:
    """The message as it goes on the wire and its ``Message-ID``, DKIM-signed when the
    From domain has a key (``streams.providers.dkim``, SPEC §13)."""
    raw, message_id = _render_unsigned(email)
    return dkim.sign(raw, email.from_address), message_id


def _render_unsigned(email: OutboundEmail) -> tuple[bytes, str]:
    """The message as it goes on the wire (CRLF line ends) and its ``Message-ID``.

    Byte for byte what ``build_message(email).as_bytes(policy=...)`` writes (a test compares
    them), but without building ``Message`` objects and folding every header through
    ``email.header``, which was most of the provider's CPU per message. It applies when
    every header line fits in 998 characters with a verbatim ASCII value, as threading ids,
    addresses and RFC 2047-encoded subjects do; any other email goes through
    ``build_message`` itself.
    """
    headers = [
        ("From", email.from_address),
        ("To", email.recipient),
        ("Subject", _header_value(email.subject)),
        ("Date", formatdate(usegmt=True)),
    ]
    headers.extend((name, _header_value(value)) for name, value in email.headers.items())
    message_id = next((v for n, v in headers if n.lower() == "message-id"), None)
    if message_id is None:
        domain = email.from_address.rpartition("@")[2] or None
        message_id = make_msgid(domain=domain)
        headers.append(("Message-ID", message_id))
    if not all(
        len(name) + 2 + len(value) <= _MAX_LINE and _VERBATIM_VALUE.match(value)
        for name, value in headers
    ):
        message = build_message(email)
        return message.as_bytes(policy=_WIRE), str(message["Message-ID"])
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    text_headers, text_body = _text_part("plain", email.body_text)
    if email.body_html is None:  # the text part is the message: its headers come first
        return (text_headers + lines + "\r\n" + text_body).encode("ascii"), message_id
    text = text_headers + "\r\n" + text_body
    html = "\r\n".join(_text_part("html", email.body_html))
    boundary = _boundary(text + "\r\n" + html)
    top = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'
    parts = f"--{boundary}\r\n{text}\r\n--{boundary}\r\n{html}\r\n--{boundary}--\r\n"
    return (top + lines + "\r\n" + parts).encode("ascii"), message_id


def _text_part(subtype: str, content: str) -> tuple[str, str]:
    """A text part's headers and QP body, line ends as the compat32 generator writes them."""
    return _TEXT_PART.format(subtype), "\r\n".join(_LINE_ENDS.split(_UTF8.body_encode(content)))


def _boundary(text: str) -> str:
    """A multipart boundary in the email package's format that no line of ``text`` uses."""
    boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
    candidate, counter = boundary, 0
    while re.search(f"^--{re.escape(candidate)}(--)?$", text, re.MULTILINE):
        candidate, counter = f"{boundary}.{counter}", counter + 1
    return candidate


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


def _secret(reference: object, key: str) -> str:
    """Resolve a secret reference now (a rotated file is read again); never kept.

    Raises:
        AdapterFailureError: ``secret_unavailable``, naming the key, never the value.
    """
    try:
        return resolve_secret(reference)
    except SecretError as exc:
        raise AdapterFailureError("secret_unavailable", key) from exc


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
