"""Re-enrollment after an enrollment finished (SPEC §7, §13): ``allow_reenrollment`` is read.

API → Kafka → worker → PostgreSQL → SMTP. In a sequence that allows it, enrolling a
subscriber whose enrollment completed starts a new one (a new enrollment id from the API, a
new execution chain: its own step execution and Message-ID, mail sent again); the processor
does not answer it as a duplicate. In a sequence that does not, the same call names the
finished enrollment and the processor answers ``enrollment.duplicate``; nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import (
    TopicReader,
    enrollment_state,
    rows,
    start_worker,
    telemetry_named,
    tenant,
)
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, enrolled_id, wait_for


def _sequence(dd: DripDrop, key: str, adapter_id: str, *, name: str, allowed: bool) -> Any:
    sequence = dd.create_sequence(tenant_key=key, key=name, allow_reenrollment=allowed)
    version = dd.create_sequence_version(sequence.id, tenant_key=key, version=1)
    dd.create_step(
        version.id,
        tenant_key=key,
        key="hello",
        position=0,
        subject_template="Hello",
        body_template="Hi",
        adapter_id=adapter_id,
    )
    return sequence


def test_reenrollment_after_completion_is_a_new_chain_only_when_the_sequence_allows_it(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    adapter = client.create_channel_adapter(
        tenant_key=key,
        name="news",
        provider="smtp",
        from_address="news@news.example",
        health_state="active",
        config=smtp.adapter_config(),
    )
    allowed = _sequence(client, key, adapter.id, name="allowed", allowed=True)
    refused = _sequence(client, key, adapter.id, name="refused", allowed=False)
    telemetry = TopicReader(settings, "telemetry")
    worker = start_worker(worker_factory)

    def enroll(sequence: Any, recipient: str) -> str:
        accepted = client.enroll(
            tenant_key=key, sequence_id=sequence.id, subscriber_id=recipient, recipient=recipient
        )
        return enrolled_id(accepted)

    def completed(enrollment_id: str) -> bool:
        assert worker.alive(), worker.log_tail()
        state = enrollment_state(settings, enrollment_id)
        return state is not None and state[0] == "completed"

    def received(recipient: str) -> int:
        return sum(recipient in m.rcpt_tos for m in smtp.messages)

    again, once = "again@example.org", "once@example.org"
    first = enroll(allowed, again)
    kept = enroll(refused, once)
    wait_for(lambda: completed(first) and completed(kept), what="first enrollments completed")

    second = enroll(allowed, again)
    assert second != first
    duplicate = enroll(refused, once)
    assert duplicate == kept

    wait_for(lambda: completed(second), what="the re-enrollment completed")
    wait_for(lambda: received(again) == 2 or None, what="the re-enrollment's mail")
    telemetry.wait(
        telemetry_named("enrollment.duplicate", enrollment_id=kept), what="refused as duplicate"
    )
    assert not [
        r
        for r in telemetry.poll(0.5)
        if telemetry_named("enrollment.duplicate", enrollment_id=second)(r)
    ]
    sends = rows(
        settings,
        "SELECT enrollment_id::text, out_message_id FROM dripdrop.step_executions"
        " WHERE tenant_key = %s AND status = 'sent' ORDER BY inserted_at",
        key,
    )
    by_enrollment = {enrollment_id: message_id for enrollment_id, message_id in sends}
    assert set(by_enrollment) == {first, second, kept}
    assert by_enrollment[first] != by_enrollment[second]  # a new chain, a new Message-ID
    assert rows(
        settings,
        "SELECT id::text, state FROM dripdrop.enrollments WHERE tenant_key = %s"
        " AND subscriber_id = %s ORDER BY enrolled_at",
        key,
        again,
    ) == [(first, "completed"), (second, "completed")]
    assert received(once) == 1
    # The second one has finished too: enrolling again starts a third chain.
    assert enroll(allowed, again) not in {first, second}
    telemetry.close()
    assert worker.alive(), worker.log_tail()
