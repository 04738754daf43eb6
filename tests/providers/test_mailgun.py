"""The Mailgun provider against the local Mailgun API (tests/providers/mailgun_api.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from streams.providers.base import (
    AdapterFailureError,
    AmbiguousDeliveryError,
    OutboundEmail,
    PermanentDeliveryError,
)
from streams.providers.mailgun import MailgunConfig, MailgunProvider
from tests.providers.conftest import email_fields
from tests.providers.mailgun_api import MailgunApi


def provider(server: MailgunApi, key: dict[str, str], **config: Any) -> MailgunProvider:
    return MailgunProvider(
        MailgunConfig.from_adapter_config(
            {"domain": "mg.example.com", "api_key": key, "api_base": server.url, **config}
        )
    )


def send(p: MailgunProvider, **fields: Any) -> str:
    async def run() -> str:
        try:
            return await p.send(OutboundEmail(**email_fields(**fields)))
        finally:
            await p.close()

    return asyncio.run(run())


def test_sends_our_mime_and_returns_the_message_id(
    mailgun: MailgunApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    provider_id = send(provider(mailgun, secret_ref(mailgun.api_key)))
    assert provider_id == "<second@example.com>"
    (received,) = mailgun.sent
    assert received.to == "prospect@example.org"
    assert received.header("Message-ID") == "<second@example.com>"
    assert received.header("In-Reply-To") == "<first@example.com>"
    assert received.header("References") == "<first@example.com>"
    assert received.header("List-Unsubscribe") == "<mailto:unsub@example.com>"
    assert received.header("From") == '"Jane Doe" <jane@example.com>'
    assert received.header("Reply-To") == "replies@example.com"


def test_wrong_key_is_an_adapter_failure(
    mailgun: MailgunApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(mailgun, secret_ref("key-wrong")))
    assert caught.value.reason == "auth_rejected"
    assert "key-wrong" not in str(caught.value)
    assert mailgun.sent == []


def test_rotated_key_file_is_read_on_the_next_send(
    mailgun: MailgunApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    ref = secret_ref("key-old")
    p = provider(mailgun, ref)

    async def run() -> tuple[BaseException | None, str]:
        first: BaseException | None = None
        try:
            await p.send(OutboundEmail(**email_fields()))
        except AdapterFailureError as exc:
            first = exc
        path = ref["secret"].removeprefix("file:")
        with open(path, "w") as handle:
            handle.write(mailgun.api_key)
        try:
            return first, await p.send(OutboundEmail(**email_fields()))
        finally:
            await p.close()

    first, second = asyncio.run(run())
    assert isinstance(first, AdapterFailureError)
    assert second == "<second@example.com>"


def test_missing_secret_is_secret_unavailable(mailgun: MailgunApi) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(mailgun, {"secret": "env:DRIPDROP_TEST_NO_SUCH_VARIABLE"}))
    assert caught.value.reason == "secret_unavailable"


def test_unknown_domain_is_an_adapter_failure(
    mailgun: MailgunApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(mailgun, secret_ref(mailgun.api_key), domain="other.example.com"))
    assert (caught.value.reason, caught.value.detail) == ("account_refused", "HTTP 404")


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "reason", "retry_after"),
    [
        (
            400,
            {"message": "'from' parameter is not a valid address"},
            {},
            PermanentDeliveryError,
            "request_rejected",
            None,
        ),
        (402, {"message": "Request failed"}, {}, AdapterFailureError, "account_refused", None),
        (403, {"message": "Forbidden"}, {}, AdapterFailureError, "forbidden", None),
        (
            413,
            {"message": "Request Entity Too Large"},
            {},
            PermanentDeliveryError,
            "request_rejected",
            None,
        ),
        (
            429,
            {"message": "Too many requests"},
            {"Retry-After": "7"},
            AdapterFailureError,
            "rate_limited",
            7.0,
        ),
        (
            500,
            {"message": "Internal Server Error"},
            {},
            AdapterFailureError,
            "provider_unavailable",
            None,
        ),
        (
            503,
            "Service Unavailable",
            {"Retry-After": "120"},
            AdapterFailureError,
            "provider_unavailable",
            120.0,
        ),
    ],
)
def test_documented_errors_map_onto_the_failure_classes(
    mailgun: MailgunApi,
    secret_ref: Callable[[str], dict[str, str]],
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: type[Exception],
    reason: str,
    retry_after: float | None,
) -> None:
    mailgun.fail_next(status, body, headers)
    with pytest.raises(kind) as caught:
        send(provider(mailgun, secret_ref(mailgun.api_key)))
    error = caught.value
    assert type(error) is kind
    assert getattr(error, "reason", None) == reason
    assert getattr(error, "retry_after", None) == retry_after
    assert "example.org" not in str(error)  # no address in the error text
    assert mailgun.sent == []


def test_no_answer_after_the_request_is_ambiguous(
    mailgun: MailgunApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    mailgun.stall_next(3)
    with pytest.raises(AmbiguousDeliveryError) as caught:
        send(provider(mailgun, secret_ref(mailgun.api_key), timeout=0.5))
    assert caught.value.reason == "timeout_after_request"


def test_unreachable_api_is_an_adapter_failure(secret_ref: Callable[[str], dict[str, str]]) -> None:
    server = MailgunApi()
    server.port = _closed_port()
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(server, secret_ref("k")))
    assert caught.value.reason == "connect_failed"


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
