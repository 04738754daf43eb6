"""One-click unsubscribe end to end (RFC 8058, SPEC §13): ``streams/web.py`` on a real uvicorn
server, the real worker, PostgreSQL and the SMTP sink.

A POST with a valid token suppresses the recipient and stops the enrollment: its second
step never goes out. A forged token, an altered one and one signed with another key are
answered 400 and put nothing on ``health-signals``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn

from dripdrop_core.unsubscribe import ONE_CLICK, make_token
from streams.api import DripDrop
from streams.settings import Settings
from streams.web import create_app
from tests.integration.pipeline_support import (
    TopicReader,
    build_outbound,
    enrollment_state,
    rows,
    scaled,
    start_worker,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink, free_port
from tests.integration.support import WorkerProcess, wait_for

KEY = "test-unsubscribe-hmac-key-0123456789"
ENV = "DRIPDROP_TEST_UNSUBSCRIBE_KEY"


@pytest.fixture
def web(settings: Settings) -> Iterator[str]:
    os.environ[ENV] = KEY
    port = free_port()
    app = create_app(settings.model_copy(update={"unsubscribe_key": f"env:{ENV}"}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or None, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        os.environ.pop(ENV, None)


def test_one_click_post_suppresses_and_stops_forged_tokens_do_nothing(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    web: str,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    # Two steps, the second two simulated days (8 s real) after the first.
    world = build_outbound(client, smtp, tenant_key=key, steps=2, delays=(0, 2 * 86400))
    worker_settings, _ = scaled(settings, day_seconds=4.0, epoch=datetime(2031, 7, 1, tzinfo=UTC))
    signals = TopicReader(settings, "health-signals")
    worker = start_worker(worker_factory, worker_settings)
    recipient = "reader@example.org"
    enrollment = str(
        client.enroll(
            tenant_key=key,
            sequence_id=world.sequence.id,
            subscriber_id="reader",
            recipient=recipient,
            data={"first_name": "R"},
        ).enrollment_id
    )
    wait_for(lambda: any(recipient in m.rcpt_tos for m in smtp.messages) or None, what="step 1")

    token = make_token(KEY.encode(), key, enrollment, recipient)
    forged = [
        make_token(b"another-key", key, enrollment, recipient),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        make_token(KEY.encode(), key, enrollment, "someone-else@example.org").split(".")[0]
        + "."
        + token.split(".")[1],
        "not-a-token",
    ]
    with httpx.Client(base_url=web, timeout=10) as http:
        for bad in forged:
            answer = http.post(f"/u/{bad}", content=ONE_CLICK)
            assert answer.status_code == 400, (bad, answer.text)
            assert http.get(f"/u/{bad}").status_code == 400
        page = http.get(f"/u/{token}")
        assert page.status_code == 200 and 'method="post"' in page.text
        assert not [r for r in signals.poll(1.0) if r["kind"] == "unsubscribe"]
        started = time.monotonic()
        answer = http.post(
            f"/u/{token}",
            content=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text

    def stopped() -> tuple[object, ...] | None:
        assert worker.alive(), worker.log_tail()
        state = enrollment_state(settings, enrollment)
        return state if state is not None and state[0] == "stopped" else None

    assert wait_for(stopped, what="enrollment stopped")[:2] == ("stopped", "unsubscribe")
    print(f"one-click POST -> enrollment stopped row: {time.monotonic() - started:.3f} s")
    assert rows(
        settings,
        "SELECT recipient_normalized, reason, source FROM dripdrop.suppressions"
        " WHERE tenant_key = %s",
        key,
    ) == [(recipient, "unsubscribe", "one_click")]
    [signal] = [r for r in signals.poll(0.5) if r["kind"] == "unsubscribe"]
    assert (signal["tenant_key"], signal["enrollment_id"], signal["recipient"]) == (
        key,
        enrollment,
        recipient,
    )
    # The second step was due 8 s after the first: past it, still one message.
    time.sleep(10)
    assert sum(recipient in m.rcpt_tos for m in smtp.messages) == 1
    assert worker.alive(), worker.log_tail()
