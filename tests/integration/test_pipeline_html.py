"""HTML steps on real sends (SPEC §7): API → Kafka → worker → PostgreSQL → SMTP (aiosmtpd).

A step with an HTML template goes out as multipart/alternative, the plain text first (the
part a client shows last, RFC 2046 §5.1.4) and the HTML second; enrollment data fills both,
HTML-escaped in the HTML part only. A step without one stays a single text/plain part. A
template that does not compile is refused when the step is created, not at its first send.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from streams.api import DripDrop, InvalidInputError
from streams.settings import Settings
from tests.integration.pipeline_support import (
    create_mailbox,
    enrollment_state,
    scaled,
    start_worker,
    tenant,
)
from tests.integration.smtp_sink import ReceivedMessage, SmtpSink
from tests.integration.support import WorkerProcess, enrolled_id, wait_for

NAME = "Ann <b>& Co</b>"


def test_html_step_goes_out_as_multipart_alternative_with_escaped_data(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    mailbox = create_mailbox(client, smtp, tenant_key=key, name="mbox")
    sequence = client.create_sequence(tenant_key=key, key="html")
    version = client.create_sequence_version(
        sequence.id, tenant_key=key, version=1, mode="lifecycle"
    )
    for position, template in enumerate(("<p>Hello {{ first_name }}</p>", None)):
        client.create_step(
            version.id,
            tenant_key=key,
            key=f"s{position}",
            position=position,
            adapter_id=mailbox.id,
            subject_template=f"Note {position}",
            body_template="Hello {{ first_name }}",
            html_template=template,
            delay_seconds=0 if position == 0 else 86400,
        )
    with pytest.raises(InvalidInputError, match="html_template: .*line 1"):
        client.create_step(
            version.id,
            tenant_key=key,
            key="broken",
            position=2,
            adapter_id=mailbox.id,
            html_template="<p>{{ first_name </p>",
        )

    worker_settings, _ = scaled(settings, day_seconds=4.0, epoch=datetime(2031, 7, 1, tzinfo=UTC))
    worker = start_worker(worker_factory, worker_settings)
    recipient = "ann@example.org"
    enrollment = enrolled_id(
        client.enroll(
            tenant_key=key,
            sequence_id=sequence.id,
            subscriber_id=recipient,
            recipient=recipient,
            data={"first_name": NAME},
        )
    )

    def received() -> list[ReceivedMessage] | None:
        assert worker.alive(), worker.log_tail()
        mail = [m for m in smtp.messages if recipient in m.rcpt_tos]
        return mail if len(mail) == 2 else None

    first, second = sorted(wait_for(received, timeout=60, what="both steps"), key=_subject)
    assert first.message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in first.message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    plain, html = first.message.get_body(("plain",)), first.message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == f"Hello {NAME}"
    assert html is not None
    assert html.get_content().strip() == "<p>Hello Ann &lt;b&gt;&amp; Co&lt;/b&gt;</p>"
    assert second.message.get_content_type() == "text/plain"
    assert second.message.get_content().strip() == f"Hello {NAME}"
    wait_for(
        lambda: (enrollment_state(settings, enrollment) or ("",))[0] == "completed" or None,
        what="the enrollment completed",
    )


def _subject(message: ReceivedMessage) -> str:
    return str(message.header("Subject"))
