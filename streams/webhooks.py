"""``dripdrop webhooks serve``: ESP event webhooks onto ``health-signals`` (SPEC §8).

``POST /webhooks/{provider}/{tenant_key}/{adapter_id}`` with ``provider`` one of ``ses``
(Amazon SES through an SNS HTTP(S) subscription), ``mailgun`` or ``postmark``. The adapter
row (``dripdrop.channel_adapters``, read per request) must belong to the tenant and say
how its webhooks are authenticated, in its ``config``:

* ``ses``: ``webhook_topic_arn`` (one ARN or a list). The SNS message signature is
  verified against the signing certificate (SignatureVersion 1 = SHA1withRSA, 2 =
  SHA256withRSA, the canonical strings of AWS's "Verifying the signatures of Amazon SNS
  messages"); the certificate URL must match ``sns_url_pattern`` (https on an
  ``sns.<region>.amazonaws.com`` host by default) and fetched certificates are cached. A
  ``SubscriptionConfirmation`` is confirmed by GETting its ``SubscribeURL`` (same pattern),
  only once its signature is verified.
* ``mailgun``: ``webhook_secret``, the webhook signing key (a secret reference):
  ``signature.signature`` must be HMAC-SHA256(key, timestamp + token); a timestamp more
  than ``max_age_seconds`` away from now, or a token seen before, is refused.
* ``postmark``: ``webhook_username`` and ``webhook_secret`` (a reference to the password):
  the HTTP Basic credentials put in the webhook URL (``https://user:pass@host/...``).

Secrets are resolved per request (a rotated file needs no restart) and never logged. A
request that fails authentication is answered 401, a malformed one 400, an unknown
adapter 404; none produces anything. Each provider event becomes one ``delivery``,
``bounce`` (``hard``/``soft``), ``complaint`` or ``unsubscribe`` record naming the send by
``provider_message_id`` (and ``message_id`` when the event carries our RFC Message-ID),
with the provider's event id as ``event_id``; the worker resolves it to the step execution
(``streams.processor.health_signals.on_health_signal``). The answer is 200 only once Kafka has
acknowledged every record; 503 (Kafka, PostgreSQL or a secret unavailable) makes the
provider retry, and a retried event keeps its ``event_id``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dripdrop_core.correlation import normalize_message_id
from streams.codecs import Codecs
from streams.kafka import KafkaPublisher, Publisher, PublishError
from streams.secrets import SecretError, resolve_secret
from streams.settings import Settings

__all__ = [
    "PROVIDERS",
    "SNS_URL_PATTERN",
    "AdapterStore",
    "MalformedError",
    "PostgresAdapters",
    "SnsCertificates",
    "UnauthorizedError",
    "WebhookOptions",
    "create_app",
    "mailgun_signals",
    "postmark_signals",
    "serve",
    "ses_signals",
    "sns_string_to_sign",
    "verify_basic_auth",
    "verify_mailgun",
    "verify_sns_signature",
]

log = logging.getLogger("dripdrop.webhooks")

PROVIDERS = ("ses", "mailgun", "postmark")

SNS_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
"""Where SigningCertURL and SubscribeURL must point: https on an SNS endpoint host."""

MAX_BODY_BYTES = 1 << 20

Signal = dict[str, Any]


class UnauthorizedError(Exception):
    """Authentication failed (401). The message says why, never with a secret in it."""


class MalformedError(Exception):
    """Not a request of the provider's documented shape (400)."""


class UnavailableError(Exception):
    """A dependency (secret, certificate host, PostgreSQL) is unavailable now (503)."""


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Receiver settings (``dripdrop webhooks serve`` options)."""

    host: str = "127.0.0.1"
    port: int = 8081
    sns_url_pattern: str = SNS_URL_PATTERN
    max_age_seconds: float = 900.0
    """Mailgun: how far the signed timestamp may be from now (either way)."""
    http_timeout_seconds: float = 10.0
    """Fetching an SNS certificate, confirming a subscription."""
    cert_cache_size: int = 64
    recent_size: int = 100_000
    """How many Mailgun tokens and produced event ids are remembered (per process)."""


# ---------------------------------------------------------------- small helpers


class _Recent:
    """A bounded set with expiry: Mailgun tokens seen and event ids already produced."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._items: OrderedDict[str, float] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._items:
            key, at = next(iter(self._items.items()))
            if now - at <= self.ttl and len(self._items) <= self.size:
                break
            del self._items[key]

    def __contains__(self, key: object) -> bool:
        self._expire(time.monotonic())
        return key in self._items

    def add(self, key: str) -> None:
        self._items[key] = time.monotonic()
        self._items.move_to_end(key)
        self._expire(time.monotonic())

    def discard(self, key: str) -> None:
        self._items.pop(key, None)


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _when(value: object) -> datetime | None:
    """An ISO-8601 string or a unix timestamp (seconds) as an aware datetime."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _signal(
    kind: Literal["delivery", "bounce", "complaint", "unsubscribe"],
    event_id: str,
    *,
    source: str,
    provider_message_id: str | None,
    recipient: str | None,
    occurred_at: datetime | None,
    message_id: str | None = None,
    bounce_type: Literal["hard", "soft"] | None = None,
    reason: str | None = None,
) -> Signal:
    """One health-signal's provider-event fields (``tenant_key``/``adapter_id`` come later)."""
    return {
        "event_id": event_id,
        "occurred_at": occurred_at or datetime.now(UTC),
        "kind": kind,
        "provider_message_id": normalize_message_id(provider_message_id),
        "message_id": normalize_message_id(message_id),
        "recipient": recipient,
        "source": source,
        "bounce_type": bounce_type,
        "reason": (reason or None) and str(reason)[:1000],
    }


# ---------------------------------------------------------------- Amazon SNS / SES

_SNS_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SNS_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string of an SNS message ("Verifying the signatures of Amazon SNS
    messages"): for each field in byte order, its name, a newline, its value, a newline.

    Notification: Message, MessageId, Subject (only if present), Timestamp, TopicArn, Type.
    SubscriptionConfirmation / UnsubscribeConfirmation: Message, MessageId, SubscribeURL,
    Timestamp, Token, TopicArn, Type.

    Raises:
        MalformedError: an unknown ``Type`` or a required field missing or not a string.
    """
    kind = message.get("Type")
    if kind not in _SNS_TYPES:
        raise MalformedError(f"unknown SNS message Type {kind!r}")
    fields = _SNS_NOTIFICATION_FIELDS if kind == "Notification" else _SNS_CONFIRMATION_FIELDS
    parts: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise MalformedError(f"SNS field {name} missing")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def verify_sns_signature(message: Mapping[str, Any], certificate: x509.Certificate) -> None:
    """Check ``Signature`` over the canonical string with the certificate's RSA key.

    Raises:
        UnauthorizedError: bad SignatureVersion, undecodable or wrong signature, a key
            that is not RSA, or a certificate outside its validity period.
        MalformedError: see ``sns_string_to_sign``.
    """
    version = message.get("SignatureVersion")
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise UnauthorizedError(f"unsupported SignatureVersion {version!r}")
    try:
        signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise UnauthorizedError("signature is not base64") from None
    if not signature:
        raise UnauthorizedError("no signature")
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise UnauthorizedError("signing certificate outside its validity period")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise UnauthorizedError("signing certificate key is not RSA")
    try:
        key.verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise UnauthorizedError("SNS signature does not verify") from None


def _url_allowed(url: object, pattern: re.Pattern[str]) -> bool:
    return isinstance(url, str) and pattern.match(url) is not None and "@" not in url


class SnsCertificates:
    """Signing certificates by URL, fetched once and kept (up to ``size``, LRU)."""

    def __init__(self, http: httpx.AsyncClient, size: int = 64) -> None:
        self.http = http
        self.size = size
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, url: str) -> x509.Certificate:
        """The certificate at ``url`` (already checked against the allowed pattern).

        Raises:
            UnauthorizedError: the host answered but with no PEM certificate.
            UnavailableError: the host could not be reached (the provider will retry).
        """
        async with self._lock:
            cached = self._certs.get(url)
            if cached is not None:
                self._certs.move_to_end(url)
                return cached
            try:
                response = await self.http.get(url)
            except httpx.HTTPError as exc:
                raise UnavailableError(f"signing certificate: {type(exc).__name__}") from None
            self.fetches += 1
            if response.status_code != 200:
                raise UnauthorizedError(f"signing certificate: HTTP {response.status_code}")
            try:
                cert = x509.load_pem_x509_certificate(response.content)
            except ValueError:
                raise UnauthorizedError("signing certificate is not a PEM certificate") from None
            self._certs[url] = cert
            while len(self._certs) > self.size:
                self._certs.popitem(last=False)
            return cert


def _topic_arns(config: Mapping[str, Any]) -> set[str]:
    value = config.get("webhook_topic_arn")
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


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
    provider_id = _text(mail.get("messageId")) if isinstance(mail, Mapping) else None
    if provider_id is None or not isinstance(mail, Mapping):
        raise MalformedError("SES notification without mail.messageId")
    headers = mail.get("commonHeaders")
    rfc_id = _text(headers.get("messageId")) if isinstance(headers, Mapping) else None
    detail = notification.get(str(kind).lower())
    if not isinstance(detail, Mapping):
        raise MalformedError(f"SES {kind} notification without {str(kind).lower()}")
    occurred = _when(detail.get("timestamp"))
    base = _text(detail.get("feedbackId")) or sns_message_id
    out: list[Signal] = []
    if kind == "Delivery":
        recipients: list[str | None] = [
            r for r in detail.get("recipients") or [] if isinstance(r, str)
        ]
        for r in recipients or [None]:
            out.append(
                _signal(
                    "delivery",
                    f"ses:{base}" + (f":{r}" if r and len(recipients) > 1 else ""),
                    source="ses",
                    provider_message_id=provider_id,
                    message_id=rfc_id,
                    recipient=r,
                    occurred_at=occurred,
                    reason=_text(detail.get("smtpResponse")),
                )
            )
        return out
    listed = detail.get("bouncedRecipients" if kind == "Bounce" else "complainedRecipients")
    entries = [e for e in listed or [] if isinstance(e, Mapping)]
    for entry in entries or [{}]:
        recipient = _text(entry.get("emailAddress"))
        event_id = f"ses:{base}" + (f":{recipient}" if recipient and len(entries) > 1 else "")
        if kind == "Complaint":
            out.append(
                _signal(
                    "complaint",
                    event_id,
                    source="ses",
                    provider_message_id=provider_id,
                    message_id=rfc_id,
                    recipient=recipient,
                    occurred_at=occurred,
                    reason=_text(detail.get("complaintFeedbackType")),
                )
            )
        else:
            out.append(
                _signal(
                    "bounce",
                    event_id,
                    source="ses",
                    provider_message_id=provider_id,
                    message_id=rfc_id,
                    recipient=recipient,
                    occurred_at=occurred,
                    bounce_type="hard" if detail.get("bounceType") == "Permanent" else "soft",
                    reason=_text(entry.get("diagnosticCode")) or _text(detail.get("bounceSubType")),
                )
            )
    return out


# ---------------------------------------------------------------- Mailgun


def verify_mailgun(
    signing_key: str,
    signature: object,
    *,
    now: float,
    max_age_seconds: float,
    seen: Callable[[str], bool] | None = None,
) -> str:
    """Check Mailgun's ``signature`` object; return its token (to remember it).

    ``signature`` = HMAC-SHA256(signing key, timestamp + token), hex. ``seen(token)``
    says whether the token was used before (a replay).

    Raises:
        MalformedError: no ``signature`` object of strings.
        UnauthorizedError: wrong signature, a stale or future timestamp, a replayed token.
    """
    if not isinstance(signature, Mapping):
        raise MalformedError("no signature object")
    timestamp, token, digest = (
        signature.get("timestamp"),
        signature.get("token"),
        signature.get("signature"),
    )
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not all(isinstance(v, str) and v for v in (timestamp, token, digest)):
        raise MalformedError("signature needs timestamp, token and signature")
    assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(digest, str)
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, digest.lower()):
        raise UnauthorizedError("Mailgun signature does not verify")
    try:
        age = abs(now - float(timestamp))
    except ValueError:
        raise UnauthorizedError("Mailgun timestamp is not a number") from None
    if not age <= max_age_seconds:
        raise UnauthorizedError("Mailgun timestamp is stale")
    if seen is not None and seen(token):
        raise UnauthorizedError("Mailgun token replayed")
    return token


def mailgun_signals(event_data: Mapping[str, Any]) -> list[Signal]:
    """The record of one Mailgun ``event-data`` (none for opens, clicks, accepts…).

    ``delivered`` → delivery; ``failed`` → bounce (``severity`` permanent → hard,
    temporary → soft); ``complained``; ``unsubscribed``. The message is named by
    ``message.headers.message-id``, which is both Mailgun's id and our Message-ID.

    Raises:
        MalformedError: no event ``id`` or no message id on an event we take.
    """
    event = event_data.get("event")
    kinds = {
        "delivered": "delivery",
        "failed": "bounce",
        "complained": "complaint",
        "unsubscribed": "unsubscribe",
    }
    kind = kinds.get(str(event))
    if kind is None:
        return []
    event_id = _text(event_data.get("id"))
    message = event_data.get("message")
    headers = message.get("headers") if isinstance(message, Mapping) else None
    message_id = _text(headers.get("message-id")) if isinstance(headers, Mapping) else None
    if event_id is None or message_id is None:
        raise MalformedError("Mailgun event without id or message.headers.message-id")
    status = event_data.get("delivery-status")
    reason = None
    if isinstance(status, Mapping):
        reason = _text(status.get("description")) or _text(status.get("message"))
    reason = reason or _text(event_data.get("reason"))
    bounce_type: Literal["hard", "soft"] | None = None
    if kind == "bounce":
        bounce_type = "hard" if event_data.get("severity") == "permanent" else "soft"
    return [
        _signal(
            kind,  # type: ignore[arg-type]
            f"mailgun:{event_id}",
            source="mailgun",
            provider_message_id=message_id,
            message_id=message_id,
            recipient=_text(event_data.get("recipient")),
            occurred_at=_when(event_data.get("timestamp")),
            bounce_type=bounce_type,
            reason=reason,
        )
    ]


# ---------------------------------------------------------------- Postmark

_POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked"})


def verify_basic_auth(authorization: str | None, username: str, password: str) -> None:
    """Check an ``Authorization: Basic`` header against the configured credentials.

    Raises:
        UnauthorizedError: missing, undecodable or wrong.
    """
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise UnauthorizedError("no Basic credentials")
    try:
        user, sep, given = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        raise UnauthorizedError("Basic credentials undecodable") from None
    user_ok = hmac.compare_digest(user.encode(), username.encode())
    password_ok = hmac.compare_digest(given.encode(), password.encode())
    if not (sep and user_ok and password_ok):
        raise UnauthorizedError("wrong Basic credentials")


def postmark_signals(payload: Mapping[str, Any]) -> list[Signal]:
    """The record of one Postmark webhook (none for opens, clicks, auto-responders…).

    ``Bounce``: ``Type`` HardBounce / BadEmailAddress / ManuallyDeactivated → hard,
    SoftBounce / Transient / DnsError / Blocked → soft, SpamComplaint → complaint,
    Unsubscribe → unsubscribe. ``SpamComplaint`` → complaint. ``Delivery`` → delivery.
    ``SubscriptionChange`` with ``SuppressSending`` and reason ``ManualSuppression`` (the
    recipient unsubscribed) → unsubscribe; its HardBounce / SpamComplaint reasons repeat a
    Bounce webhook and give none.

    Raises:
        MalformedError: no ``MessageID``, or a bounce without its ``ID``.
    """
    record_type = payload.get("RecordType")
    message_id = _text(payload.get("MessageID"))
    if record_type not in ("Bounce", "SpamComplaint", "Delivery", "SubscriptionChange"):
        return []
    if message_id is None:
        raise MalformedError("Postmark webhook without MessageID")
    if record_type == "Delivery":
        recipient = _text(payload.get("Recipient"))
        return [
            _signal(
                "delivery",
                f"postmark:delivery:{message_id}:{recipient}",
                source="postmark",
                provider_message_id=message_id,
                recipient=recipient,
                occurred_at=_when(payload.get("DeliveredAt")),
                reason=_text(payload.get("Details")),
            )
        ]
    if record_type == "SubscriptionChange":
        recipient = _text(payload.get("Recipient"))
        if not (
            payload.get("SuppressSending") is True
            and payload.get("SuppressionReason") == "ManualSuppression"
        ):
            return []
        changed = _text(payload.get("ChangedAt"))
        return [
            _signal(
                "unsubscribe",
                f"postmark:subscription:{message_id}:{recipient}:{changed}",
                source="postmark",
                provider_message_id=message_id,
                recipient=recipient,
                occurred_at=_when(changed),
                reason="ManualSuppression",
            )
        ]
    bounce_id = payload.get("ID")
    if not isinstance(bounce_id, int | str) or isinstance(bounce_id, bool) or bounce_id == "":
        raise MalformedError("Postmark bounce without ID")
    kind_of = str(payload.get("Type"))
    if record_type == "SpamComplaint" or kind_of == "SpamComplaint":
        kind: Literal["bounce", "complaint", "unsubscribe"] = "complaint"
    elif kind_of == "Unsubscribe":
        kind = "unsubscribe"
    elif kind_of in _POSTMARK_HARD or kind_of in _POSTMARK_SOFT:
        kind = "bounce"
    else:
        return []
    return [
        _signal(
            kind,
            f"postmark:{bounce_id}",
            source="postmark",
            provider_message_id=message_id,
            recipient=_text(payload.get("Email")),
            occurred_at=_when(payload.get("BouncedAt")),
            bounce_type=("hard" if kind_of in _POSTMARK_HARD else "soft")
            if kind == "bounce"
            else None,
            reason=_text(payload.get("Details")) or _text(payload.get("Description")),
        )
    ]


# ---------------------------------------------------------------- adapters


@dataclass(frozen=True, slots=True)
class WebhookAdapter:
    id: str
    tenant_key: str
    provider: str
    config: Mapping[str, Any]


AdapterStore = Callable[[str, str], Awaitable[WebhookAdapter | None]]
"""``(tenant_key, adapter_id)`` → the adapter, or None when it is not that tenant's."""


class PostgresAdapters:
    """Adapters read from ``dripdrop.channel_adapters`` per request (blocking psycopg in a
    thread, a small pool opened on first use)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pool: Any = None

    def _lookup(self, tenant_key: str, adapter_id: str) -> WebhookAdapter | None:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - the receiver's only DB use

        if self._pool is None:
            self._pool = ConnectionPool(self.database_url, min_size=1, max_size=4, open=True)
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT id::text, tenant_key, provider, config FROM dripdrop.channel_adapters"
                " WHERE id = %s AND tenant_key = %s",
                (adapter_id, tenant_key),
            ).fetchone()
        if row is None:
            return None
        return WebhookAdapter(str(row[0]), str(row[1]), str(row[2]), dict(row[3] or {}))

    async def __call__(self, tenant_key: str, adapter_id: str) -> WebhookAdapter | None:
        try:
            return await asyncio.to_thread(self._lookup, tenant_key, adapter_id)
        except Exception as exc:  # noqa: BLE001 - psycopg's errors: answered 503
            raise UnavailableError(f"PostgreSQL: {type(exc).__name__}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


# ---------------------------------------------------------------- the app


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedError("body is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedError("body is not a JSON object")
    return body


def _secret(config: Mapping[str, Any], key: str) -> str:
    try:
        return resolve_secret(config.get(key))
    except SecretError as exc:
        raise UnavailableError(f"{key}: {exc}") from None


def create_app(
    settings: Settings,
    options: WebhookOptions | None = None,
    *,
    publisher: Publisher | None = None,
    adapters: AdapterStore | None = None,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    """The receiver. ``publisher``, ``adapters`` and ``http`` replace the Kafka producer,
    the PostgreSQL lookup and the HTTP client (certificates, subscription confirmation)."""
    opts = options or WebhookOptions()
    codec = Codecs(settings).for_topic("health-signals")
    topic = settings.topic("health-signals")
    url_pattern = re.compile(opts.sns_url_pattern)
    store: PostgresAdapters | None = None
    lookup: AdapterStore
    if adapters is None:
        store = lookup = PostgresAdapters(settings.database_url)
    else:
        lookup = adapters
    client = http or httpx.AsyncClient(timeout=opts.http_timeout_seconds, follow_redirects=False)
    certificates = SnsCertificates(client, opts.cert_cache_size)
    tokens = _Recent(opts.recent_size, 2 * opts.max_age_seconds)
    produced = _Recent(opts.recent_size, 7 * 86400.0)
    holder: dict[str, Publisher] = {}
    produce_lock = asyncio.Lock()

    def producer() -> Publisher:
        if publisher is not None:
            return publisher
        if "p" not in holder:
            holder["p"] = KafkaPublisher(settings)
        return holder["p"]

    async def publish(adapter: WebhookAdapter, signals: Sequence[Signal]) -> int:
        records = [
            {**s, "tenant_key": adapter.tenant_key, "adapter_id": adapter.id}
            for s in signals
            if f"{adapter.tenant_key}\0{s['event_id']}" not in produced
        ]
        if not records:
            return 0
        values = [codec.encode(r) for r in records]

        def send() -> None:
            out = producer()
            for value in values:
                out.produce(topic, key=adapter.tenant_key, value=value)
            out.flush()

        async with produce_lock:
            try:
                await asyncio.to_thread(send)
            except PublishError as exc:
                raise UnavailableError(f"Kafka: {exc}") from None
        for r in records:
            produced.add(f"{adapter.tenant_key}\0{r['event_id']}")
        return len(records)

    async def ses(adapter: WebhookAdapter, request: Request, raw: bytes) -> Response:
        arns = _topic_arns(adapter.config)
        if not arns:
            return PlainTextResponse("webhooks not configured for this adapter", 404)
        message = _json_body(raw)
        kind = message.get("Type")
        sns_string_to_sign(message)  # 400 on a malformed message, before any fetch
        if message.get("TopicArn") not in arns:
            raise UnauthorizedError("unexpected TopicArn")
        cert_url = message.get("SigningCertURL")
        if not _url_allowed(cert_url, url_pattern):
            raise UnauthorizedError("SigningCertURL not allowed")
        assert isinstance(cert_url, str)
        if message.get("SignatureVersion") not in ("1", "2"):
            raise UnauthorizedError("unsupported SignatureVersion")
        verify_sns_signature(message, await certificates.get(cert_url))
        if kind == "SubscriptionConfirmation":
            subscribe = message.get("SubscribeURL")
            if not _url_allowed(subscribe, url_pattern):
                raise UnauthorizedError("SubscribeURL not allowed")
            assert isinstance(subscribe, str)
            try:
                answer = await client.get(subscribe)
            except httpx.HTTPError as exc:
                raise UnavailableError(f"confirming: {type(exc).__name__}") from None
            if answer.status_code != 200:
                raise UnavailableError(f"confirming: HTTP {answer.status_code}")
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
        return JSONResponse({"produced": await publish(adapter, signals)})

    async def mailgun(adapter: WebhookAdapter, request: Request, raw: bytes) -> Response:
        if adapter.config.get("webhook_secret") is None:
            return PlainTextResponse("webhooks not configured for this adapter", 404)
        body = _json_body(raw)
        token = verify_mailgun(
            _secret(adapter.config, "webhook_secret"),
            body.get("signature"),
            now=time.time(),
            max_age_seconds=opts.max_age_seconds,
            seen=lambda t: f"{adapter.id}\0{t}" in tokens,
        )
        event_data = body.get("event-data")
        if not isinstance(event_data, dict):
            raise MalformedError("no event-data object")
        signals = mailgun_signals(event_data)
        tokens.add(f"{adapter.id}\0{token}")
        try:
            return JSONResponse({"produced": await publish(adapter, signals)})
        except UnavailableError:
            tokens.discard(f"{adapter.id}\0{token}")  # the retry of a failed request is no replay
            raise

    async def postmark(adapter: WebhookAdapter, request: Request, raw: bytes) -> Response:
        username = adapter.config.get("webhook_username")
        if adapter.config.get("webhook_secret") is None or not isinstance(username, str):
            return PlainTextResponse("webhooks not configured for this adapter", 404)
        verify_basic_auth(
            request.headers.get("authorization"),
            username,
            _secret(adapter.config, "webhook_secret"),
        )
        signals = postmark_signals(_json_body(raw))
        return JSONResponse({"produced": await publish(adapter, signals)})

    handlers = {"ses": ses, "mailgun": mailgun, "postmark": postmark}

    async def receive(request: Request) -> Response:
        provider = str(request.path_params["provider"])
        tenant_key = str(request.path_params["tenant_key"])
        adapter_id = str(request.path_params["adapter_id"])
        where = f"provider={provider} adapter={adapter_id}"
        handler = handlers.get(provider)
        if handler is None:
            return PlainTextResponse("unknown provider", 404)
        try:
            uuid.UUID(adapter_id)
        except ValueError:
            return PlainTextResponse("unknown adapter", 404)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return PlainTextResponse("body too large", 413)
        try:
            adapter = await lookup(tenant_key, adapter_id)
            if adapter is None or adapter.tenant_key != tenant_key:
                return PlainTextResponse("unknown adapter", 404)
            if str(adapter.config.get("webhook_provider") or adapter.provider) != provider:
                return PlainTextResponse("adapter is not a " + provider + " adapter", 404)
            return await handler(adapter, request, raw)
        except MalformedError as exc:
            log.warning("webhook refused (400) %s: %s", where, exc)
            return PlainTextResponse("malformed request", 400)
        except UnauthorizedError as exc:
            log.warning("webhook refused (401) %s: %s", where, exc)
            return PlainTextResponse("unauthorized", 401)
        except UnavailableError as exc:
            log.error("webhook not taken (503) %s: %s", where, exc)
            return PlainTextResponse("try again later", 503)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if http is None:
                await client.aclose()
            if store is not None:
                store.close()
            if "p" in holder:
                holder["p"].close()

    app = Starlette(
        routes=[
            Route("/webhooks/{provider}/{tenant_key}/{adapter_id}", receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.certificates = certificates
    return app


def serve(settings: Settings, options: WebhookOptions) -> None:
    """Run the receiver until interrupted (``dripdrop webhooks serve``)."""
    import uvicorn  # noqa: PLC0415 - only the webhooks command needs it

    re.compile(options.sns_url_pattern)
    uvicorn.run(create_app(settings, options), host=options.host, port=options.port)
