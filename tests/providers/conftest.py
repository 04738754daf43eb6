"""Fixtures of the provider tests: each local API server on a free port, secrets in files."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.providers.mailgun_api import MailgunApi
from tests.providers.postmark_api import PostmarkApi
from tests.providers.ses_api import SesApi


@pytest.fixture
def secret_ref(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """Write a secret to a file of its own; return its reference ``{"secret": "file:…"}``."""
    counter = iter(range(1_000_000))

    def write(value: str) -> dict[str, str]:
        path = tmp_path / f"secret-{next(counter)}"
        path.write_text(value + "\n")
        return {"secret": f"file:{path}"}

    return write


@pytest.fixture
def mailgun() -> Iterator[MailgunApi]:
    with MailgunApi() as server:
        yield server


@pytest.fixture
def postmark() -> Iterator[PostmarkApi]:
    with PostmarkApi(inactive=("gone@example.org",)) as server:
        yield server


@pytest.fixture
def ses_api() -> Iterator[SesApi]:
    with SesApi() as server:
        yield server


def email_fields(**overrides: Any) -> dict[str, Any]:
    """An outbound email's fields: a follow-up threaded under ``<first@example.com>``."""
    fields: dict[str, Any] = {
        "from_address": '"Jane Doe" <jane@example.com>',
        "recipient": "prospect@example.org",
        "subject": "Re: Hello",
        "body_text": "Step 1",
        "headers": {
            "Message-ID": "<second@example.com>",
            "In-Reply-To": "<first@example.com>",
            "References": "<first@example.com>",
            "List-Unsubscribe": "<mailto:unsub@example.com>",
            "Reply-To": "replies@example.com",
        },
    }
    fields.update(overrides)
    return fields


class MotoSes:
    """moto's server mode (``ThreadedMotoServer``): the AWS API over real HTTP on loopback."""

    region = "us-east-1"
    access_key_id = "AKIAIOSFODNN7EXAMPLE"
    secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        httpx.post(f"{self.url}/moto-api/reset").raise_for_status()

    def verify_domain(self, domain: str) -> None:
        import boto3

        boto3.client(
            "sesv2",
            region_name=self.region,
            endpoint_url=self.url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        ).create_email_identity(EmailIdentity=domain)

    def sent_raw(self) -> list[bytes]:
        """The raw messages SES accepted, oldest first (moto's in-process backend)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        backend = ses_backends[DEFAULT_ACCOUNT_ID][self.region]
        return [m.raw_data.encode() for m in backend.sent_messages if hasattr(m, "raw_data")]

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture
def moto_ses() -> Iterator[MotoSes]:
    server = MotoSes()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gmail() -> Iterator[Any]:
    from tests.providers.gmail_api import GmailApi

    with GmailApi() as server:
        yield server


@pytest.fixture
def graph() -> Iterator[Any]:
    from tests.providers.graph_api import GraphApi

    with GraphApi() as server:
        yield server
