"""Helpers of the IMAP pump tests and benchmark: a mailbox adapter whose inbound side is a
real Dovecot user (helper A's ``mail_server`` fixture), replies in the wire format, and an
IMAP client for the folder operations a test needs (APPEND, DELETE/CREATE)."""

from __future__ import annotations

import imaplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from streams.api import DripDrop
from tests.integration.smtp_sink import SmtpSink


@dataclass
class Mailbox:
    """A sending adapter whose mailbox (``address``) the pump reads."""

    adapter: Any
    address: str
    password_file: Path
    world: dict[str, Any]

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()


def inbound_config(
    mail_server: Any, address: str, password_file: Path, *, folders: tuple[str, ...], **extra: Any
) -> dict[str, Any]:
    """``config.inbound.imap`` for a Dovecot user: implicit TLS with the test CA."""
    return {
        "imap": {
            "host": "127.0.0.1",
            "port": mail_server.imaps_port,
            "security": "tls",
            "ca_file": str(mail_server.ca_file),
            "username": address,
            "password": {"secret": f"file:{password_file}"},
            "folders": list(folders),
            "start": "all",
            **extra,
        }
    }


def build_mailbox(
    dd: DripDrop,
    smtp: SmtpSink,
    mail_server: Any,
    *,
    tenant_key: str,
    steps: int = 2,
    delays: tuple[int, ...] = (0, 3600),
    folders: tuple[str, ...] = ("INBOX",),
    outbound: dict[str, Any] | None = None,
    **imap: Any,
) -> Mailbox:
    """One mailbox adapter (sends into ``smtp``, or ``outbound``'s SMTP config; receives in
    Dovecot) and a sequence."""
    address = f"sales-{uuid.uuid4().hex[:10]}@dripdrop.test"
    password_file = Path(mail_server.add_user(address))
    adapter = dd.create_channel_adapter(
        tenant_key=tenant_key,
        name="sales",
        provider="smtp",
        from_address=address,
        health_state="active",
        config={
            **(outbound or smtp.adapter_config()),
            "inbound": inbound_config(mail_server, address, password_file, folders=folders, **imap),
        },
    )
    pool = dd.create_adapter_pool(tenant_key=tenant_key, name="sales")
    dd.add_pool_member(pool.id, tenant_key=tenant_key, adapter_id=adapter.id, weight=1)
    sequence = dd.create_sequence(tenant_key=tenant_key, key="cold")
    version = dd.create_sequence_version(
        sequence.id, tenant_key=tenant_key, version=1, mode="outbound", config={"pool_id": pool.id}
    )
    created = [
        dd.create_step(
            version.id,
            tenant_key=tenant_key,
            key=f"s{i}",
            position=i,
            subject_template="Hello {{ first_name }}" if i == 0 else "Re: Hello",
            body_template=f"Step {i}",
            delay_seconds=delays[i],
        )
        for i in range(steps)
    ]
    world = {"pool": pool, "sequence": sequence, "version": version, "steps": created}
    return Mailbox(adapter, address, password_file, world)


def bracketed(message_id: str) -> str:
    bare = message_id.strip().strip("<>")
    return f"<{bare}>"


def reply(
    to: str, in_reply_to: str, *, sender: str = "prospect@prospects.test", body: str = "Yes."
) -> tuple[str, bytes]:
    """A plain reply as a mail client writes it; returns (its Message-ID, the bytes)."""
    message_id = f"reply-{uuid.uuid4().hex}@prospects.test"
    raw = (
        f"From: Prospect <{sender}>\r\n"
        f"To: {to}\r\n"
        "Subject: Re: Hello\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        f"In-Reply-To: {bracketed(in_reply_to)}\r\n"
        f"References: {bracketed(in_reply_to)}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()
    return message_id, raw


def imap_session(mail_server: Any, mailbox: Mailbox) -> imaplib.IMAP4_SSL:
    """A logged-in IMAP client for the test's own folder operations."""
    context = ssl.create_default_context(cafile=str(mail_server.ca_file))
    client = imaplib.IMAP4_SSL("127.0.0.1", mail_server.imaps_port, ssl_context=context)
    client.login(mailbox.address, mailbox.password)
    return client
