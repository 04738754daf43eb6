"""The Gmail provider (httpx, OAuth2Token) against the local Gmail API (gmail_api.py)."""

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
from streams.providers.gmail import GmailConfig, GmailProvider
from tests.providers.conftest import email_fields
from tests.providers.gmail_api import GmailApi, gmail_error

Refs = Callable[[str], dict[str, str]]


def provider(server: GmailApi, secret_ref: Refs, **config: Any) -> GmailProvider:
    return GmailProvider(
        GmailConfig.from_adapter_config(
            {
                "client_id": server.tokens.client_id,
                "client_secret": secret_ref(server.tokens.client_secret),
                "refresh_token": secret_ref(server.tokens.refresh_token),
                "token_url": server.token_url,
                "api_base": server.url,
                **config,
            }
        )
    )


def first_step(**overrides: Any) -> OutboundEmail:
    return OutboundEmail(
        **email_fields(
            **{"subject": "Hello", "headers": {"Message-ID": "<first@example.com>"}, **overrides}
        )
    )


def follow_up() -> OutboundEmail:
    return OutboundEmail(**email_fields())


def run(p: GmailProvider, *emails: OutboundEmail) -> list[str]:
    async def go() -> list[str]:
        try:
            return [await p.send(e) for e in emails]
        finally:
            await p.close()

    return asyncio.run(go())


def test_sends_raw_mime_and_threads_the_follow_up(gmail: GmailApi, secret_ref: Refs) -> None:
    ids = run(provider(gmail, secret_ref), first_step(), follow_up())
    first, second = gmail.sent
    assert ids == [first.id, second.id]
    assert first.thread_id == first.id  # a new thread
    assert second.requested_thread_id == first.thread_id
    assert second.thread_id == first.thread_id
    assert second.header("Message-ID") == "<second@example.com>"
    assert second.header("In-Reply-To") == "<first@example.com>"
    assert second.header("References") == "<first@example.com>"
    assert second.header("List-Unsubscribe") == "<mailto:unsub@example.com>"
    assert second.header("From") == '"Jane Doe" <jane@example.com>'
    assert gmail.lists == 0  # the thread came from the first send's answer
    assert gmail.tokens.grants == 1  # one access token for both sends


def test_thread_found_by_rfc822msgid_after_a_restart(gmail: GmailApi, secret_ref: Refs) -> None:
    run(provider(gmail, secret_ref), first_step())
    run(provider(gmail, secret_ref), follow_up())  # a new provider: an empty cache
    first, second = gmail.sent
    assert gmail.lists == 1
    assert second.thread_id == first.thread_id


def test_follow_up_of_a_message_not_in_the_mailbox_starts_a_thread(
    gmail: GmailApi, secret_ref: Refs
) -> None:
    run(provider(gmail, secret_ref), follow_up())
    (sent,) = gmail.sent
    assert sent.requested_thread_id is None
    assert sent.thread_id == sent.id


def test_lookup_forbidden_sends_without_thread_id(gmail: GmailApi, secret_ref: Refs) -> None:
    run(provider(gmail, secret_ref), first_step())
    gmail.fail_next(
        403,
        gmail_error(
            403,
            "Request had insufficient authentication scopes.",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        ),
        route="list",
    )
    run(provider(gmail, secret_ref), follow_up())  # a token with gmail.send only
    first, second = gmail.sent
    assert second.requested_thread_id is None
    assert second.header("In-Reply-To") == "<first@example.com>"


def test_lookup_rate_limited_defers_before_sending(gmail: GmailApi, secret_ref: Refs) -> None:
    run(provider(gmail, secret_ref), first_step())
    gmail.fail_next(
        429,
        gmail_error(429, "Too many requests", "rateLimitExceeded", "RESOURCE_EXHAUSTED"),
        {"Retry-After": "3"},
        route="list",
    )
    with pytest.raises(AdapterFailureError) as caught:
        run(provider(gmail, secret_ref), follow_up())
    assert (caught.value.reason, caught.value.retry_after) == ("rate_limited", 3.0)
    assert len(gmail.sent) == 1  # the follow-up was not sent without its thread


def test_expired_token_is_refreshed_once_then_the_send_succeeds(
    gmail: GmailApi, secret_ref: Refs
) -> None:
    p = provider(gmail, secret_ref)

    async def go() -> list[str]:
        try:
            first = await p.send(first_step())
            gmail.tokens.expire_all()  # the cached access token is now rejected with 401
            return [first, await p.send(follow_up())]
        finally:
            await p.close()

    ids = asyncio.run(go())
    assert len(ids) == 2 and gmail.tokens.grants == 2
    assert [m.id for m in gmail.sent] == ids


def test_token_rejected_after_refresh_is_an_adapter_failure(
    gmail: GmailApi, secret_ref: Refs
) -> None:
    p = provider(gmail, secret_ref)
    gmail.fail_next(
        401, gmail_error(401, "Invalid Credentials", "authError", "UNAUTHENTICATED"), times=2
    )
    with pytest.raises(AdapterFailureError) as caught:
        run(p, first_step())
    assert caught.value.reason == "auth_rejected"
    assert gmail.tokens.grants == 2
    assert gmail.sent == []


def test_wrong_refresh_token_is_an_adapter_failure(gmail: GmailApi, secret_ref: Refs) -> None:
    p = GmailProvider(
        GmailConfig.from_adapter_config(
            {
                "client_id": gmail.tokens.client_id,
                "client_secret": secret_ref(gmail.tokens.client_secret),
                "refresh_token": secret_ref("1//revoked"),
                "token_url": gmail.token_url,
                "api_base": gmail.url,
            }
        )
    )
    with pytest.raises(AdapterFailureError) as caught:
        run(p, first_step())
    assert "1//revoked" not in str(caught.value)
    assert gmail.sent == []


def test_invalid_to_header_is_a_bounce(gmail: GmailApi, secret_ref: Refs) -> None:
    with pytest.raises(RecipientRejectedError) as caught:
        run(provider(gmail, secret_ref), first_step(recipient="undisclosed-recipients:;"))
    assert caught.value.reason == "invalid_recipient"


@pytest.mark.parametrize(
    ("status", "reason", "kind", "code", "retry_after"),
    [
        (400, "invalidArgument", PermanentDeliveryError, "request_rejected", None),
        (400, "failedPrecondition", AdapterFailureError, "account_not_ready", None),
        (403, "dailyLimitExceeded", AdapterFailureError, "rate_limited", None),
        (403, "userRateLimitExceeded", AdapterFailureError, "rate_limited", None),
        (403, "domainPolicy", AdapterFailureError, "forbidden", None),
        (429, "rateLimitExceeded", AdapterFailureError, "rate_limited", 12.0),
        (500, "backendError", AdapterFailureError, "provider_unavailable", None),
        (503, "backendError", AdapterFailureError, "provider_unavailable", 5.0),
    ],
)
def test_documented_errors_map_onto_the_failure_classes(
    gmail: GmailApi,
    secret_ref: Refs,
    status: int,
    reason: str,
    kind: type[Exception],
    code: str,
    retry_after: float | None,
) -> None:
    headers = {"Retry-After": str(int(retry_after))} if retry_after else {}
    gmail.fail_next(status, gmail_error(status, "error", reason, "X"), headers)
    with pytest.raises(kind) as caught:
        run(provider(gmail, secret_ref), first_step())
    assert type(caught.value) is kind
    assert getattr(caught.value, "reason", None) == code
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert gmail.sent == []


def test_no_answer_after_the_request_is_ambiguous(gmail: GmailApi, secret_ref: Refs) -> None:
    gmail.stall_next(3)
    with pytest.raises(AmbiguousDeliveryError):
        run(provider(gmail, secret_ref, timeout=0.5), first_step())


def _without_date(raw: bytes) -> bytes:
    return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date:"))


def test_raw_is_base64url_of_render_message(gmail: GmailApi, secret_ref: Refs) -> None:
    from streams.providers.smtp import render_message

    email = first_step(subject="Übergabe ünd mehr", body_text="Grüße " * 40)
    run(provider(gmail, secret_ref), email)
    (sent,) = gmail.sent
    rendered, _ = render_message(email)
    # The same bytes but the Date header (rendered at send time).
    assert _without_date(sent.raw) == _without_date(rendered)
