"""The SMTP provider against a real aiosmtpd server: headers, pooling, error classification."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Iterator
from email.errors import HeaderParseError
from typing import Any

import pytest

from streams.providers import (
    AmbiguousDeliveryError,
    HeaderInjectionError,
    OutboundEmail,
    PermanentDeliveryError,
    ProviderRegistry,
    SmtpConfig,
    SmtpProvider,
    TransientDeliveryError,
)
from streams.providers.smtp import build_message, provider_message_id, render_message
from tests.integration.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.integration

THREAD = {
    "Message-ID": "<0192c1a0-3@mail.dripdrop.test>",
    "In-Reply-To": "<0192c1a0-2@mail.dripdrop.test>",
    "References": "<0192c1a0-1@mail.dripdrop.test> <0192c1a0-2@mail.dripdrop.test>",
}


def email(recipient: str = "lead@example.test", **overrides: Any) -> OutboundEmail:
    fields: dict[str, Any] = {
        "from_address": "ana@dripdrop.test",
        "recipient": recipient,
        "subject": "Quick question",
        "body_text": "Hi,\n.\nA line with a single dot above.\n",
        "body_html": "<p>Hi</p>",
        "headers": THREAD,
    }
    fields.update(overrides)
    return OutboundEmail(**fields)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(
        refuse={"nobody@example.test"},
        drop_after_data={"drop@example.test"},
        stall_after_data={"stall@example.test"},
        stall_seconds=1.5,
    ) as running:
        yield running


def provider(port: int, **config: Any) -> SmtpProvider:
    return SmtpProvider(SmtpConfig(host="127.0.0.1", port=port, **config))


def test_send_threading_headers_arrive_verbatim_with_queue_id(sink: SmtpSink) -> None:
    async def run() -> str:
        smtp = provider(sink.port)
        try:
            return await smtp.send(email())
        finally:
            await smtp.close()

    provider_id = asyncio.run(run())

    [received] = sink.messages
    assert provider_id == received.queue_id
    for name, value in THREAD.items():
        assert received.header(name) == value
    assert received.rcpt_tos == ("lead@example.test",)
    assert received.mail_from == "ana@dripdrop.test"
    assert received.header("Subject") == "Quick question"
    assert received.header("Date")
    body = received.message.get_body(("plain",))
    assert body is not None and "single dot" in body.get_content()
    assert received.message.get_body(("html",)) is not None


def test_send_many_concurrent_uses_at_most_pool_size_connections(sink: SmtpSink) -> None:
    async def run() -> None:
        smtp = provider(sink.port, pool_size=3)
        try:
            await asyncio.gather(*(smtp.send(email(f"r{i}@example.test")) for i in range(30)))
        finally:
            await smtp.close()

    asyncio.run(run())

    assert len(sink.messages) == 30
    assert len({message.peer for message in sink.messages}) <= 3


def test_send_refused_recipient_is_permanent_and_connection_survives(sink: SmtpSink) -> None:
    async def run() -> PermanentDeliveryError:
        smtp = provider(sink.port, pool_size=1)
        try:
            with pytest.raises(PermanentDeliveryError) as refused:
                await smtp.send(email("nobody@example.test"))
            await smtp.send(email())  # same pooled connection, after RSET
            return refused.value
        finally:
            await smtp.close()

    error = asyncio.run(run())

    assert error.reason == "recipient_refused"
    assert error.smtp_code == 550
    assert "example.test" not in str(error)  # codes, never addresses
    assert len(sink.messages) == 1
    assert len({message.peer for message in sink.messages}) == 1


def test_send_connection_dropped_after_data_is_ambiguous_then_reconnects(sink: SmtpSink) -> None:
    async def run() -> AmbiguousDeliveryError:
        smtp = provider(sink.port, pool_size=1)
        try:
            with pytest.raises(AmbiguousDeliveryError) as dropped:
                await smtp.send(email("drop@example.test"))
            await smtp.send(email())
            return dropped.value
        finally:
            await smtp.close()

    error = asyncio.run(run())

    assert error.reason == "disconnected_after_data"
    assert len(sink.dropped) == 1 and len(sink.messages) == 1


def test_send_final_reply_timeout_is_ambiguous(sink: SmtpSink) -> None:
    async def run() -> None:
        smtp = provider(sink.port, timeout_seconds=0.5)
        try:
            with pytest.raises(AmbiguousDeliveryError, match="timeout_after_data"):
                await smtp.send(email("stall@example.test"))
        finally:
            await smtp.close()

    asyncio.run(run())


def test_send_connection_refused_is_transient() -> None:
    async def run() -> None:
        smtp = provider(free_port())
        try:
            with pytest.raises(TransientDeliveryError, match="connect_failed"):
                await smtp.send(email())
        finally:
            await smtp.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@example.test"},
        {"recipient": "lead@example.test\nBcc: victim@example.test"},
        {"from_address": "ana@dripdrop.test\r"},
        {"headers": {**THREAD, "References": "<a@b>\r\nX-Injected: 1"}},
        {"headers": {"X-Bad\r\nName": "v"}},
    ],
)
def test_send_header_injection_is_rejected_before_connecting(overrides: dict[str, Any]) -> None:
    # A closed port: any connection attempt would surface as TransientDeliveryError instead.
    async def run() -> None:
        smtp = provider(free_port())
        try:
            with pytest.raises(HeaderInjectionError):
                await smtp.send(email(**overrides))
        finally:
            await smtp.close()

    asyncio.run(run())


def test_send_after_server_closed_idle_connection_reconnects() -> None:
    async def run(port: int) -> None:
        smtp = provider(port, pool_size=1)
        try:
            await smtp.send(email())
            await asyncio.sleep(0.8)  # the server's idle timeout closes the pooled connection
            await smtp.send(email())
        finally:
            await smtp.close()

    with SmtpSink(idle_timeout_seconds=0.3) as idle:
        asyncio.run(run(idle.port))
        assert len(idle.messages) == 2


def test_provider_message_id_falls_back_to_message_id_header() -> None:
    message = build_message(email())

    assert provider_message_id("2.0.0 Ok: queued as 4BxYz12", message) == "4BxYz12"
    assert provider_message_id("OK id=1qA2b3-000Xy", message) == "1qA2b3-000Xy"
    assert provider_message_id("2.0.0 OK", message) == THREAD["Message-ID"]
    assert provider_message_id("2.0.0 OK", THREAD["Message-ID"]) == THREAD["Message-ID"]


def _wire_of_build_message(e: OutboundEmail) -> tuple[bytes, str]:
    message = build_message(e)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n", max_line_length=998)), str(
        message["Message-ID"]
    )


def _same_but_date_and_boundary(wire: bytes) -> bytes:
    wire = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", wire)
    return re.sub(rb"={15}\d{19}==", b"=BOUNDARY=", wire)


RENDER_CASES = [
    email(),
    email(body_html=None),
    email(headers={}),  # Message-ID generated
    email(subject="Déjà vu, ünïcode", body_text="Größe\r\nmixed\rline\nends\n\n" + "x" * 200),
    email(subject="Ünïcode " * 40),  # an encoded subject that folds: the email package path
    email(subject="s" * 1200),  # a line over 998 characters: the email package path
    email(headers={**THREAD, "References": " ".join(f"<{i}@dripdrop.test>" for i in range(300))}),
    email(headers={"message-id": "<lower@x>", "X-Tabs": "a\tb  c ", "X-Empty": ""}),
    email(body_text="", body_html=""),
    email(body_text="From me\n.\n=3D\n--===============0000000000000000000==\n"),
    email(headers={**THREAD, "X-Ctl": "vertical\x0btab"}),  # splitlines() cuts it: package path
]


@pytest.mark.parametrize("case", RENDER_CASES)
def test_render_message_writes_what_the_email_package_writes(
    case: OutboundEmail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streams.providers._mime.make_msgid", lambda domain=None: "<gen@x.test>")

    fast, fast_id = render_message(case)
    slow, slow_id = _wire_of_build_message(case)

    assert _same_but_date_and_boundary(fast) == _same_but_date_and_boundary(slow)
    assert fast_id == slow_id


def test_render_message_matches_the_email_package_on_random_headers() -> None:
    rng = random.Random(5)
    alphabet = "abcXYZ019 ;,<>@=?\"\t.-_:()[]\\/'!#$%&*+{}|~^`\x0b\x0c\x1c\x7féü"
    for _ in range(400):
        value = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 3, 60, 985, 1100])))
        case = email(headers={**THREAD, "X-Random": value}, body_html=rng.choice([None, "<p/>"]))
        try:
            slow, slow_id = _wire_of_build_message(case)
        except HeaderParseError:  # the package refuses what splitlines() turns into a header
            with pytest.raises(HeaderParseError):
                render_message(case)
            continue
        fast, fast_id = render_message(case)
        assert _same_but_date_and_boundary(fast) == _same_but_date_and_boundary(slow), value
        assert fast_id == slow_id


def test_registry_shares_one_pool_per_account(sink: SmtpSink) -> None:
    from dripdrop_core.models import Adapter

    def adapter(adapter_id: str, provider_name: str = "smtp") -> Adapter:
        return Adapter(
            id=adapter_id,
            tenant_key="t",
            name=adapter_id,
            provider=provider_name,
            config=sink.adapter_config(),
        )

    async def run() -> None:
        registry = ProviderRegistry()
        try:
            first = registry.provider_for(adapter("a1"))
            assert registry.provider_for(adapter("a2")) is first
            with pytest.raises(PermanentDeliveryError, match="unknown_provider"):
                registry.provider_for(adapter("a3", "carrier-pigeon"))
            await first.send(email())
        finally:
            await registry.close()

    started = time.perf_counter()
    asyncio.run(run())
    assert time.perf_counter() - started < 10
    assert len(sink.messages) == 1
