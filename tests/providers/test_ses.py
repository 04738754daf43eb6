"""The SES provider (boto3, SES v2) against moto's server mode and the local SES v2 server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email import message_from_bytes
from typing import Any

import pytest

from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    OutboundEmail,
    PermanentDeliveryError,
)
from streams.providers.ses import SesConfig, SesProvider
from tests.providers.conftest import MotoSes, email_fields
from tests.providers.ses_api import SesApi


def provider(url: str, secret: dict[str, str], **config: Any) -> SesProvider:
    return SesProvider(
        SesConfig.from_adapter_config(
            {
                "region": MotoSes.region,
                "access_key_id": MotoSes.access_key_id,
                "secret_access_key": secret,
                "endpoint_url": url,
                **config,
            }
        )
    )


def send(p: SesProvider, **fields: Any) -> str:
    async def run() -> str:
        try:
            return await p.send(OutboundEmail(**email_fields(**fields)))
        finally:
            await p.close()

    return asyncio.run(run())


def test_sends_our_raw_mime_through_moto(
    moto_ses: MotoSes, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    moto_ses.verify_domain("example.com")
    provider_id = send(provider(moto_ses.url, secret_ref(MotoSes.secret_access_key)))
    assert provider_id
    (raw,) = moto_ses.sent_raw()
    received = message_from_bytes(raw)
    assert received["Message-ID"] == "<second@example.com>"
    assert received["In-Reply-To"] == "<first@example.com>"
    assert received["References"] == "<first@example.com>"
    assert received["List-Unsubscribe"] == "<mailto:unsub@example.com>"
    assert received["From"] == '"Jane Doe" <jane@example.com>'


def test_unverified_sender_is_an_adapter_failure(
    moto_ses: MotoSes, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(moto_ses.url, secret_ref(MotoSes.secret_access_key)))
    assert (caught.value.reason, caught.value.detail) == (
        "identity_not_verified",
        "HTTP 400 MessageRejected",
    )
    assert "jane@" not in str(caught.value)
    assert moto_ses.sent_raw() == []


def test_missing_secret_is_secret_unavailable(moto_ses: MotoSes) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(moto_ses.url, {"secret": "env:DRIPDROP_TEST_NO_SUCH_VARIABLE"}))
    assert caught.value.reason == "secret_unavailable"


@pytest.mark.parametrize(
    ("code", "status", "kind", "reason"),
    [
        ("TooManyRequestsException", 429, AdapterFailureError, "rate_limited"),
        ("LimitExceededException", 400, AdapterFailureError, "rate_limited"),
        ("AccountSuspendedException", 400, AdapterFailureError, "account_refused"),
        ("SendingPausedException", 400, AdapterFailureError, "account_refused"),
        ("MailFromDomainNotVerifiedException", 400, AdapterFailureError, "account_refused"),
        ("NotFoundException", 404, AdapterFailureError, "account_refused"),
        ("MessageRejected", 400, PermanentDeliveryError, "request_rejected"),
        ("BadRequestException", 400, PermanentDeliveryError, "request_rejected"),
        ("InternalFailure", 500, AdapterFailureError, "provider_unavailable"),
        ("ExpiredTokenException", 400, AdapterFailureError, "auth_rejected"),
    ],
)
def test_documented_errors_map_onto_the_failure_classes(
    ses_api: SesApi,
    secret_ref: Callable[[str], dict[str, str]],
    code: str,
    status: int,
    kind: type[Exception],
    reason: str,
) -> None:
    ses_api.fail_with(code, "Message contains a virus" if code == "MessageRejected" else "", status)
    with pytest.raises(kind) as caught:
        send(provider(ses_api.url, secret_ref("secret")))
    assert type(caught.value) is kind
    assert getattr(caught.value, "reason", None) == reason
    assert ses_api.requests == 1  # botocore did not retry on its own
    assert ses_api.sent == []


def test_no_answer_after_the_request_is_ambiguous_and_not_retried(
    ses_api: SesApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    ses_api.stall_next(3)
    with pytest.raises(AmbiguousDeliveryError) as caught:
        send(provider(ses_api.url, secret_ref("secret"), timeout=0.5))
    assert caught.value.reason == "timeout_after_request"
    assert ses_api.requests == 1


def test_local_server_accepts_the_same_request_as_moto(
    ses_api: SesApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    provider_id = send(provider(ses_api.url, secret_ref("secret")))
    (stored,) = ses_api.sent
    assert stored.message_id == provider_id
    assert stored.message["Message-ID"] == "<second@example.com>"


def test_unreachable_endpoint_is_an_adapter_failure(
    secret_ref: Callable[[str], dict[str, str]],
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(f"http://127.0.0.1:{port}", secret_ref("secret"), timeout=2))
    assert caught.value.reason == "connect_failed"
