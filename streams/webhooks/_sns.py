"""Amazon SNS message authentication: canonical strings, signatures, signing certificates.

Knows SNS only; what an SES notification inside a message means is ``_ses``'s business.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from streams.webhooks._errors import MalformedError, UnauthorizedError, UnavailableError

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


def url_allowed(url: object, pattern: re.Pattern[str]) -> bool:
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


async def verify_sns_message(
    message: Mapping[str, Any],
    topic_arns: set[str],
    *,
    certificates: SnsCertificates,
    url_pattern: re.Pattern[str],
) -> None:
    """Check that ``message`` comes from one of ``topic_arns`` and SNS signed it.

    The cheap checks come first, so a malformed or foreign message fetches no certificate.

    Raises:
        MalformedError: see ``sns_string_to_sign``.
        UnauthorizedError: another topic, a certificate URL off the pattern, a bad signature.
        UnavailableError: the certificate host could not be reached.
    """
    sns_string_to_sign(message)  # 400 on a malformed message, before any fetch
    if message.get("TopicArn") not in topic_arns:
        raise UnauthorizedError("unexpected TopicArn")
    cert_url = message.get("SigningCertURL")
    if not url_allowed(cert_url, url_pattern):
        raise UnauthorizedError("SigningCertURL not allowed")
    assert isinstance(cert_url, str)
    if message.get("SignatureVersion") not in ("1", "2"):
        raise UnauthorizedError("unsupported SignatureVersion")
    verify_sns_signature(message, await certificates.get(cert_url))


async def confirm_subscription(
    message: Mapping[str, Any], *, http: httpx.AsyncClient, url_pattern: re.Pattern[str]
) -> None:
    """GET the ``SubscribeURL`` of a verified ``SubscriptionConfirmation``.

    Raises:
        UnauthorizedError: the URL is off the allowed pattern.
        UnavailableError: SNS could not be reached or did not answer 200 (SNS retries).
    """
    subscribe = message.get("SubscribeURL")
    if not url_allowed(subscribe, url_pattern):
        raise UnauthorizedError("SubscribeURL not allowed")
    assert isinstance(subscribe, str)
    try:
        answer = await http.get(subscribe)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"confirming: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise UnavailableError(f"confirming: HTTP {answer.status_code}")
