"""The Microsoft 365 provider (Graph sendMail, MIME) against the local Graph (graph_api.py)."""

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
from streams.providers.microsoft365 import GraphConfig, GraphProvider
from tests.providers.conftest import email_fields
from tests.providers.graph_api import GraphApi, graph_error

Refs = Callable[[str], dict[str, str]]


def provider(server: GraphApi, secret_ref: Refs, **config: Any) -> GraphProvider:
    return GraphProvider(
        GraphConfig.from_adapter_config(
            {
                "tenant": server.tenant,
                "client_id": server.tokens.client_id,
                "client_secret": secret_ref(server.tokens.client_secret),
                "refresh_token": secret_ref(server.tokens.refresh_token),
                "token_url": server.token_url,
                "api_base": server.api_base,
                **config,
            }
        )
    )


def run(p: GraphProvider, *emails: OutboundEmail) -> list[str]:
    async def go() -> list[str]:
        try:
            return [await p.send(e) for e in emails]
        finally:
            await p.close()

    return asyncio.run(go())


def test_sends_our_mime_and_returns_our_message_id(graph: GraphApi, secret_ref: Refs) -> None:
    (provider_id,) = run(provider(graph, secret_ref), OutboundEmail(**email_fields()))
    assert provider_id == "<second@example.com>"  # Graph's 202 carries no id
    (sent,) = graph.sent
    assert sent.user == "me"
    assert sent.header("Message-ID") == "<second@example.com>"
    assert sent.header("In-Reply-To") == "<first@example.com>"
    assert sent.header("References") == "<first@example.com>"
    assert sent.header("List-Unsubscribe") == "<mailto:unsub@example.com>"
    assert sent.header("Reply-To") == "replies@example.com"


def test_user_id_sends_as_that_mailbox(graph: GraphApi, secret_ref: Refs) -> None:
    run(provider(graph, secret_ref, user_id="jane@contoso.com"), OutboundEmail(**email_fields()))
    assert [m.user for m in graph.sent] == ["jane@contoso.com"]


def test_default_token_url_is_the_tenants_microsoft_endpoint() -> None:
    config = GraphConfig.from_adapter_config(
        {
            "tenant": "contoso.onmicrosoft.com",
            "client_id": "c",
            "client_secret": {"secret": "env:X"},
            "refresh_token": {"secret": "env:Y"},
        }
    )
    assert config.token_url == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert config.send_url == "https://graph.microsoft.com/v1.0/me/sendMail"


def test_expired_token_is_refreshed_once_then_the_send_succeeds(
    graph: GraphApi, secret_ref: Refs
) -> None:
    p = provider(graph, secret_ref)

    async def go() -> list[str]:
        try:
            first = await p.send(OutboundEmail(**email_fields()))
            graph.tokens.expire_all()
            return [first, await p.send(OutboundEmail(**email_fields()))]
        finally:
            await p.close()

    assert len(asyncio.run(go())) == 2
    assert graph.tokens.grants == 2
    assert len(graph.sent) == 2


def test_token_rejected_after_refresh_is_an_adapter_failure(
    graph: GraphApi, secret_ref: Refs
) -> None:
    body = graph_error("InvalidAuthenticationToken", "Access token has expired.")
    graph.fail_next(401, body, times=2)
    with pytest.raises(AdapterFailureError) as caught:
        run(provider(graph, secret_ref), OutboundEmail(**email_fields()))
    assert (caught.value.reason, caught.value.detail) == (
        "auth_rejected",
        "HTTP 401 InvalidAuthenticationToken",
    )
    assert graph.tokens.grants == 2


def test_invalid_recipient_is_a_bounce(graph: GraphApi, secret_ref: Refs) -> None:
    with pytest.raises(RecipientRejectedError):
        run(provider(graph, secret_ref), OutboundEmail(**email_fields(recipient="nobody")))


@pytest.mark.parametrize(
    ("status", "code", "headers", "kind", "reason", "retry_after"),
    [
        (
            400,
            "ErrorMimeContentInvalidBase64String",
            {},
            PermanentDeliveryError,
            "request_rejected",
            None,
        ),
        (400, "ErrorInvalidRecipients", {}, RecipientRejectedError, "invalid_recipient", None),
        (403, "ErrorAccessDenied", {}, AdapterFailureError, "account_refused", None),
        (403, "ErrorSendAsDenied", {}, AdapterFailureError, "account_refused", None),
        (403, "ErrorMessageSubmissionBlocked", {}, AdapterFailureError, "account_refused", None),
        (
            429,
            "ApplicationThrottled",
            {"Retry-After": "17"},
            AdapterFailureError,
            "rate_limited",
            17.0,
        ),
        (
            503,
            "ServiceUnavailable",
            {"Retry-After": "30"},
            AdapterFailureError,
            "provider_unavailable",
            30.0,
        ),
        (504, "UnknownError", {}, AdapterFailureError, "provider_unavailable", None),
    ],
)
def test_documented_errors_map_onto_the_failure_classes(
    graph: GraphApi,
    secret_ref: Refs,
    status: int,
    code: str,
    headers: dict[str, str],
    kind: type[Exception],
    reason: str,
    retry_after: float | None,
) -> None:
    graph.fail_next(status, graph_error(code, "error"), headers)
    with pytest.raises(kind) as caught:
        run(provider(graph, secret_ref), OutboundEmail(**email_fields()))
    assert type(caught.value) is kind
    assert getattr(caught.value, "reason", None) == reason
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert graph.sent == []


def test_no_answer_after_the_request_is_ambiguous(graph: GraphApi, secret_ref: Refs) -> None:
    graph.stall_next(3)
    with pytest.raises(AmbiguousDeliveryError):
        run(provider(graph, secret_ref, timeout=0.5), OutboundEmail(**email_fields()))
