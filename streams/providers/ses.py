"""The Amazon SES provider: SES v2 ``SendEmail`` with ``Content.Raw`` through boto3.

The raw content is ``render_message``'s bytes, so every header is ours. boto3 is
synchronous: each send runs in a worker thread (``asyncio.to_thread``); the client is
thread-safe and keeps its own connection pool. botocore's own retries are off
(``total_max_attempts=1``): a retried read timeout could send the message twice, and the
sender already retries what was certainly not sent.

Credentials by reference: ``secret_access_key`` (and ``session_token``) are resolved on
every send; a rotated secret builds a new client, so rotation needs no restart.

Adapter config::

    {"region": "eu-west-1", "access_key_id": "AKIA…",
     "secret_access_key": {"secret": "env:SES_SECRET"}, "session_token": {…}?,
     "configuration_set": "…"?, "endpoint_url": "…"? (tests), "timeout": 30}
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from streams.providers import httpapi
from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    OutboundEmail,
    PermanentDeliveryError,
    ProviderError,
    check_headers,
)
from streams.providers.smtp import render_message

# https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html#API_SendEmail_Errors
# and the common errors of every AWS API (CommonErrors.html).
_RATE_CODES = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "ThrottlingException", "Throttling"}
)
_ACCOUNT_CODES = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # the configuration set named in the config does not exist
        "AccessDeniedException",
        "AccessDenied",
    }
)
_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)

# SES: "Email address is not verified. The following identities failed the check…";
# moto's server mode: "Did not have authority to send from email …".
_UNVERIFIED = re.compile(r"not verified|authority to send from", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SesConfig:
    """One SES sending account and region (an adapter's ``config``)."""

    region: str
    access_key_id: str
    secret_access_key: object
    session_token: object | None = None
    configuration_set: str | None = None
    endpoint_url: str | None = None
    timeout_seconds: float = httpapi.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> SesConfig:
        """Read the adapter's config.

        Raises:
            AdapterFailureError: ``invalid_config`` (a missing key, a wrong type): fixing the
                adapter fixes every held send, so it is deferred, never failed.
        """
        try:
            return cls(
                region=str(httpapi.config_value(config, "region")),
                access_key_id=str(httpapi.config_value(config, "access_key_id")),
                secret_access_key=httpapi.config_value(config, "secret_access_key"),
                session_token=config.get("session_token"),
                configuration_set=config.get("configuration_set"),
                endpoint_url=config.get("endpoint_url"),
                timeout_seconds=float(config.get("timeout", httpapi.DEFAULT_TIMEOUT_SECONDS)),
            )
        except (TypeError, ValueError) as exc:
            raise AdapterFailureError("invalid_config", type(exc).__name__) from exc

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.region,
            self.endpoint_url,
            self.access_key_id,
            httpapi.reference_key(self.secret_access_key),
            self.configuration_set,
        )


def client_error(exc: botocore.exceptions.ClientError) -> ProviderError:
    """Map an SES error answer by its error code (never its message: it names addresses)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    detail = f"HTTP {status} {httpapi.code_of(code or '?')}"
    if code in _RATE_CODES or status == 429:
        return AdapterFailureError("rate_limited", detail)
    if code in _AUTH_CODES:
        return AdapterFailureError("auth_rejected", detail)
    if code in _ACCOUNT_CODES:
        return AdapterFailureError("account_refused", detail)
    if code == "MessageRejected" and _UNVERIFIED.search(str(error.get("Message", ""))):
        # The sender identity (or, in the sandbox, the recipient) is not verified: every
        # send of this account fails alike until it is, so defer and let the breaker open.
        return AdapterFailureError("identity_not_verified", detail)
    if status >= 500 or status in (401, 403):
        return AdapterFailureError("provider_unavailable" if status >= 500 else "forbidden", detail)
    return PermanentDeliveryError("request_rejected", detail)


def transport_error(exc: botocore.exceptions.BotoCoreError) -> ProviderError:
    """Classify a botocore failure that got no answer, by whether the request went out."""
    name = type(exc).__name__
    if isinstance(
        exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.EndpointConnectionError
    ):
        return AdapterFailureError("connect_failed", name)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return AmbiguousDeliveryError("timeout_after_request", name)
    if isinstance(exc, botocore.exceptions.ConnectionClosedError):
        return AmbiguousDeliveryError("disconnected_after_request", name)
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return AdapterFailureError("secret_unavailable", name)
    return AmbiguousDeliveryError("transport_error", name)


class SesProvider:
    """Send through one SES account with the SES v2 API."""

    def __init__(self, config: SesConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client: Any = None
        self._credentials: tuple[str, str | None] | None = None

    def _client_for(self, secret_key: str, session_token: str | None) -> Any:
        """The boto3 client for these credentials (a new one when a secret was rotated)."""
        with self._lock:
            if self._client is None or self._credentials != (secret_key, session_token):
                config = self.config
                self._client = boto3.session.Session().client(
                    "sesv2",
                    region_name=config.region,
                    endpoint_url=config.endpoint_url,
                    aws_access_key_id=config.access_key_id,
                    aws_secret_access_key=secret_key,
                    aws_session_token=session_token,
                    config=botocore.config.Config(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=config.timeout_seconds,
                        read_timeout=config.timeout_seconds,
                        max_pool_connections=httpapi.DEFAULT_CONNECTIONS,
                    ),
                )
                self._credentials = (secret_key, session_token)
            return self._client

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email``; return SES's ``MessageId``.

        Raises:
            HeaderInjectionError: before anything is sent.
            AdapterFailureError: credentials unavailable or refused, throttled, account
                paused or suspended, identity not verified, 5xx, unreachable.
            AmbiguousDeliveryError: no answer after the request was sent.
            PermanentDeliveryError: the message refused (``MessageRejected``, bad request).
        """
        check_headers(email)
        raw, _ = render_message(email)
        secret_key = httpapi.secret(self.config.secret_access_key, "secret_access_key")
        token = (
            httpapi.secret(self.config.session_token, "session_token")
            if self.config.session_token is not None
            else None
        )
        request: dict[str, Any] = {
            "FromEmailAddress": email.from_address,
            "Destination": {"ToAddresses": [email.recipient]},
            "Content": {"Raw": {"Data": raw}},
        }
        if self.config.configuration_set:
            request["ConfigurationSetName"] = self.config.configuration_set
        try:
            answer = await asyncio.to_thread(self._send, secret_key, token, request)
        except botocore.exceptions.ClientError as exc:
            raise client_error(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise transport_error(exc) from exc
        return str(answer["MessageId"])

    def _send(self, secret_key: str, token: str | None, request: dict[str, Any]) -> Any:
        return self._client_for(secret_key, token).send_email(**request)

    async def close(self) -> None:
        """Close the client's connections."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
