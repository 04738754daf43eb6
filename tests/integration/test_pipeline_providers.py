"""Each HTTP API provider end to end through the real pipeline (issue 12, SPEC §7).

Enrollment → the worker sends step 0 through the provider's local API server (or moto's
SES) with the provider's real client → the ledger row carries the provider's message id →
step 1 (thread continuity) goes out under it: our In-Reply-To/References in the message
the server received, and for Gmail the ``threadId`` of the first message. Secrets reach
the worker only as ``file:`` references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import rows, sent_rows, start_worker, tenant, wire
from tests.integration.support import WorkerProcess, wait_for
from tests.providers.conftest import MotoSes
from tests.providers.gmail_api import GmailApi
from tests.providers.graph_api import GraphApi
from tests.providers.mailgun_api import MailgunApi
from tests.providers.postmark_api import PostmarkApi

FROM = "jane@example.com"


@dataclass
class Received:
    """What a provider's server took: ids and threading headers, per message."""

    message_id: str | None
    in_reply_to: str | None
    references: str | None
    provider_id: str
    thread_id: str | None = None


@dataclass
class Harness:
    provider: str
    config: dict[str, Any]
    received: Callable[[], list[Received]]


Secret = Callable[[str], dict[str, str]]


@contextmanager
def gmail(secret: Secret) -> Iterator[Harness]:
    with GmailApi() as server:
        assert isinstance(server, GmailApi)
        config = {
            "client_id": server.tokens.client_id,
            "client_secret": secret(server.tokens.client_secret),
            "refresh_token": secret(server.tokens.refresh_token),
            "token_url": server.token_url,
            "api_base": server.url,
        }
        yield Harness(
            "gmail",
            config,
            lambda: [
                Received(
                    m.header("Message-ID"),
                    m.header("In-Reply-To"),
                    m.header("References"),
                    m.id,
                    m.thread_id,
                )
                for m in server.sent
            ],
        )


@contextmanager
def microsoft365(secret: Secret) -> Iterator[Harness]:
    with GraphApi() as server:
        assert isinstance(server, GraphApi)
        config = {
            "tenant": server.tenant,
            "client_id": server.tokens.client_id,
            "client_secret": secret(server.tokens.client_secret),
            "refresh_token": secret(server.tokens.refresh_token),
            "token_url": server.token_url,
            "api_base": server.api_base,
        }
        yield Harness(
            "microsoft365",
            config,
            lambda: [
                Received(
                    m.header("Message-ID"),
                    m.header("In-Reply-To"),
                    m.header("References"),
                    str(m.header("Message-ID")),  # Graph's 202 has no id: ours is the id
                )
                for m in server.sent
            ],
        )


@contextmanager
def ses(secret: Secret) -> Iterator[Harness]:
    from email import message_from_bytes

    server = MotoSes()
    try:
        server.verify_domain("example.com")
        config = {
            "region": MotoSes.region,
            "access_key_id": MotoSes.access_key_id,
            "secret_access_key": secret(MotoSes.secret_access_key),
            "endpoint_url": server.url,
        }

        def received() -> list[Received]:
            from moto.core.models import DEFAULT_ACCOUNT_ID
            from moto.ses.models import ses_backends

            backend = ses_backends[DEFAULT_ACCOUNT_ID][MotoSes.region]
            out = []
            for m in backend.sent_messages:
                parsed = message_from_bytes(m.raw_data.encode())
                out.append(
                    Received(
                        parsed["Message-ID"], parsed["In-Reply-To"], parsed["References"], m.id
                    )
                )
            return out

        yield Harness("ses", config, received)
    finally:
        server.stop()


@contextmanager
def mailgun(secret: Secret) -> Iterator[Harness]:
    with MailgunApi(domains=("mg.example.com",)) as server:
        assert isinstance(server, MailgunApi)
        config = {
            "domain": "mg.example.com",
            "api_key": secret(server.api_key),
            "api_base": server.url,
        }
        yield Harness(
            "mailgun",
            config,
            lambda: [
                Received(
                    m.header("Message-ID"),
                    m.header("In-Reply-To"),
                    m.header("References"),
                    str(m.header("Message-ID")),
                )
                for m in server.sent
            ],
        )


@contextmanager
def postmark(secret: Secret) -> Iterator[Harness]:
    with PostmarkApi(senders=("example.com",)) as server:
        assert isinstance(server, PostmarkApi)
        config = {"server_token": secret(server.server_token), "api_base": server.url}
        yield Harness(
            "postmark",
            config,
            lambda: [
                Received(
                    m.header("Message-ID"),
                    m.header("In-Reply-To"),
                    m.header("References"),
                    m.message_id,
                )
                for m in server.sent
            ],
        )


HARNESSES = {
    "gmail": gmail,
    "microsoft365": microsoft365,
    "ses": ses,
    "mailgun": mailgun,
    "postmark": postmark,
}


@pytest.fixture
def secret(tmp_path: Path) -> Secret:
    counter = iter(range(1_000_000))

    def write(value: str) -> dict[str, str]:
        path = tmp_path / f"secret-{next(counter)}"
        path.write_text(value + "\n")
        return {"secret": f"file:{path}"}

    return write


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_two_steps_through_the_provider_thread_under_its_message_id(
    name: str,
    settings: Settings,
    client: DripDrop,
    secret: Secret,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    with HARNESSES[name](secret) as harness:
        adapter = client.create_channel_adapter(
            tenant_key=key,
            name=f"{name}-box",
            provider=harness.provider,
            from_address=FROM,
            health_state="active",
            config=harness.config,
        )
        sequence = client.create_sequence(tenant_key=key, key="onboarding")
        version = client.create_sequence_version(
            sequence.id, tenant_key=key, version=1, mode="lifecycle"
        )
        for position in range(2):
            client.create_step(
                version.id,
                tenant_key=key,
                key=f"s{position}",
                position=position,
                subject_template="Welcome" if position == 0 else "Re: Welcome",
                body_template="Hi {{ first_name }}",
                thread_continuity=position == 1,
            )
        worker = start_worker(worker_factory)
        enrollment_id = str(
            client.enroll(
                tenant_key=key,
                sequence_id=sequence.id,
                subscriber_id="u-1",
                recipient="user@example.org",
                data={"first_name": "Lin"},
            ).enrollment_id
        )

        def both_sent() -> list[tuple[Any, ...]] | None:
            assert worker.alive(), worker.log_tail()
            found = sent_rows(settings, enrollment_id)
            return found if len(found) == 2 else None

        chain = wait_for(both_sent, timeout=60, what=f"two sends through {name}")
        assert [row[3] for row in chain] == [adapter.id, adapter.id]
        first_id, second_id = (wire(row[1]) for row in chain)
        ledger = rows(
            settings,
            "SELECT out_message_id, provider_message_id, error FROM dripdrop.step_executions"
            " WHERE enrollment_id = %s AND status = 'sent' ORDER BY inserted_at",
            enrollment_id,
        )
        received = {r.message_id: r for r in harness.received()}
        assert set(received) == {first_id, second_id}
        first, second = received[first_id], received[second_id]
        # The ledger holds each send's provider message id, as the provider reported it.
        assert [(wire(row[0]), row[1], row[2]) for row in ledger] == [
            (first_id, first.provider_id, None),
            (second_id, second.provider_id, None),
        ]
        # The follow-up threads under the first message, in the MIME the provider took.
        assert first.in_reply_to is None
        assert second.in_reply_to == first_id
        assert second.references == first_id
        if name == "gmail":
            assert first.thread_id == first.provider_id
            assert second.thread_id == first.thread_id
        assert worker.stop() == 0, worker.log_tail()
        log = worker.log_path.read_text(errors="replace")
        for value in _secrets(harness.config):
            assert value not in log


def _secrets(config: dict[str, Any]) -> list[str]:
    """The secret values behind ``config``'s references (to check they leak nowhere)."""
    values = []
    for value in config.values():
        if isinstance(value, dict) and str(value.get("secret", "")).startswith("file:"):
            values.append(Path(value["secret"].removeprefix("file:")).read_text().strip())
    return values
