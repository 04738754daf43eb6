"""DKIM signatures (SPEC §13) on messages captured by a real SMTP server (aiosmtpd).

The SMTP provider sends through the registry, as the sender does; the server keeps the
bytes exactly as they arrived; dkimpy's verifier checks them against the public key served
through its ``dnsfunc`` hook (the TXT record ``selector._domainkey.domain`` would hold).
"""

from __future__ import annotations

import asyncio
import base64
import email
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dripdrop_core.models import Adapter
from streams.providers import AdapterFailureError, OutboundEmail, ProviderRegistry
from streams.providers import dkim as dkim_signing
from tests.integration.smtp_sink import free_port


class RawHandler:
    """Keeps every message's bytes as received (``original_content``)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.raw.append(bytes(envelope.original_content))
        return "250 OK"


@pytest.fixture
def server() -> Iterator[tuple[RawHandler, int]]:
    handler = RawHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
        dkim_signing.reset()


def _key_pair(path: Path) -> bytes:
    """Write a PEM private key to ``path``; return the DNS record's ``p=`` value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der)


def _dns(records: dict[bytes, bytes]) -> Any:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.rstrip(b"."))

    return lookup


def _adapter(port: int, dkim_config: dict[str, Any]) -> Adapter:
    return Adapter(
        id="00000000-0000-0000-0000-00000000d1c1",
        tenant_key="acct-dkim",
        name="mailbox",
        provider="smtp",
        from_address="rep@sender.example",
        config={"host": "127.0.0.1", "port": port, "dkim": dkim_config},
    )


EMAIL = OutboundEmail(
    from_address="rep@sender.example",
    recipient="prospect@example.org",
    subject="Re: Hello",
    body_text="Hi,\nfollowing up.\n",
    body_html="<p>Hi,</p><p>following up.</p>",
    headers={
        "Message-ID": "<m2@sender.example>",
        "In-Reply-To": "<m1@sender.example>",
        "References": "<m1@sender.example>",
        "List-Unsubscribe": "<https://u.example/u/tok>, <mailto:unsub@sender.example?subject=tok>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    },
)


def _send(adapter: Adapter, email: OutboundEmail) -> None:
    async def go() -> None:
        registry = ProviderRegistry()
        try:
            await registry.provider_for(adapter).send(email)
        finally:
            await registry.close()

    asyncio.run(go())


def test_dkim_signature_covers_the_headers_and_verifies(
    server: tuple[RawHandler, int], tmp_path: Path
) -> None:
    handler, port = server
    public = _key_pair(tmp_path / "sender.pem")
    adapter = _adapter(
        port, {"selector": "s2026", "private_key": {"secret": f"file:{tmp_path / 'sender.pem'}"}}
    )
    _send(adapter, EMAIL)
    [raw] = handler.raw
    record = {b"s2026._domainkey.sender.example": b"v=DKIM1; k=rsa; p=" + public}
    assert dkim.verify(raw, dnsfunc=_dns(record))
    signature = dkim.DKIM(raw)
    signature.verify(dnsfunc=_dns(record))
    header = str(email.message_from_bytes(raw)["DKIM-Signature"])
    tags = dict(part.split("=", 1) for part in re.sub(r"\s+", "", header).split(";") if "=" in part)
    assert (tags["d"], tags["s"], tags["c"], tags["a"]) == (
        "sender.example",
        "s2026",
        "relaxed/relaxed",
        "rsa-sha256",
    )
    signed = {h.strip().lower() for h in tags["h"].split(":")}
    assert signed >= {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
    # A changed signed header, or another domain's key, fails verification.
    tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"X-Other: 1")
    assert not dkim.verify(tampered, dnsfunc=_dns(record))
    other = _key_pair(tmp_path / "other.pem")
    assert not dkim.verify(
        raw, dnsfunc=_dns({b"s2026._domainkey.sender.example": b"v=DKIM1; k=rsa; p=" + other})
    )
    # The key never appears in what was sent.
    assert b"PRIVATE KEY" not in raw


def test_no_key_for_the_domain_sends_unsigned_and_a_missing_key_defers(
    server: tuple[RawHandler, int], tmp_path: Path
) -> None:
    handler, port = server
    _key_pair(tmp_path / "k.pem")
    # A key for another sending domain: this From is not signed.
    other = _adapter(
        port,
        {
            "other.example": {
                "selector": "s1",
                "private_key": {"secret": f"file:{tmp_path / 'k.pem'}"},
            }
        },
    )
    _send(other, EMAIL)
    assert b"DKIM-Signature" not in handler.raw[-1]
    # The reference cannot be resolved: an adapter failure (deferred), nothing sent.
    os.environ.pop("DRIPDROP_TEST_NO_SUCH_KEY", None)
    missing = _adapter(
        port, {"selector": "s1", "private_key": {"secret": "env:DRIPDROP_TEST_NO_SUCH_KEY"}}
    )
    with pytest.raises(AdapterFailureError, match="secret_unavailable"):
        _send(missing, EMAIL)
    assert len(handler.raw) == 1
