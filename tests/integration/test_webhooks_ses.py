"""ESP webhooks end to end (SPEC §8, issue 13 item 3): ``streams/webhooks/`` on a real uvicorn
server, Kafka, PostgreSQL and a worker; the send goes through SES (moto's server mode), so
the ledger holds SES's MessageId.

SNS is played by ``SnsSigner`` (its own key and self-signed certificate, served from local
HTTP; the receiver's SNS URL pattern is set to that server). A signed SubscriptionConfirmation
is confirmed by a GET of its SubscribeURL. A forged notification (another key, or the signed
one altered) is answered 401 and leaves the topic's high watermark where it was. The signed
SES bounce for the step's provider message id suppresses the recipient and stops the
enrollment (``bounced``, terminal: its second step, due two days later, never goes out).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition

from streams.api import DripDrop
from streams.settings import Settings
from streams.webhooks import WebhookOptions, create_app
from tests.integration.pipeline_support import (
    TopicReader,
    enrollment_state,
    rows,
    start_worker,
    tenant,
)
from tests.integration.smtp_sink import free_port
from tests.integration.support import WorkerProcess, wait_for
from tests.providers.conftest import MotoSes
from tests.webhook_fixtures import TOPIC_ARN, CertServer, SnsSigner, ses_bounce

RECIPIENT = "bounces-here@example.org"


@pytest.fixture
def signer() -> SnsSigner:
    return SnsSigner()


@pytest.fixture
def cert_server(signer: SnsSigner) -> Iterator[CertServer]:
    """Serves ``signer``'s certificate, which ``signer`` now names as its SigningCertURL."""
    server = CertServer(signer.pem)
    signer.cert_url = f"{server.url}/cert.pem"
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def receiver(settings: Settings, cert_server: CertServer) -> Iterator[str]:
    options = WebhookOptions(sns_url_pattern=rf"^{re.escape(cert_server.url)}/")
    port = free_port()
    app = create_app(settings, options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or None, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def moto() -> Iterator[MotoSes]:
    server = MotoSes()
    try:
        server.verify_domain("example.com")
        yield server
    finally:
        server.stop()


def high_watermarks(settings: Settings, topic: str) -> list[int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"hw-{uuid.uuid4()}"}
    )
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(settings.topic(topic), p), timeout=10)[1]
            for p in range(settings.partitions)
        ]
    finally:
        consumer.close()


def test_signed_ses_bounce_stops_the_enrollment_forgeries_produce_nothing(
    settings: Settings,
    client: DripDrop,
    moto: MotoSes,
    signer: SnsSigner,
    cert_server: CertServer,
    receiver: str,
    tmp_path: Path,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    secret_file = tmp_path / "ses-secret"
    secret_file.write_text(MotoSes.secret_access_key + "\n")
    adapter = client.create_channel_adapter(
        tenant_key=key,
        name="ses-box",
        provider="ses",
        from_address="jane@example.com",
        health_state="active",
        config={
            "region": MotoSes.region,
            "access_key_id": MotoSes.access_key_id,
            "secret_access_key": {"secret": f"file:{secret_file}"},
            "endpoint_url": moto.url,
            "webhook_topic_arn": TOPIC_ARN,
        },
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
            subject_template="Welcome",
            body_template="Hi {{ first_name }}",
            delay_seconds=0 if position == 0 else 2 * 86400,
        )
    worker = start_worker(worker_factory)
    enrollment = str(
        client.enroll(
            tenant_key=key,
            sequence_id=sequence.id,
            subscriber_id="u-1",
            recipient=RECIPIENT,
            data={"first_name": "Lin"},
        ).enrollment_id
    )

    def first_sent() -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = rows(
            settings,
            "SELECT provider_message_id FROM dripdrop.step_executions"
            " WHERE enrollment_id = %s AND status = 'sent'",
            enrollment,
        )
        return found or None

    [(ses_message_id,)] = wait_for(first_sent, what="step 1 sent through SES")
    assert ses_message_id
    url = f"{receiver}/webhooks/ses/{key}/{adapter.id}"

    with httpx.Client(timeout=30) as http:
        # SNS subscribes the endpoint: confirmed by a GET of SubscribeURL once verified.
        confirm = f"{cert_server.url}/confirm?Action=ConfirmSubscription&Token=t1"
        forged_confirmation = {**signer.confirmation(confirm), "SubscribeURL": confirm + "x"}
        assert http.post(url, content=_json(forged_confirmation)).status_code == 401
        assert cert_server.confirmations == []
        assert http.post(url, content=_json(signer.confirmation(confirm))).status_code == 200
        assert cert_server.confirmations == [confirm.removeprefix(cert_server.url)]

        before = high_watermarks(settings, "health-signals")
        bounce = ses_bounce(ses_message_id, RECIPIENT, feedback_id=f"fb-{uuid.uuid4()}")
        signed = signer.notification(bounce, version="1")
        impostor = SnsSigner(signer.cert_url).notification(bounce)
        altered = {**signed, "Message": signed["Message"].replace(RECIPIENT, "x@example.org")}
        unsigned = {k: v for k, v in signed.items() if k != "Signature"}
        for forged in (impostor, altered, unsigned):
            answer = http.post(url, content=_json(forged))
            assert answer.status_code == 401, answer.text
        assert high_watermarks(settings, "health-signals") == before
        assert enrollment_state(settings, enrollment)[:1] == ("active",)  # type: ignore[index]

        answer = http.post(url, content=_json(signed))
        assert answer.status_code == 200 and answer.json() == {"produced": 1}, answer.text
    assert sum(high_watermarks(settings, "health-signals")) == sum(before) + 1
    assert cert_server.cert_gets == 1  # fetched once, then cached

    def stopped() -> tuple[Any, ...] | None:
        assert worker.alive(), worker.log_tail()
        state = enrollment_state(settings, enrollment)
        return state if state is not None and state[0] == "bounced" else None

    assert wait_for(stopped, what="enrollment bounced")[:2] == ("bounced", "bounce")

    def suppressed() -> list[tuple[Any, ...]] | None:
        found = rows(
            settings,
            "SELECT recipient_normalized, reason FROM dripdrop.suppressions WHERE tenant_key = %s",
            key,
        )
        return found or None

    assert wait_for(suppressed, what="recipient suppressed") == [(RECIPIENT, "bounce")]
    statuses = rows(
        settings,
        "SELECT status FROM dripdrop.step_executions WHERE enrollment_id = %s ORDER BY inserted_at",
        enrollment,
    )
    assert "sent" in {s for (s,) in statuses} and len(moto.sent_raw()) == 1
    assert statuses == [("sent",)]  # bounced is terminal: step 2 never gets an execution
    [record] = TopicReader(settings, "health-signals").wait(lambda r: True)
    assert {
        k: record[k]
        for k in ("event_id", "tenant_key", "kind", "bounce_type", "adapter_id", "recipient")
    } == {
        "event_id": f"ses:{bounce['bounce']['feedbackId']}",
        "tenant_key": key,
        "kind": "bounce",
        "bounce_type": "hard",
        "adapter_id": adapter.id,
        "recipient": RECIPIENT,
    }
    assert record["provider_message_id"] == ses_message_id and record["source"] == "ses"
    assert worker.alive(), worker.log_tail()


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
