"""RFC 8058 headers on real sends (SPEC §13): API → Kafka → worker → PostgreSQL → SMTP, and
the header's link POSTed to a real ``dripdrop web``.

One tenant, one mailbox pool, two outbound sequences: one version opted in to one-click
unsubscribe, the other left at the outbound default (off). Every send of the opted-in
version carries ``List-Unsubscribe`` (HTTPS link first, then ``mailto:``) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, its body the same link through
``{{ unsubscribe_url }}``; no send of the other carries either. POSTing the link a prospect
received stops that enrollment: its second step never goes out, the others' do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn

from dripdrop_core.unsubscribe import ONE_CLICK, Unsubscribe, read_token
from streams.api import DripDrop
from streams.settings import Settings
from streams.web import create_app
from tests.integration.pipeline_support import enrollment_state, scaled, start_worker, tenant
from tests.integration.smtp_sink import ReceivedMessage, SmtpSink, free_port
from tests.integration.support import WorkerProcess, enrolled_id, wait_for

KEY = "pipeline-one-click-hmac-key-0123456789"
KEY_ENV = "ONE_CLICK_TEST_HMAC_KEY"  # not DRIPDROP_*: the worker's env is passed explicitly
MAILTO = "unsubscribe@mbox.example"


@pytest.fixture
def web(settings: Settings) -> Iterator[str]:
    os.environ[KEY_ENV] = KEY
    port = free_port()
    app = create_app(settings.model_copy(update={"unsubscribe_key": f"env:{KEY_ENV}"}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or None, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        os.environ.pop(KEY_ENV, None)


def _sequence(dd: DripDrop, key: str, pool_id: str, *, name: str, one_click: bool | None) -> Any:
    sequence = dd.create_sequence(tenant_key=key, key=name)
    version = dd.create_sequence_version(
        sequence.id,
        tenant_key=key,
        version=1,
        mode="outbound",
        config={"pool_id": pool_id},
        one_click_unsubscribe=one_click,
    )
    for position in range(2):
        dd.create_step(
            version.id,
            tenant_key=key,
            key=f"s{position}",
            position=position,
            subject_template="Hello" if position == 0 else "Re: Hello",
            body_template=f"Step {position}."
            + (" Unsubscribe: {{ unsubscribe_url }}" if one_click else ""),
            delay_seconds=0 if position == 0 else 2 * 86400,
        )
    return sequence


def _link(message: ReceivedMessage) -> str:
    value = message.header("List-Unsubscribe")
    assert value is not None, message.headers
    https, mailto = (part.strip() for part in value.split(","))
    assert mailto.startswith(f"<mailto:{MAILTO}?subject=unsubscribe%20") and mailto.endswith(">")
    return https.removeprefix("<").removesuffix(">")


def test_opted_in_sends_carry_one_click_headers_and_a_post_of_the_link_stops_the_enrollment(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    web: str,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    mailbox = client.create_channel_adapter(
        tenant_key=key,
        name="mbox",
        provider="smtp",
        from_address="ana@mbox.example",
        health_state="active",
        config=smtp.adapter_config(),
    )
    pool = client.create_adapter_pool(tenant_key=key, name="sales")
    client.add_pool_member(pool.id, tenant_key=key, adapter_id=mailbox.id)
    opted = _sequence(client, key, pool.id, name="opted", one_click=True)
    plain = _sequence(client, key, pool.id, name="plain", one_click=None)

    worker_settings, _ = scaled(settings, day_seconds=4.0, epoch=datetime(2031, 7, 1, tzinfo=UTC))
    worker_settings = worker_settings.model_copy(
        update={
            "unsubscribe_key": f"env:{KEY_ENV}",
            "unsubscribe_base_url": web,
            "unsubscribe_mailto": MAILTO,
        }
    )
    worker = start_worker(lambda s: worker_factory(s, env={KEY_ENV: KEY}), worker_settings)

    enrollments: dict[str, str] = {}
    for sequence, prefix, count in ((opted, "in", 3), (plain, "out", 2)):
        for i in range(count):
            recipient = f"{prefix}{i}@example.org"
            accepted = client.enroll(
                tenant_key=key,
                sequence_id=sequence.id,
                subscriber_id=recipient,
                recipient=recipient,
            )
            enrollments[recipient] = enrolled_id(accepted)

    def received(recipient: str) -> list[ReceivedMessage]:
        return [m for m in smtp.messages if recipient in m.rcpt_tos]

    wait_for(lambda: all(received(r) for r in enrollments) or None, timeout=60, what="first steps")
    stopper = "in0@example.org"
    [first] = received(stopper)
    link = _link(first)
    with httpx.Client(timeout=10) as http:
        answer = http.post(
            link,
            content=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200, answer.text

    def stopped() -> tuple[Any, ...] | None:
        assert worker.alive(), worker.log_tail()
        state = enrollment_state(settings, enrollments[stopper])
        return state if state is not None and state[0] == "stopped" else None

    assert wait_for(stopped, what="enrollment stopped")[:2] == ("stopped", "unsubscribe")
    others = [r for r in enrollments if r != stopper]
    wait_for(
        lambda: all(len(received(r)) == 2 for r in others) or None,
        timeout=60,
        what="second steps of the others",
    )
    assert len(received(stopper)) == 1, "the unsubscribed enrollment got its second step"

    for recipient, enrollment_id in enrollments.items():
        for message in received(recipient):
            if recipient.startswith("in"):
                url = _link(message)
                assert url.startswith(f"{web}/u/")
                assert message.header("List-Unsubscribe-Post") == ONE_CLICK
                token = url.rsplit("/", 1)[1]
                assert read_token(KEY.encode(), token) == Unsubscribe(key, enrollment_id, recipient)
                body = message.message.get_body(("plain",))
                assert body is not None and url in body.get_content()
            else:
                assert message.header("List-Unsubscribe") is None, message.headers
                assert message.header("List-Unsubscribe-Post") is None, message.headers
    assert worker.alive(), worker.log_tail()
