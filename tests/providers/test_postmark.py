"""The Postmark provider against the local Postmark API (tests/providers/postmark_api.py)."""

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
    RecipientRejectedError,
)
from streams.providers.postmark import PostmarkConfig, PostmarkProvider
from tests.providers.conftest import email_fields
from tests.providers.postmark_api import PostmarkApi, postmark_error


def provider(server: PostmarkApi, token: dict[str, str], **config: Any) -> PostmarkProvider:
    return PostmarkProvider(
        PostmarkConfig.from_adapter_config(
            {"server_token": token, "api_base": server.url, **config}
        )
    )


def send(p: PostmarkProvider, **fields: Any) -> str:
    async def run() -> str:
        try:
            return await p.send(OutboundEmail(**email_fields(**fields)))
        finally:
            await p.close()

    return asyncio.run(run())


def test_sends_our_headers_and_returns_the_postmark_message_id(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    provider_id = send(
        provider(postmark, secret_ref(postmark.server_token), message_stream="cold"),
        body_html="<p>Step 1</p>",
    )
    (received,) = postmark.sent
    assert provider_id == received.message_id
    assert received.header("Message-ID") == "<second@example.com>"
    assert received.header("In-Reply-To") == "<first@example.com>"
    assert received.header("References") == "<first@example.com>"
    assert received.header("List-Unsubscribe") == "<mailto:unsub@example.com>"
    assert received.header("Reply-To") is None  # in its own field
    body = received.body
    assert body["ReplyTo"] == "replies@example.com"
    assert body["From"] == '"Jane Doe" <jane@example.com>'
    assert (body["To"], body["Subject"]) == ("prospect@example.org", "Re: Hello")
    assert (body["TextBody"], body["HtmlBody"]) == ("Step 1", "<p>Step 1</p>")
    assert body["MessageStream"] == "cold"


def test_a_message_id_is_made_when_the_command_has_none(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    send(provider(postmark, secret_ref(postmark.server_token)), headers={})
    (received,) = postmark.sent
    assert (received.header("Message-ID") or "").endswith("@example.com>")


def test_inactive_recipient_is_a_bounce(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(RecipientRejectedError) as caught:
        send(provider(postmark, secret_ref(postmark.server_token)), recipient="gone@example.org")
    assert caught.value.reason == "inactive_recipient"
    assert "gone@" not in str(caught.value)


def test_invalid_to_is_a_bounce(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(RecipientRejectedError) as caught:
        send(provider(postmark, secret_ref(postmark.server_token)), recipient="not-an-address")
    assert caught.value.reason == "invalid_recipient"


def test_wrong_token_is_an_adapter_failure(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(postmark, secret_ref("wrong-token")))
    assert caught.value.reason == "account_refused"
    assert caught.value.detail == "HTTP 401 ErrorCode 10"
    assert "wrong-token" not in str(caught.value)


def test_unknown_sender_signature_is_an_adapter_failure(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    with pytest.raises(AdapterFailureError) as caught:
        send(provider(postmark, secret_ref(postmark.server_token)), from_address="x@other.test")
    assert caught.value.detail == "HTTP 422 ErrorCode 400"


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "reason", "retry_after"),
    [
        (
            422,
            postmark_error(300, "Invalid 'Subject'"),
            {},
            PermanentDeliveryError,
            "request_rejected",
            None,
        ),
        (
            422,
            postmark_error(405, "Not allowed to send"),
            {},
            AdapterFailureError,
            "account_refused",
            None,
        ),
        (
            422,
            postmark_error(412, "Account is pending"),
            {},
            AdapterFailureError,
            "account_refused",
            None,
        ),
        (
            422,
            postmark_error(413, "Account may not send"),
            {},
            AdapterFailureError,
            "account_refused",
            None,
        ),
        (
            429,
            postmark_error(429, "Rate limit exceeded"),
            {"Retry-After": "30"},
            AdapterFailureError,
            "rate_limited",
            30.0,
        ),
        (
            500,
            postmark_error(0, "Internal server error"),
            {},
            AdapterFailureError,
            "provider_unavailable",
            None,
        ),
        (503, "<html>maintenance</html>", {}, AdapterFailureError, "provider_unavailable", None),
    ],
)
def test_documented_errors_map_onto_the_failure_classes(
    postmark: PostmarkApi,
    secret_ref: Callable[[str], dict[str, str]],
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: type[Exception],
    reason: str,
    retry_after: float | None,
) -> None:
    postmark.fail_next(status, body, headers)
    with pytest.raises(kind) as caught:
        send(provider(postmark, secret_ref(postmark.server_token)))
    error = caught.value
    assert type(error) is kind
    assert getattr(error, "reason", None) == reason
    assert getattr(error, "retry_after", None) == retry_after
    assert postmark.sent == []


def test_no_answer_after_the_request_is_ambiguous(
    postmark: PostmarkApi, secret_ref: Callable[[str], dict[str, str]]
) -> None:
    postmark.stall_next(3)
    with pytest.raises(AmbiguousDeliveryError):
        send(provider(postmark, secret_ref(postmark.server_token), timeout=0.5))
